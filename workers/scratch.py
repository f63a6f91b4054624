"""Scratch directories for attempts, removed in the background.

Every attempt works in a fresh temporary directory (inputs, outputs, the provider's work, the
zips). Removing a directory tree is slow on some filesystems (a few milliseconds per
directory on the ext4 these machines run), which a short action would spend waiting. So a
directory that is done with is renamed into this process's trash (same filesystem, one cheap
rename) and a background thread removes it. Trash that a dead process left behind is removed
by the next process that starts here.
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

log = logging.getLogger("conveyor.scratch")

TRASH_PREFIX = ".conveyor-trash-"


class ScratchSpace:
    def __init__(self, root: str | None = None) -> None:
        self.root = Path(root or tempfile.gettempdir())
        self._queue: queue.SimpleQueue[Path] = queue.SimpleQueue()
        self._pid = -1
        self._lock = threading.Lock()

    @contextmanager
    def directory(self, prefix: str = "conveyor-") -> Iterator[Path]:
        """A new empty directory, removed (in the background) when the block ends."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=self.root))
        try:
            yield path
        finally:
            self.discard(path)

    def discard(self, path: Path) -> None:
        trash = self._trash()
        try:
            moved = path.rename(trash / uuid.uuid4().hex)
        except OSError:
            shutil.rmtree(path, ignore_errors=True)  # not movable: remove it here and now
            return
        self._queue.put(moved)

    def _trash(self) -> Path:
        """This process's trash, and its cleaner thread (made again after a fork)."""
        with self._lock:
            trash = self.root / f"{TRASH_PREFIX}{os.getpid()}"
            if self._pid != os.getpid():
                self._pid = os.getpid()
                trash.mkdir(parents=True, exist_ok=True)
                for left in self.root.glob(f"{TRASH_PREFIX}*"):
                    if left != trash and not _alive(left.name.removeprefix(TRASH_PREFIX)):
                        self._queue.put(left)  # a dead process's trash
                threading.Thread(target=self._clean, name="conveyor-scratch", daemon=True).start()
            return trash

    def _clean(self) -> None:
        while True:
            path = self._queue.get()
            try:
                shutil.rmtree(path, ignore_errors=True)
            except Exception:  # never let the cleaner die
                log.warning("could not remove %s", path, exc_info=True)


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True
