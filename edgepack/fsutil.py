"""Writing outputs so that a killed run never leaves half an artifact and nothing is clobbered."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from edgepack.errors import EdgepackError


@contextmanager
def staged_dir(outdir: Path, force: bool = False):
    """Yield a temporary sibling of `outdir`; it becomes `outdir` only if the block succeeds.

    Staging next to the destination keeps the final rename on one file system (atomic).
    """
    outdir = Path(outdir)
    if outdir.exists() and not force:
        raise EdgepackError(f"{outdir} already exists: pass --force to replace it, or -o another folder")
    if outdir.exists() and not outdir.is_dir():
        raise EdgepackError(f"{outdir} exists and is not a folder")
    outdir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.tmp-", dir=outdir.parent))
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    old = None
    if outdir.exists():
        old = outdir.with_name(f".{outdir.name}.old-{os.getpid()}")
        os.replace(outdir, old)
    os.replace(stage, outdir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write via a temp file in the same folder + os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dir_size(path: Path) -> int:
    """Bytes of a file, or of every file under a folder (artifacts can be several files)."""
    path = Path(path)
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
