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
    check_free(outdir, force)
    if outdir.exists() and not outdir.is_dir():
        raise EdgepackError(f"{outdir} exists and is not a folder")
    created = [p for p in reversed(outdir.parents) if not p.exists()]
    outdir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.tmp-", dir=outdir.parent))
    stage.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; outputs should follow the user's umask
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        for parent in reversed(created):  # leave no empty folders a failed run made
            try:
                parent.rmdir()
            except OSError:
                break
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
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_free(outdir: Path, force: bool) -> None:
    """Refuse early (before slow work) to replace an existing output without --force."""
    if Path(outdir).exists() and not force:
        raise EdgepackError(f"{outdir} already exists: pass --force to replace it, or -o another folder")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_tree(folder: Path) -> str:
    """One digest of every file under `folder`: relative names and contents (a data folder
    whose images changed must not look the same to --resume)."""
    h = hashlib.sha256()
    for f in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(folder).as_posix()}\0{sha256_file(f)}\0".encode())
    return h.hexdigest()


def artifact_identity(path: Path, companions: list[Path] = ()) -> dict:
    """Size of an artifact with the files its runtime loads beside it (the weights count), the
    main file's sha256 (what `sha256sum` says) and each file's, so that changed weights show."""
    present = [Path(path), *(p for p in companions if Path(p).is_file())]
    files = {f.name: {"bytes": f.stat().st_size, "sha256": sha256_file(f)} for f in present}
    return {"size_bytes": sum(f["bytes"] for f in files.values()), "sha256": files[Path(path).name]["sha256"],
            "files": files}


@contextmanager
def file_lock(path: Path):
    """Hold an exclusive advisory lock on `path` (created if missing) for the block.

    For caches that several compiles share (a board, a tuning database): a second process, or a
    second thread of this one (flock locks belong to the open file, not the process), waits
    until the first is done instead of reading or writing half a file."""
    import fcntl

    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def slug(text: str) -> str:
    """`text` as a safe folder name (default output folders are named after the model)."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-") or "model"
