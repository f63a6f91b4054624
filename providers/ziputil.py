"""Zipping and hardened unzipping of artifact directories, pure stdlib.

Artifacts travel as zip files, like CodePipeline's. Both directions stream through files
on disk so an artifact is never held whole in memory. Extraction treats every archive as
hostile: it comes from a bucket that other actions (and people) can write to. It lives
here rather than in ``workers.artifacts`` because providers (the S3 source, the S3 deploy)
need the same code and providers may not import the engine; the engine imports it from
here and converts :class:`UnsafeArchiveError` into its own ``ArtifactError``.
"""

from __future__ import annotations

import hashlib
import os
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

CHUNK_SIZE = 1024 * 1024
# The same defaults as engine.settings.Settings, for callers (providers) that cannot see it.
DEFAULT_MAX_BYTES = 5 * 1024**3
DEFAULT_MAX_FILES = 100_000
# The settings that raise them, named in every refusal so an operator knows what to change.
MAX_BYTES_SETTING = "CONVEYOR_MAX_ARTIFACT_BYTES"
MAX_FILES_SETTING = "CONVEYOR_MAX_ARTIFACT_FILES"


class UnsafeArchiveError(ValueError):
    """An archive is corrupt, too big, or tries to write outside its destination."""


@dataclass(frozen=True)
class ExtractStats:
    files: int
    bytes: int


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def _over_files(what: str, max_files: int) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"{what}; the limit is {max_files} files ({MAX_FILES_SETTING})")


def _over_bytes(what: str, max_bytes: int) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"{what}; the limit is {max_bytes} bytes ({MAX_BYTES_SETTING})")


def zip_dir(
    directory: Path,
    dest: Path,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
) -> int:
    """Zip the contents of ``directory`` (not the directory itself) into ``dest``.

    Returns the number of entries. Files are streamed from disk by ``ZipFile.write``.
    Symlinked files are stored as the file they point to, but only if that file is inside
    ``directory``: following a link to ``/etc/passwd`` would leak the worker's host into
    an artifact. Symlinked directories are skipped (their targets are walked anyway, and
    following them could loop). An artifact over the limits is refused as soon as the walk
    gets there, before its bytes are compressed: whoever extracts it would refuse it anyway.
    """
    root = directory.resolve()
    count = 0
    total = 0
    # strict_timestamps=False: files dated before 1980 (e.g. from reproducible builds with
    # SOURCE_DATE_EPOCH=0) get clamped instead of failing the whole artifact.
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED, strict_timestamps=False) as zf:
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            dirnames.sort()
            rel_dir = here.relative_to(root).as_posix()
            if rel_dir != "." and not filenames and not dirnames:
                count += 1
                if count > max_files:
                    raise _over_files(f"more than {max_files} entries", max_files)
                zf.writestr(zipfile.ZipInfo(rel_dir + "/"), b"")  # keep empty directories
            for name in sorted(filenames):
                path = here / name
                if path.is_symlink():
                    target = path.resolve()
                    if not target.is_relative_to(root):
                        raise UnsafeArchiveError(
                            f"{path.relative_to(root)}: symlink points outside the directory"
                        )
                    if not target.is_file():
                        continue
                elif not path.is_file():
                    continue  # sockets, fifos: nothing to archive
                count += 1
                total += path.stat().st_size
                if count > max_files:
                    raise _over_files(f"more than {max_files} entries", max_files)
                if total > max_bytes:
                    raise _over_bytes(f"more than {max_bytes} bytes", max_bytes)
                zf.write(path, path.relative_to(root).as_posix(), compress_type=_method_for(path))
    return count


def check_tree(
    directory: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, max_files: int = DEFAULT_MAX_FILES
) -> ExtractStats:
    """Count the files and bytes under ``directory``; UnsafeArchiveError past a limit.

    For providers that fill an output directory themselves (a build's artifacts): the
    failure names the limit while the provider can still say which artifact broke it.
    Symlinks are not followed (``zip_dir`` stores only links that stay inside).
    """
    files = size = 0
    for dirpath, _dirnames, filenames in os.walk(directory):
        for name in filenames:
            files += 1
            size += os.lstat(os.path.join(dirpath, name)).st_size
            if files > max_files:
                raise _over_files(f"more than {max_files} files", max_files)
            if size > max_bytes:
                raise _over_bytes(f"more than {max_bytes} bytes", max_bytes)
    return ExtractStats(files=files, bytes=size)


# Deflating data that does not shrink (archives, images, encrypted or random bytes) costs
# ~30x the time of storing it, for nothing: such files are stored as they are.
_COMPRESSED_SUFFIXES = frozenset(
    [
        ".zip",
        ".jar",
        ".war",
        ".ear",
        ".whl",
        ".gz",
        ".tgz",
        ".bz2",
        ".xz",
        ".zst",
        ".7z",
        ".rar",
        ".png",
        ".jpg",
        ".jpeg",
        ".gif",
        ".webp",
        ".mp3",
        ".mp4",
        ".mov",
        ".avi",
        ".woff",
        ".woff2",
        ".br",
        ".lz4",
    ]
)
_SAMPLE_BYTES = 256 * 1024
_SMALL_FILE = 64 * 1024


