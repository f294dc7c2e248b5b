"""Writing outputs so that a killed run never leaves half an artifact and nothing is clobbered.

A folder is edgepack's to replace only when it says so: every output carries a marker file
(MARKER) naming the command that made it. `--force` replaces only such a folder (or an empty
one), never the working folder, a parent of it, the home folder or a folder holding the inputs.
One lock per output path keeps two runs from both claiming the same `-o`.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from edgepack.errors import EdgepackError

MARKER = ".edgepack.json"  # in every output edgepack made: what --force may replace
PID_FILE = ".edgepack.pid"  # in a staging folder while its run lives: what tells a leftover


def marker_data(command: str, **extra) -> dict:
    """What a marker says: the command, the version and when (for a person reading the folder)."""
    from edgepack import __version__

    return {"made_by": "edgepack", "command": command, "version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}


def read_marker(folder: Path) -> dict | None:
    """The folder's marker, or None when it has none (or an unreadable one: not provably ours)."""
    try:
        data = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("made_by") == "edgepack" else None


def write_marker(folder: Path, data: dict) -> None:
    atomic_write(Path(folder) / MARKER, json.dumps(data, indent=2) + "\n")


def input_paths(*values) -> list[Path]:
    """The paths among a command's inputs (files, folders, `file.py:factory`); objects are skipped."""
    out = []
    for v in values:
        if isinstance(v, (str, Path)):
            text = str(v)
            p = Path(text)
            if not p.exists() and ":" in text:
                p = Path(text.rpartition(":")[0])
            out.append(p)
    return out


def check_replaceable(outdir: Path, inputs=()) -> None:
    """Refuse to delete a folder that is not provably edgepack's to delete: `--force` must never
    wipe the working folder, home, `/`, the inputs, or a user's own folder."""
    target = Path(outdir).resolve()
    cwd, home = Path.cwd().resolve(), _home()
    if target == home or cwd == target or target in cwd.parents:
        where = "the home folder" if target == home else "the current folder" if cwd == target else \
            "a parent of the current folder"
        raise EdgepackError(f"refusing to replace {outdir}: it is {where}; -o a new folder")
    for p in inputs:
        if p.resolve() == target or target in p.resolve().parents:
            raise EdgepackError(f"refusing to replace {outdir}: it holds the input {p}; -o another folder")
    if target.is_dir() and read_marker(target) is None and any(target.iterdir()):
        raise EdgepackError(f"refusing to replace {outdir}: it was not made by edgepack (no {MARKER} in it) "
                            "and is not empty; move it away or -o another folder")


def _home() -> Path | None:
    try:
        return Path.home().resolve()
    except (RuntimeError, KeyError, OSError):  # no HOME and no passwd entry
        return None


def check_free(outdir: Path, force: bool, inputs=()) -> None:
    """Refuse early (before slow work) to replace an existing output without --force, or one
    that --force may not replace."""
    outdir = Path(outdir)
    if outdir.exists() and not force:
        raise EdgepackError(f"{outdir} already exists: pass --force to replace it, or -o another folder")
    if outdir.exists() or outdir.is_symlink():
        if not outdir.is_dir():
            raise EdgepackError(f"{outdir} exists and is not a folder")
        check_replaceable(outdir, inputs)


@contextmanager
def staged_dir(outdir: Path, force: bool = False, command: str = "edgepack", inputs=(), marker: dict | None = None):
    """Yield a temporary sibling of `outdir`; it becomes `outdir` only if the block succeeds.

    Staging next to the destination keeps the final rename on one file system (atomic). The
    staging folder holds a pid file until the rename, so a dead run's leftover is known as
    such; the result gets the marker (`marker`, else one naming `command`) that lets a later
    --force replace it.
    """
    outdir = Path(outdir)
    with output_lock(outdir):
        check_free(outdir, force, inputs)
        clean_leftovers(outdir.parent)
        stage = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.tmp-", dir=outdir.parent))
        stage.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; outputs should follow the user's umask
        (stage / PID_FILE).write_text(str(os.getpid()))
        try:
            yield stage
            write_marker(stage, marker or marker_data(command))
            (stage / PID_FILE).unlink()
            _swap_in(stage, outdir, force, inputs)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise


def _swap_in(stage: Path, outdir: Path, force: bool, inputs) -> None:
    """The final rename, checked again at the last moment: a folder that appeared at `outdir`
    while we worked is never replaced without --force, nor with it unless it is edgepack's."""
    old = None
    if os.path.lexists(outdir):
        if not force:
            raise EdgepackError(f"{outdir} appeared while this run worked: left it as it is; "
                                "-o another folder (or pass --force)")
        check_free(outdir, force, inputs)
        old = outdir.with_name(f".{outdir.name}.old-{os.getpid()}")
        os.rename(outdir, old)
    try:
        rename_noreplace(stage, outdir)  # atomic: the check above leaves a window, this does not
    except FileExistsError:
        if old is not None and not os.path.lexists(outdir):
            os.rename(old, outdir)
        raise EdgepackError(f"{outdir} appeared while this run worked: left it as it is; "
                            "-o another folder (or pass --force)") from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


