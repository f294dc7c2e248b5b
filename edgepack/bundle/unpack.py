"""Open a bundle for reading: a folder as it is, a .tar.gz extracted into a temporary folder that
is removed afterwards, refusing anything that could write outside it or fill the disk.

Refused, each with one line: absolute names, `..` parts, links of any kind (a bundle holds plain
files only, so no link is needed and none can escape), devices, fifos, duplicate names, more than
MAX_MEMBERS members, a member over MAX_MEMBER_BYTES or a total over MAX_TOTAL_BYTES (checked on
the sizes the headers declare, before a byte is written, and again while writing). Hand-written
on tarfile rather than `extractall(filter="data")`: that filter rewrites what it dislikes, a
bundle with such a member is refused instead.
"""

from __future__ import annotations

import contextlib
import os
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from edgepack.errors import EdgepackError

MAX_MEMBER_BYTES = 4 << 30
MAX_TOTAL_BYTES = 8 << 30
MAX_MEMBERS = 10_000
CHUNK = 1 << 20


class UnsafeArchive(EdgepackError):
    """The archive is not a well-formed bundle archive (a structure failure: exit 4)."""


@contextlib.contextmanager
def opened(bundle: str | Path, max_member: int = MAX_MEMBER_BYTES, max_total: int = MAX_TOTAL_BYTES) -> Iterator[Path]:
    """The bundle's root folder (the one holding manifest.json), for the duration of the block."""
    path = Path(bundle)
    if path.is_dir():
        yield path
        return
    if not path.is_file():
        raise EdgepackError(f"{path}: no such bundle (a folder or a .tar.gz made by edgepack package)")
    with tempfile.TemporaryDirectory(prefix="edgepack-verify-") as tmp:
        extract(path, Path(tmp), max_member, max_total)
        yield _root(Path(tmp), path)


def _root(folder: Path, archive: Path) -> Path:
    if (folder / "manifest.json").is_file():
        return folder
    tops = list(folder.iterdir())
    if len(tops) == 1 and tops[0].is_dir():
        return tops[0]
    raise UnsafeArchive(f"{archive}: no manifest.json at the top, nor in one top folder")


def _check(member: tarfile.TarInfo, seen: set[str], total: int, max_member: int, max_total: int) -> str:
    """The member's safe relative name, or UnsafeArchive naming what is wrong with it."""
    name = member.name
    pure = PurePosixPath(name)
    if name.startswith(("/", "\\")) or pure.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchive(f"member {name[:200]!r} has an absolute path")
    if ".." in pure.parts or "\\" in name or "\0" in name:
        raise UnsafeArchive(f"member {name[:200]!r} leaves the bundle ('..' or a backslash in its path)")
    if member.issym() or member.islnk():
        raise UnsafeArchive(f"member {name[:200]!r} is a link (to {member.linkname[:200]!r}); bundles hold plain files")
    if not (member.isfile() or member.isdir()):
        raise UnsafeArchive(f"member {name[:200]!r} is a device, fifo or other special file")
    clean = pure.as_posix().strip("/")
    if clean in ("", ".") and member.isdir():
        return ""
    if clean in seen:
        raise UnsafeArchive(f"member {name[:200]!r} appears twice")
    if member.size > max_member:
        raise UnsafeArchive(f"member {name[:200]!r} declares {member.size} bytes, over the {max_member}-byte limit")
    if total + member.size > max_total:
        raise UnsafeArchive(f"the archive holds over {max_total} bytes: refused")
    seen.add(clean)
    return clean


def extract(archive: Path, dest: Path, max_member: int = MAX_MEMBER_BYTES, max_total: int = MAX_TOTAL_BYTES) -> None:
    """Extract `archive` into the empty folder `dest`, member by member, checking each first."""
    seen: set[str] = set()
    total = 0
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            for count, member in enumerate(tar, 1):
                if count > MAX_MEMBERS:
                    raise UnsafeArchive(f"{archive}: more than {MAX_MEMBERS} members")
                name = _check(member, seen, total, max_member, max_total)
                if not name:
                    continue
                target = dest / name
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                total += _write(tar, member, target, max_member)
    except UnsafeArchive as e:
        raise UnsafeArchive(f"{archive}: {e}" if not str(e).startswith(str(archive)) else str(e)) from None
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise UnsafeArchive(f"{archive}: not a readable .tar.gz bundle ({str(e)[:200] or type(e).__name__})") from None


def _write(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path, limit: int) -> int:
    """Copy one member's data into a new file (never through an existing file or link)."""
    src = tar.extractfile(member)
    written = 0
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    with os.fdopen(fd, "wb") as out:
        while chunk := src.read(CHUNK):
            written += len(chunk)
            if written > min(limit, member.size):
                raise UnsafeArchive(f"member {member.name[:200]!r} holds more data than it declares")
            out.write(chunk)
    if written != member.size:
        raise UnsafeArchive(f"member {member.name[:200]!r} is truncated ({written} of {member.size} bytes)")
    return written
