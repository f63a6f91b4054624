"""The build log keeps its head and tail within the cap, and says what it left out."""

from __future__ import annotations

import io
import os
from pathlib import Path

from providers.build_log import BuildLog

CAP = 64 * 1024


def _write(log: BuildLog, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(log.fd, view[: 256 * 1024]) :]
        log.pump()


def test_a_flood_keeps_head_notice_and_tail_within_the_cap(tmp_path: Path) -> None:
    mirror = io.StringIO()
    log = BuildLog(tmp_path / "build.log", mirror, CAP)
    log.line("start")
    payload = b"head-line\n" + b"x" * (5 * 1024 * 1024) + b"\nthe-last-line\n"
    _write(log, payload)
    log.line("finished")
    log.close()
    data = (tmp_path / "build.log").read_bytes()
    notice_line = next(line for line in data.splitlines() if b"Log truncated" in line)
    kept = len(data) - len(notice_line) - 2  # the notice sits on a line of its own
    assert kept <= CAP
    assert data.startswith(b"[Container]") and b"head-line" in data[: CAP // 4]
    assert data.rstrip().endswith(b"finished") and b"the-last-line" in data[-200:]
    assert data.index(b"Log truncated") < data.index(b"the-last-line")
    # "[Container] <23-character stamp> <text>\n" for our two lines
    fed = (37 + len("start")) + len(payload) + (37 + len("finished"))
    assert int(notice_line.split(b"truncated: ")[1].split()[0]) == fed - kept
    assert mirror.getvalue().encode() == data


def test_a_log_under_the_cap_is_kept_whole_without_a_notice(tmp_path: Path) -> None:
    log = BuildLog(tmp_path / "build.log", io.StringIO(), CAP)
    _write(log, b"a" * 1000 + "é\n".encode())
    log.line("done")
    log.close()
    data = (tmp_path / "build.log").read_bytes()
    assert b"truncated" not in data
    assert data.startswith(b"a" * 1000 + "é\n".encode()) and data.endswith(b"done\n")


def test_output_of_a_background_writer_is_drained_between_commands(tmp_path: Path) -> None:
    """Nobody calls pump while the worker does other work: the pipe must not fill up."""
    log = BuildLog(tmp_path / "build.log", io.StringIO(), 16 * 1024 * 1024)
    os.set_blocking(log.fd, False)
    written = 0
    chunk = b"y" * 65536
    for _ in range(64):  # 4 MiB, four times the pipe: only a reader keeps this going
        while True:
            try:
                written += os.write(log.fd, chunk)
                break
            except BlockingIOError:
                os.sched_yield()
    log.close()
    assert (tmp_path / "build.log").stat().st_size == written