_AT_FDCWD, _RENAME_NOREPLACE = -100, 1


def rename_noreplace(src: Path, dst: Path) -> None:
    """Rename `src` to `dst`, failing with FileExistsError if `dst` exists, atomically where the
    kernel can (renameat2): a plain rename silently replaces an empty folder that appeared."""
    fn = _renameat2()
    if fn is not None:
        if fn(_AT_FDCWD, os.fsencode(str(src)), _AT_FDCWD, os.fsencode(str(dst)), _RENAME_NOREPLACE) == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            raise FileExistsError(errno.EEXIST, "exists", str(dst))
        if err not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), str(dst))
    if os.path.lexists(dst):  # no renameat2 here: check, then rename (a short window remains)
        raise FileExistsError(errno.EEXIST, "exists", str(dst))
    os.rename(src, dst)


def _renameat2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn


def clean_leftovers(parent: Path, note=None) -> list[Path]:
    """Remove the staging folders (`.NAME.tmp-*`, `.NAME.old-PID`) that a dead run left in
    `parent` (its pid file or name names a process that is gone), saying so on one line each."""
    removed = []
    try:
        entries = list(Path(parent).iterdir())
    except OSError:
        return removed
    for p in entries:
        pid = _leftover_pid(p)
        if pid is None or _alive(pid):
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
        (note or _stderr_note)(f"removed {p}: left by an edgepack run that ended (pid {pid})")
    return removed


def _leftover_pid(p: Path) -> int | None:
    """The pid that owns a staging folder of ours, or None if `p` is not one."""
    name = p.name
    if not name.startswith(".") or not p.is_dir() or p.is_symlink():
        return None
    if ".tmp-" in name:
        try:
            return int((p / PID_FILE).read_text().strip())
        except (OSError, ValueError):
            return None
    head, sep, tail = name.rpartition(".old-")
    if sep and head and tail.isdigit() and (read_marker(p) is not None or not any(p.iterdir())):
        return int(tail)
    return None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stderr_note(message: str) -> None:
    print(f"edgepack: note: {message}", file=sys.stderr, flush=True)


_HELD: dict[str, int] = {}  # lock path -> thread holding it (nested takes by that thread are free)
_HELD_GUARD = threading.Lock()


@contextmanager
def output_lock(outdir: Path):
    """Hold `outdir` for this run: an exclusive lock on `.NAME.lock` beside it, so that a second
    run into the same `-o` refuses at once instead of both reporting success. Re-entrant within
    a thread (compile holds it from the start; its staged_dir takes it again). Parent folders
    made for the lock are removed again if nothing was written into them."""
    outdir = Path(outdir)
    path = str(outdir.parent.absolute() / f".{outdir.name}.lock")
    me = threading.get_ident()
    with _HELD_GUARD:
        nested = _HELD.get(path) == me
    if nested:
        yield
        return
    created = [p for p in reversed(outdir.parents) if not p.exists()]
    f = _take_lock(path, outdir)
    with _HELD_GUARD:
        _HELD[path] = me
    try:
        yield
    finally:
        with _HELD_GUARD:
            _HELD.pop(path, None)
        _release_lock(f, path, created)


def _take_lock(path: str, outdir: Path):
    """Lock the file at `path`, retrying if the file we locked was unlinked by its last holder."""
    import fcntl

    while True:
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            f = open(path, "a+")
        except OSError as e:
            raise EdgepackError(f"cannot write {outdir}: {e.strerror} ({e.filename})") from None
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip()
            f.close()
            raise EdgepackError(f"{outdir} is being written by another edgepack run"
                                f"{f' (pid {holder})' if holder else ''}: wait for it, or -o another folder") from None
        try:
            same = os.fstat(f.fileno()).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            f.truncate(0)
            f.write(str(os.getpid()))
            f.flush()
            return f
        f.close()


def _release_lock(f, path: str, created: list[Path]) -> None:
    """Unlink the lock file, then unlock (a waiter that locked the unlinked file retries), and
    remove the parents the lock made if they are empty (a failed run leaves no empty folders)."""
    import fcntl

    try:
        os.unlink(path)
    except OSError:
        pass
    fcntl.flock(f, fcntl.LOCK_UN)
    f.close()
    for parent in reversed(created):
        try:
            parent.rmdir()
        except OSError:
            break


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
