"""A build's log, capped: the head and the tail of what the build printed, never all of it.

A build that prints 500 MB must not store 500 MB, nor write it to the worker's disk on the
way. Build commands write into a pipe; a thread drains it for as long as the log is open
(so a background process never blocks on a full pipe) and keeps the first quarter of the
cap on disk as it comes and the last three quarters in memory, written after a notice of
what was left out when the log closes. The tail is what says why a build failed.
"""

from __future__ import annotations

import codecs
import collections
import contextlib
import fcntl
import os
import select
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from providers.sandbox import DEFAULT_LOG_MAX_BYTES

CHUNK = 1024 * 1024
PIPE_SIZE = 1024 * 1024  # fewer, larger reads when a build floods its output
CLOSE_WAIT_SECONDS = 2.0


def stamp_line(text: str, source: str = "Container") -> bytes:
    stamp = datetime.now(UTC).strftime("%Y/%m/%d %H:%M:%S.%f")[:-3]
    return f"[{source}] {stamp} {text}\n".encode()


class _Capped:
    """The head (written through) and the tail (held) of a byte stream."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.head_left = max_bytes // 4
        self.tail_max = max_bytes - self.head_left
        self.tail: collections.deque[bytes] = collections.deque()
        self.tail_len = 0
        self.total = 0

    def feed(self, data: bytes) -> bytes:
        """Take ``data``; return the part to write through now (the head)."""
        self.total += len(data)
        through = b""
        if self.head_left > 0:
            through, data = data[: self.head_left], data[self.head_left :]
            self.head_left -= len(through)
        if data:
            self.tail.append(data)
            self.tail_len += len(data)
            while self.tail and self.tail_len - len(self.tail[0]) >= self.tail_max:
                self.tail_len -= len(self.tail.popleft())
        return through

    def finish(self) -> tuple[int, bytes]:
        """(bytes left out, the tail to write after the notice)."""
        tail = b"".join(self.tail)[-self.tail_max :] if self.tail_max else b""
        self.tail.clear()
        written = (self.max_bytes // 4 - self.head_left) + len(tail)
        return self.total - written, tail


class BuildLog:
    """The build log file, mirrored to the job's log as it grows, at most ``max_bytes``
    (plus one notice line) however much the build prints."""

    def __init__(self, path: Path, mirror: TextIO, max_bytes: int = DEFAULT_LOG_MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        # Appended to, as before (a provider run again after a transient failure keeps the
        # first run's lines); never through a link.
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
        self._file = os.open(path, flags, 0o644)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._mirror = mirror
        self._cap = _Capped(max_bytes)
        self._lock = threading.Lock()
        self._read, self._write = os.pipe2(os.O_CLOEXEC)
        with contextlib.suppress(OSError):
            fcntl.fcntl(self._write, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        os.set_blocking(self._read, False)
        self._closing = threading.Event()
        self._drainer = threading.Thread(target=self._drain, name="conveyor-build-log", daemon=True)
        self._drainer.start()

    @property
    def fd(self) -> int:
        """Where build commands write (stdout and stderr): the pipe, not the file."""
        return self._write

    def line(self, text: str) -> None:
        """One of our own lines, after everything the build printed before it."""
        with self._lock:
            self._take_available()
            self._put(stamp_line(text))

    def pump(self) -> None:
        """Take in whatever the build printed so far (a command just ended)."""
        with self._lock:
            self._take_available()

    def close(self) -> None:
        """Finish the log: the notice and the tail go in once every writer is gone (the
        build's processes were killed before), or after a short wait for stragglers."""
        os.close(self._write)
        self._closing.set()
        self._drainer.join(CLOSE_WAIT_SECONDS + 1.0)
        with self._lock:
            self._take_available()
            os.close(self._read)
            dropped, tail = self._cap.finish()
            if dropped > 0:
                notice = (
                    f"Log truncated: {dropped} bytes left out here; the log keeps the first "
                    f"and the last bytes, at most {self.max_bytes} in all "
                    "(CONVEYOR_BUILD_LOG_MAX_BYTES)"
                )
                self._emit(b"\n" + stamp_line(notice, "Conveyor"))
            self._emit(tail)
            self._mirror.write(self._decoder.decode(b"", final=True))
            self._mirror.flush()
            os.close(self._file)

    # -- under the lock ------------------------------------------------------------------

    def _drain(self) -> None:
        eof = False
        deadline: float | None = None
        while not eof:
            if self._closing.is_set() and deadline is None:
                deadline = time.monotonic() + CLOSE_WAIT_SECONDS
            if deadline is not None and time.monotonic() >= deadline:
                return  # a writer we could not kill holds the pipe open: stop reading
            ready, _, _ = select.select([self._read], [], [], 0.2)
            if ready:
                with self._lock:
                    eof = self._take_available()

    def _take_available(self) -> bool:
        """Read what the pipe holds now (bounded per call); True at end of file."""
        for _ in range(64):
            try:
                data = os.read(self._read, CHUNK)
            except BlockingIOError:
                return False
            except OSError:  # closed under us by close()
                return True
            if not data:
                return True
            self._put(data)
        return False

    def _put(self, data: bytes) -> None:
        self._emit(self._cap.feed(data))

    def _emit(self, data: bytes) -> None:
        if not data:
            return
        view = memoryview(data)
        while view:
            view = view[os.write(self._file, view) :]
        self._mirror.write(self._decoder.decode(data))
        self._mirror.flush()
