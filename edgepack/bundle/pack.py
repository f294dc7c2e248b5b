"""`edgepack package OUT -o BUNDLE`: a folder, or a .tar.gz whose bytes depend only on its contents.

The archive is written with sorted members under one top folder (the bundle's name), fixed
mtime/uid/gid/owner names/modes, and a gzip header without time or file name, so packaging the
same output twice gives byte-identical archives. Nothing of the user's is overwritten without
--force, and a failed packaging leaves nothing behind (staged folder, temporary file + rename).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from edgepack import __version__
from edgepack.bundle.build import build, bundle_name
from edgepack.bundle.source import choose, locate
from edgepack.errors import EdgepackError
from edgepack.fsutil import output_lock, rename_noreplace, staged_dir

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
MTIME = 315532800  # 1980-01-01: a fixed time every tar and zip tool accepts


@dataclass(frozen=True)
class Packaged:
    path: Path
    name: str
    backend: str
    files: int
    bytes: int  # of the folder's files, or of the archive
    seconds: float
    manifest_sha256: str  # the manifest is the root of every other file's hash: keep this to check it


def is_archive(path: Path) -> bool:
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


def package(out: str | Path, bundle: str | Path, artifact: str | None = None, force: bool = False) -> Packaged:
    """Package the compile output `out` (or a recipe run's emit stage) as `bundle`."""
    t0 = time.perf_counter()
    output = locate(Path(out))
    art = choose(output, artifact)
    dest = Path(bundle)
    if dest.resolve() == output.folder.resolve() or output.folder.resolve() in dest.resolve().parents:
        raise EdgepackError(f"{dest}: inside the output being packaged; -o somewhere else")
    if is_archive(dest):
        manifest, size = _archive(output, art, dest, force)
    else:
        # deterministic marker (no time): two packagings give identical folders
        marker = {"made_by": "edgepack", "command": "package", "version": __version__}
        with staged_dir(dest, force, "package", inputs=[output.folder], marker=marker) as stage:
            manifest = build(output, art, stage)
        size = sum(f.bytes for f in manifest.files.values()) + (dest / "manifest.json").stat().st_size
    digest = hashlib.sha256(manifest.dumps().encode()).hexdigest()
    return Packaged(dest, manifest.name, art.backend, len(manifest.files) + 1, size, time.perf_counter() - t0, digest)


def _archive(output, art, dest: Path, force: bool):
    if os.path.lexists(dest) and not force:
        raise EdgepackError(f"{dest} already exists: pass --force to replace it, or -o another file")
    if os.path.lexists(dest) and (dest.is_symlink() or not dest.is_file()):
        raise EdgepackError(f"{dest} exists and is not a file: left as it is")
    if not dest.parent.is_dir():
        raise EdgepackError(f"{dest.parent}: no such folder")
    with output_lock(dest), tempfile.TemporaryDirectory(prefix="edgepack-bundle-") as tmp:
        root = Path(tmp) / bundle_name(output, art)
        root.mkdir()
        manifest = build(output, art, root)
        fd, part = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                write_tar(root, f)
            os.chmod(part, 0o666 & ~_umask())
            if force and os.path.lexists(dest):
                os.replace(part, dest)
            else:
                rename_noreplace(Path(part), dest)
        except FileExistsError:
            raise EdgepackError(f"{dest} appeared while packaging: left it as it is") from None
        finally:
            Path(part).unlink(missing_ok=True)
    return manifest, dest.stat().st_size


def write_tar(root: Path, f, level: int = 6) -> None:
    """`root` and everything under it as a gzipped tar into the binary file `f`, reproducibly."""
    paths = [root, *sorted(root.rglob("*"), key=lambda p: p.relative_to(root).as_posix())]
    with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0, compresslevel=level) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for path in paths:
                info = tarfile.TarInfo((Path(root.name) / path.relative_to(root)).as_posix())
                info.mtime, info.uid, info.gid, info.uname, info.gname = MTIME, 0, 0, "", ""
                if path.is_dir():
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
                    continue
                info.size, info.mode = path.stat().st_size, 0o644
                with open(path, "rb") as src:
                    tar.addfile(info, src)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
