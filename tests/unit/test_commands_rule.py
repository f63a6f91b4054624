"""The Commands rule runner, driven with real bash in temp directories."""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path

from providers.commands_rule import LOG_NAME, run_commands_rule


def run(
    tmp_path: Path,
    commands: list[str],
    *,
    inputs: dict[str, dict[str, str]] | None = None,
    env: dict[str, str] | None = None,
    deadline: float | None = None,
    cancelled: threading.Event | None = None,
) -> tuple[bool, str, str]:
    dirs: dict[str, Path] = {}
    for name, files in (inputs or {}).items():
        d = tmp_path / "in" / name
        d.mkdir(parents=True)
        for rel, text in files.items():
            (d / rel).write_text(text)
        dirs[name] = d
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    mirror = io.StringIO()
    base = {"PATH": os.environ["PATH"], **(env or {})}
    ok, summary = run_commands_rule(
        commands, work, dirs, base, mirror, deadline, cancelled or threading.Event()
    )
    assert (work / LOG_NAME).read_text() == mirror.getvalue()
    return ok, summary, mirror.getvalue()


def test_state_carries_across_commands(tmp_path: Path) -> None:
    ok, summary, log = run(
        tmp_path,
        ["mkdir sub && cd sub", "GREETING=hello", "echo $GREETING from $(basename $PWD)"],
    )
    assert (ok, summary) == (True, "3 commands succeeded")
    assert "hello from sub" in log
    assert "Running command GREETING=hello" in log


def test_first_failing_command_fails_the_rule(tmp_path: Path) -> None:
    marker = tmp_path / "never"
    ok, summary, log = run(tmp_path, ["true", "exit 3", f"touch {marker}"])
    assert (ok, summary) == (False, "command `exit 3` failed with exit code 3")
    assert not marker.exists()
    assert "Command did not exit successfully exit 3 exit status 3" in log
    assert log.rstrip().endswith(f"Commands rule finished: {summary}")


def test_inputs_are_copied_and_located_like_codebuild(tmp_path: Path) -> None:
    ok, summary, log = run(
        tmp_path,
        [
            "cat app.txt",
            'cat "$CODEBUILD_SRC_DIR_Config/settings.txt"',
            "echo changed > app.txt",
            'test "$PWD" = "$CODEBUILD_SRC_DIR"',
        ],
        inputs={"Source": {"app.txt": "v1"}, "Config": {"settings.txt": "debug=false"}},
    )
    assert ok, summary
    assert "v1" in log and "debug=false" in log
    assert (tmp_path / "in" / "Source" / "app.txt").read_text() == "v1"  # the worker's copy


def test_no_inputs_start_in_an_empty_directory(tmp_path: Path) -> None:
    ok, summary, log = run(
        tmp_path, ['test -z "$(ls -A)"', "echo $MY_SETTING"], env={"MY_SETTING": "on"}
    )
    assert ok, summary
    assert "\non\n" in log


def test_deadline_stops_a_long_command(tmp_path: Path) -> None:
    started = time.monotonic()
    ok, summary, _ = run(tmp_path, ["sleep 30"], deadline=time.time() + 0.5)
    assert (ok, summary) == (False, "command `sleep 30` timed out")
    assert time.monotonic() - started < 10


def test_cancellation_stops_the_rule(tmp_path: Path) -> None:
    cancelled = threading.Event()
    threading.Timer(0.3, cancelled.set).start()
    ok, summary, _ = run(tmp_path, ["echo start", "sleep 30", "echo never"], cancelled=cancelled)
    assert (ok, summary) == (False, "command `sleep 30` cancelled")


def test_background_processes_do_not_outlive_the_rule(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    ok, _, _ = run(tmp_path, [f"sleep 60 & echo $! > {pid_file}"])
    assert ok
    pid = int(pid_file.read_text())
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("background sleep survived the rule")


def test_a_retry_in_the_same_workdir_starts_clean(tmp_path: Path) -> None:
    assert run(tmp_path, ["touch leftover"])[0]
    ok, summary, _ = run(tmp_path, ["test ! -e leftover"])
    assert ok, summary


def test_long_commands_are_shortened_in_the_summary(tmp_path: Path) -> None:
    command = "false " + "x" * 400
    ok, summary, _ = run(tmp_path, [command])
    assert not ok
    assert summary.startswith("command `false xxx") and "...` failed with exit code 1" in summary
    assert len(summary) < 260


def test_no_commands_fail(tmp_path: Path) -> None:
    assert run(tmp_path, [])[:2] == (False, "a Commands rule needs at least one command")


def test_missing_input_directory_fails_cleanly(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    ok, summary = run_commands_rule(
        ["true"], work, {"Gone": tmp_path / "gone"}, {}, io.StringIO(), None, threading.Event()
    )
    assert not ok
    assert summary.startswith("could not prepare input artifacts:")
