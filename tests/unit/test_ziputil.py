"""Hardened zip handling: every hostile archive is refused before it can do harm."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import pytest

from providers.ziputil import (
    UnsafeArchiveError,
    extract_zip,
    safe_member_path,
    sha256_file,
    zip_dir,
)


def _zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def test_round_trip_keeps_tree_modes_and_empty_dirs(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "a" / "b").mkdir(parents=True)
    (src / "empty").mkdir()
    (src / "top.txt").write_text("top")
    (src / "a" / "b" / "deep.bin").write_bytes(bytes(range(256)) * 100)
    script = src / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    (src / "link.txt").symlink_to("top.txt")  # inside the tree: stored as a file

    archive = tmp_path / "a.zip"
    assert zip_dir(src, archive) == 5
    out = tmp_path / "out"
    stats = extract_zip(archive, out)

    assert stats.files == 5
    assert (out / "top.txt").read_text() == "top"
    assert (out / "a" / "b" / "deep.bin").read_bytes() == bytes(range(256)) * 100
    assert (out / "empty").is_dir()
    assert (out / "link.txt").read_text() == "top"
    assert not (out / "link.txt").is_symlink()
    assert (out / "run.sh").stat().st_mode & stat.S_IXUSR


def test_zip_refuses_symlink_leaving_directory(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (tmp_path / "secret").write_text("host file")
    (src / "leak").symlink_to(tmp_path / "secret")
    with pytest.raises(UnsafeArchiveError, match="leak"):
        zip_dir(src, tmp_path / "a.zip")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("../evil.txt", "traversal"),
        ("a/../../evil.txt", "traversal"),
        ("..\\evil.txt", "traversal"),
        ("/etc/evil.txt", "absolute"),
        ("C:/evil.txt", "absolute"),
    ],
)
def test_rejects_escaping_names(tmp_path: Path, name: str, reason: str) -> None:
    archive = _zip(tmp_path / "a.zip", {"ok.txt": b"fine", name: b"evil"})
    out = tmp_path / "out" / "inner"
    with pytest.raises(UnsafeArchiveError, match=reason):
        extract_zip(archive, out)
    # Names are checked before anything is written.
    assert not (out / "ok.txt").exists()
    assert not (tmp_path / "out" / "evil.txt").exists()
    assert not (tmp_path / "evil.txt").exists()


def test_rejects_symlink_entries(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("innocent")
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(UnsafeArchiveError, match=r"innocent.*symlink"):
        extract_zip(archive, tmp_path / "out")


def test_rejects_write_through_existing_symlink(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (out / "sub").symlink_to(outside)
    archive = _zip(tmp_path / "a.zip", {"sub/x.txt": b"x"})
    with pytest.raises(UnsafeArchiveError, match="outside"):
        extract_zip(archive, out)
    assert not (outside / "x.txt").exists()


def test_too_many_files(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", {f"f{i}": b"" for i in range(11)})
    with pytest.raises(UnsafeArchiveError, match="11 entries"):
        extract_zip(archive, tmp_path / "out", max_files=10)
    extract_zip(archive, tmp_path / "ok", max_files=11)


def test_too_large_from_headers(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", {"a": b"\0" * 600, "b": b"\0" * 600})
    with pytest.raises(UnsafeArchiveError, match="1200 bytes"):
        extract_zip(archive, tmp_path / "out", max_bytes=1000)
    assert not (tmp_path / "out" / "a").exists()


def test_lying_header_is_caught_while_streaming(tmp_path: Path) -> None:
    """A central directory claiming 10 bytes for a 5 MB member must not get 5 MB out."""
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bomb.bin", b"\0" * 5_000_000)
        zf.filelist[0].file_size = 10  # written into the central directory at close
    with zipfile.ZipFile(archive) as zf:
        assert zf.getinfo("bomb.bin").file_size == 10
    out = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError):
        extract_zip(archive, out, max_bytes=1000)
    written = (out / "bomb.bin").stat().st_size if (out / "bomb.bin").exists() else 0
    assert written <= 1000


def test_corrupt_archive(tmp_path: Path) -> None:
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(UnsafeArchiveError, match="corrupt"):
        extract_zip(bad, tmp_path / "out")


def test_safe_member_path_accepts_normal_names(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    assert safe_member_path(root, "a/b/c.txt") == root / "a" / "b" / "c.txt"
    assert safe_member_path(root, "./a.txt") == root / "a.txt"
    with pytest.raises(UnsafeArchiveError):
        safe_member_path(root, "")


def test_sha256_file(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    assert sha256_file(f) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


@pytest.mark.parametrize(
    ("entries", "clash"),
    [
        ([("a", b"file"), ("a/b.txt", b"inside")], "a"),  # file first, then a child
        ([("x/y/z.txt", b"deep"), ("x/y", b"file")], "x/y"),  # child first, then the file
        ([("d/", b""), ("d", b"file")], "d"),  # an explicit directory entry
    ],
)
def test_file_and_directory_of_one_name_fails_with_nothing_extracted(
    tmp_path: Path, entries: list[tuple[str, bytes]], clash: str
) -> None:
    archive = tmp_path / "clash.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in entries:
            zf.writestr(name, data)
    out = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match=f"'{clash}' is both a file and a directory"):
        extract_zip(archive, out)
    assert list(out.iterdir()) == []
