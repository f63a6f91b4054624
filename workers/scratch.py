"""Scratch directories for attempts, removed in the background, and after a crash.

Every attempt works in a fresh temporary directory (inputs, outputs, the provider's work, the
zips). Removing a directory tree is slow on some filesystems (a few milliseconds per
directory on the ext4 these machines run), which a short action would spend waiting. So a
directory that is done with is renamed into this process's trash (same filesystem, one cheap
rename) and a background thread removes it.

Each process keeps its attempts in a directory of its own, named after its pid and the
time the kernel started it (``.conveyor-<pid>-<start>``), so several worker processes can
share one scratch root and still know whose leftovers are whose: a process that starts here
removes the directories of processes that are gone (a worker killed mid-attempt never
cleaned up), and never those of a live one, even one that reuses a dead worker's pid.

That directory is execute-only for others (0711): a build running as another user can
reach its own attempt's directories, but cannot list which other attempts exist.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from providers.sandbox import process_alive, start_time

log = logging.getLogger("conveyor.scratch")

OWNER_PREFIX = ".conveyor-"
LEGACY_TRASH_PREFIX = ".conveyor-trash-"
TRASH = ".trash"


class ScratchSpace:
    def __init__(self, root: str | None = None) -> None:
        self.root = Path(root or tempfile.gettempdir())
        self._queue: queue.SimpleQueue[Path] = queue.SimpleQueue()
        self._pid = -1
        self._own_path = self.root
        self._lock = threading.Lock()

    @contextmanager
    def directory(self, prefix: str = "conveyor-") -> Iterator[Path]:
        """A new empty directory (0700), removed (in the background) when the block ends."""
        own, fresh = self._own()
        if fresh:  # the first attempt of this process: clear what dead ones left first
            self.sweep()
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=own))
        try:
            yield path
        finally:
            self.discard(path)

    def discard(self, path: Path) -> None:
        trash = self._own()[0] / TRASH
        try:
            moved = path.rename(trash / uuid.uuid4().hex)
        except OSError:
            shutil.rmtree(path, ignore_errors=True)  # not movable: remove it here and now
            return
        self._queue.put(moved)

    def sweep(self) -> list[Path]:
        """Claim the directories of processes that are gone, for removal; returns them.

        Each is first renamed into this process's trash: one atomic step, so two processes
        starting at once never both work on the same leftovers.
        """
        own = self._own()[0]
        claimed: list[Path] = []
        for left in self.root.glob(f"{OWNER_PREFIX}*"):
            if left == own or _owner_alive(left.name):
                continue
            try:
                moved = left.rename(own / TRASH / uuid.uuid4().hex)
            except OSError:
                continue  # another process claimed it first, or it is not ours to move
            claimed.append(left)
            self._queue.put(moved)
        if claimed:
            log.info("removing %d scratch directories of processes that are gone", len(claimed))
        return claimed

    def _own(self) -> tuple[Path, bool]:
        """This process's directory and trash, and its cleaner thread (again after a fork)."""
        with self._lock:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                own = self.root / f"{OWNER_PREFIX}{self._pid}-{start_time(self._pid)}"
                self._own_path = own
                self.root.mkdir(parents=True, exist_ok=True)
                own.mkdir(exist_ok=True)
                own.chmod(0o711)
                (own / TRASH).mkdir(mode=0o700, exist_ok=True)
                threading.Thread(target=self._clean, name="conveyor-scratch", daemon=True).start()
                fresh = True
            else:
                own, fresh = self._own_path, False
        return own, fresh

    def _clean(self) -> None:
        while True:
            path = self._queue.get()
            try:
                shutil.rmtree(path, ignore_errors=True)
            except Exception:  # never let the cleaner die
                log.warning("could not remove %s", path, exc_info=True)


def _owner_alive(name: str) -> bool:
    """Whether the process a scratch directory name belongs to is still running."""
    if name.startswith(LEGACY_TRASH_PREFIX):
        pid_text, started = name.removeprefix(LEGACY_TRASH_PREFIX), None
    else:
        pid_text, _, started = name.removeprefix(OWNER_PREFIX).partition("-")
    if not pid_text.isdigit():
        return True  # not a name we made: leave it alone
    return process_alive(int(pid_text), started)