def _method_for(path: Path) -> int:
    """ZIP_STORED for files that would not shrink, judged by suffix or a sample, else DEFLATE."""
    if path.suffix.lower() in _COMPRESSED_SUFFIXES:
        return zipfile.ZIP_STORED
    try:
        if path.stat().st_size <= _SMALL_FILE:
            return zipfile.ZIP_DEFLATED
        with path.open("rb") as fh:
            sample = fh.read(_SAMPLE_BYTES)
    except OSError:
        return zipfile.ZIP_DEFLATED
    shrunk = len(zlib.compress(sample, 1))
    return zipfile.ZIP_STORED if shrunk > 0.9 * len(sample) else zipfile.ZIP_DEFLATED


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def safe_member_path(root: Path, name: str) -> Path:
    """Where an entry called ``name`` lands under ``root``, or UnsafeArchiveError."""
    normalized = name.replace("\\", "/")  # archives made on Windows use backslashes
    if "\0" in normalized or not normalized.strip("/"):
        raise UnsafeArchiveError(f"{name!r}: invalid entry name")
    if normalized.startswith("/") or (len(normalized) > 1 and normalized[1] == ":"):
        raise UnsafeArchiveError(f"{name!r}: absolute path")
    parts = PurePosixPath(normalized).parts
    if ".." in parts:
        raise UnsafeArchiveError(f"{name!r}: path traversal ('..')")
    target = root.joinpath(*parts)
    # resolve() follows symlinks already present in the destination, so a pre-existing
    # link cannot be used as a way out either.
    if not target.resolve().is_relative_to(root):
        raise UnsafeArchiveError(f"{name!r}: resolves outside the destination")
    return target


def _check_layout(infos: list[zipfile.ZipInfo]) -> None:
    """Refuse a name that is both a file and a directory (``a`` and ``a/b``): extracting it
    would fail half-way, or let the later entry silently replace the earlier one."""
    files: dict[tuple[str, ...], str] = {}
    dirs: set[tuple[str, ...]] = set()
    for info in infos:
        parts = PurePosixPath(info.filename.replace("\\", "/")).parts
        dirs.update(parts[:i] for i in range(1, len(parts)))
        if info.is_dir():
            dirs.add(parts)
        else:
            files[parts] = info.filename
    clash = sorted(set(files) & dirs)
    if clash:
        name = "/".join(clash[0])
        raise UnsafeArchiveError(
            f"{name!r} is both a file and a directory in the archive; nothing was extracted"
        )


def _check_headers(infos: list[zipfile.ZipInfo], max_bytes: int, max_files: int) -> None:
    if len(infos) > max_files:
        raise _over_files(f"archive has {len(infos)} entries", max_files)
    declared = sum(i.file_size for i in infos if not i.is_dir())
    if declared > max_bytes:
        raise _over_bytes(f"archive expands to {declared} bytes", max_bytes)
    for info in infos:
        if _is_symlink(info):
            raise UnsafeArchiveError(f"{info.filename!r}: symlink entries are not allowed")


def check_zip(archive: Path, *, max_bytes: int, max_files: int) -> int:
    """What :func:`extract_zip` would judge before writing a byte: the entry count, the
    declared sizes, no symlink entries, safe names. Returns the number of entries."""
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, EOFError) as exc:
        raise UnsafeArchiveError(f"corrupt or unsupported archive: {exc}") from exc
    _check_headers(infos, max_bytes, max_files)
    root = Path("/nonexistent-root")
    for info in infos:
        safe_member_path(root, info.filename)
    _check_layout(infos)
    return len(infos)


def _copy_limited(
    src: IO[bytes], dst: IO[bytes], info: zipfile.ZipInfo, budget: int, max_bytes: int
) -> int:
    """Copy one member, failing as soon as it outgrows its header or the total budget."""
    written = 0
    while chunk := src.read(CHUNK_SIZE):
        written += len(chunk)
        if written > info.file_size:
            raise UnsafeArchiveError(f"{info.filename!r}: larger than its header says")
        if written > budget:
            raise _over_bytes(f"archive expands to more than {max_bytes} bytes", max_bytes)
        dst.write(chunk)
    return written


def extract_zip(
    archive: Path,
    dest: Path,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
) -> ExtractStats:
    """Extract ``archive`` into ``dest`` (created if needed), refusing anything unsafe.

    Every name is checked before a byte is written, so a hostile archive leaves nothing
    behind but possibly the partial member that tripped a size limit. Sizes are checked
    twice: from the headers (cheap, catches honest bombs) and while streaming (catches
    headers that lie). Permission bits are kept, minus setuid/setgid/sticky, so build
    scripts stay executable.
    """
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            _check_headers(infos, max_bytes, max_files)
            targets = [(info, safe_member_path(root, info.filename)) for info in infos]
            _check_layout(infos)
            total = 0
            for info, target in targets:
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                # Re-check after mkdir: an earlier member cannot be a symlink (rejected
                # above), but be certain nothing on disk redirects this write.
                if not target.parent.resolve().is_relative_to(root):
                    raise UnsafeArchiveError(f"{info.filename!r}: resolves outside the destination")
                with zf.open(info) as src, target.open("wb") as dst:
                    total += _copy_limited(src, dst, info, max_bytes - total, max_bytes)
                mode = (info.external_attr >> 16) & 0o777
                if info.create_system == 3 and mode:
                    target.chmod(mode | 0o600)  # always keep it readable/writable by us
            return ExtractStats(files=len(infos), bytes=total)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise UnsafeArchiveError(f"corrupt or unsupported archive: {exc}") from exc
