"""Buildspec ``cache.paths`` kept per project between builds on one worker (CodeBuild's
local cache, roughly): restored into the source directory before ``install``, saved from it
after the build.

Layout under the cache root, per project (a directory named after a hash of ProjectName)::

    entry-<uuid>/        the cached files, relative to the source directory
    entry-<uuid>.lock    readers hold a shared flock on it while they copy
    current -> entry-<uuid>

A save copies into a temp directory, renames it to a new entry and swaps ``current`` with
one atomic rename, so a concurrent build reads either the old entry or the new one, never a
half-written one. Old entries are removed only when no reader holds their lock. The cache is
an optimisation: a failure to restore or save is logged and never fails the build.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from providers.buildspec import ArtifactPathError, select_files

CURRENT = "current"


def project_dir(root: Path, project: str) -> Path:
    """One directory per ProjectName: readable, and a hash so any name is a safe path."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", project)[:40]
    digest = hashlib.sha256(project.encode()).hexdigest()[:16]
    return root / f"{safe}-{digest}"


class BuildCache:
    def __init__(self, root: Path, project: str, max_bytes: int, note: Callable[[str], None]):
        self.dir = project_dir(root, project)
        self.max_bytes = max_bytes
        self.note = note

    def restore(self, src: Path) -> int:
        """Copy the project's cached files into ``src``; returns how many (0: a miss)."""
        try:
            target = os.readlink(self.dir / CURRENT)
        except OSError:
            self.note("Cache: nothing cached for this project yet")
            return 0
        entry = self.dir / target
        try:
            with _locked(entry, fcntl.LOCK_SH) as ok:
                if not ok or not entry.is_dir():
                    self.note("Cache: the cached entry was replaced meanwhile; not restored")
                    return 0
                count = sum(1 for p in entry.rglob("*") if p.is_file())
                shutil.copytree(entry, src, symlinks=True, dirs_exist_ok=True)
        except OSError as exc:
            self.note(f"Cache: restore failed ({exc}); the build continues without it")
            return 0
        self.note(f"Cache: restored {count} files")
        return count

    def save(self, src: Path, paths: list[str]) -> int:
        """Replace the project's cache with the files ``paths`` select in ``src``."""
        relative = [p for p in paths if not p.startswith("/") and not p.startswith("~")]
        for path in sorted(set(paths) - set(relative)):
            self.note(
                f"Cache: {path!r} is outside the source directory; the local cache keeps "
                "only paths relative to CODEBUILD_SRC_DIR"
            )
        try:
            files = select_files(relative, [], src, None)
        except ArtifactPathError as exc:
            self.note(f"Cache: not saved ({exc})")
            return 0
        size = sum(path.lstat().st_size for path in files.values())
        if size > self.max_bytes:
            self.note(
                f"Cache: not saved: {size} bytes is over the limit of {self.max_bytes} bytes "
                "(CONVEYOR_BUILD_CACHE_MAX_BYTES)"
            )
            return 0
        try:
            self._store(files)
        except OSError as exc:
            self.note(f"Cache: save failed ({exc})")
            return 0
        self.note(f"Cache: saved {len(files)} files ({size} bytes)")
        return len(files)

    def _store(self, files: dict[str, Path]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"entry-{uuid.uuid4().hex}"
        staging = self.dir / f"tmp-{uuid.uuid4().hex}"
        try:
            for rel, path in files.items():
                target = staging / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target, follow_symlinks=False)
            staging.mkdir(parents=True, exist_ok=True)  # an empty cache is a cache too
            (self.dir / f"{name}.lock").touch()
            staging.rename(self.dir / name)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        # Writers take turns for the swap and the pruning (the copying above runs in
        # parallel): a writer pruning while another swaps could remove the newer entry
        # just before it becomes current.
        with _project_lock(self.dir):
            link = self.dir / f"tmp-link-{uuid.uuid4().hex}"
            link.symlink_to(name)
            link.replace(self.dir / CURRENT)
            self._prune(keep=name)

    def _prune(self, keep: str) -> None:
        """Remove entries no build reads any more (a reader's shared lock keeps one)."""
        for entry in self.dir.glob("entry-*"):
            if entry.name == keep or entry.suffix == ".lock" or not entry.is_dir():
                continue
            with _locked(entry, fcntl.LOCK_EX | fcntl.LOCK_NB) as ok:
                if ok:
                    shutil.rmtree(entry, ignore_errors=True)
                    with contextlib.suppress(OSError):
                        entry.with_name(entry.name + ".lock").unlink()


@contextlib.contextmanager
def _project_lock(directory: Path) -> Iterator[None]:
    fd = os.open(directory / ".lock", os.O_RDONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def _locked(entry: Path, how: int) -> Iterator[bool]:
    """Hold ``how`` on the entry's lock file; yields whether it was had."""
    lock = entry.with_name(entry.name + ".lock")
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, how)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)
