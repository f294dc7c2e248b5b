"""`edgepack verify BUNDLE [--device NAME]`: graded checks, each with its own exit code.

    4 structure   manifest.json present, valid JSON, of the schema this edgepack reads; a safe archive
    5 hashes      every listed file present with its size and sha256; no file missing, none extra
    6 device      the device (device.probe(), asked before anything runs there): the artifact's CPU
                  architecture, native BF16 for a bf16 artifact (the probe's CPU flags), the runtime
                  installed and at least the manifest's minimum version (which for ONNX covers its
                  opset), numpy present
    7 golden      the golden inputs replayed on the device (device.outputs(): the same worker) give
                  the expected outputs within the manifest's tolerances

The checks run in that order and stop at the first failure: a bundle whose bytes changed is
never sent to a device, and an incompatible device is never asked to run it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from pydantic import ValidationError

from edgepack.bundle import golden
from edgepack.bundle.build import MANIFEST, NOT_LISTED
from edgepack.bundle.manifest import MANIFEST_SCHEMA_VERSION, Manifest
from edgepack.bundle.unpack import UnsafeArchive, opened
from edgepack.devices.compat import refusal
from edgepack.errors import EdgepackError, first_line
from edgepack.fsutil import sha256_file

EXIT = {"structure": 4, "hashes": 5, "device": 6, "golden": 7}


@dataclass
class Verdict:
    bundle: str
    device: str
    checks: list[dict] = field(default_factory=list)  # {"check", "ok", "detail", "seconds"}
    manifest: Manifest | None = None
    expect_manifest: str | None = None  # the manifest's sha256 as `package` printed it, if the user gives it

    @property
    def failed(self) -> dict | None:
        return next((c for c in self.checks if not c["ok"]), None)

    @property
    def exit_code(self) -> int:
        return EXIT[self.failed["check"]] if self.failed else 0

    def to_json(self) -> dict:
        m = self.manifest
        return {"bundle": self.bundle, "device": self.device, "ok": self.failed is None, "exit_code": self.exit_code,
                "name": m.name if m else None, "backend": m.backend if m else None, "checks": self.checks}


class BundleRefused(EdgepackError):
    """A bundle that failed verify's structure or hash check, refused before anything runs;
    `exit_code` is verify's for that check (4 or 5)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def is_bundle(path: str | Path) -> bool:
    """A bundle rather than an artifact: a folder holding manifest.json, or a .tar.gz / .tgz."""
    from edgepack.bundle.pack import is_archive

    path = Path(path)
    return (path.is_dir() and (path / MANIFEST).is_file()) or (path.is_file() and is_archive(path))


@contextlib.contextmanager
def checked(bundle: str | Path, manifest_sha256: str | None = None) -> Iterator[tuple[Path, Manifest]]:
    """The bundle's root folder and manifest, once verify's structure and hash checks pass (an
    archive is extracted into a temporary folder removed after the block). A failure is
    BundleRefused with verify's own line: a changed byte never reaches a device."""
    verdict = Verdict(str(bundle), "-", expect_manifest=manifest_sha256.lower() if manifest_sha256 else None)
    with contextlib.ExitStack() as stack:
        try:
            root = stack.enter_context(opened(bundle))
        except UnsafeArchive as e:
            raise BundleRefused(f"{bundle}: structure: {e}", EXIT["structure"]) from None
        for name, check in (("structure", _structure), ("hashes", _hashes)):
            if not _run(verdict, name, check, root, None):
                raise BundleRefused(f"{bundle}: {name}: {verdict.failed['detail']} (refused before running)",
                                    EXIT[name])
        yield root, verdict.manifest


class _Failed(Exception):
    def __init__(self, detail: str, **extra):
        super().__init__(detail)
        self.extra = extra


def verify(bundle: str | Path, device=None, manifest_sha256: str | None = None) -> Verdict:
    """Check `bundle` (folder or .tar.gz) on `device` (a devices.Device; default this host).
    `manifest_sha256`: what `package` printed; the manifest holds every other file's hash, so
    with it a bundle changed together with its manifest is caught too."""
    from edgepack.devices import LocalDevice

    device = device or LocalDevice()
    verdict = Verdict(str(bundle), device.name, expect_manifest=manifest_sha256.lower() if manifest_sha256 else None)
    try:
        with opened(bundle) as root:
            for name, check in (("structure", _structure), ("hashes", _hashes), ("device", _device),
                                ("golden", _golden)):
                if not _run(verdict, name, check, root, device):
                    break
    except UnsafeArchive as e:
        verdict.checks.append({"check": "structure", "ok": False, "detail": str(e), "seconds": 0.0})
    return verdict


def _run(verdict: Verdict, name: str, check, root: Path, device) -> bool:
    t0 = time.perf_counter()
    try:
        detail, extra = check(verdict, root, device), {}
        ok = True
    except _Failed as e:
        detail, extra, ok = str(e), e.extra, False
    verdict.checks.append({"check": name, "ok": ok, "detail": detail, **extra,
                           "seconds": round(time.perf_counter() - t0, 3)})
    return ok


def _structure(verdict: Verdict, root: Path, device) -> str:
    import json

    path = root / MANIFEST
    if not path.is_file() or path.is_symlink():
        raise _Failed(f"no {MANIFEST} in the bundle")
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise _Failed(f"{MANIFEST} is not valid JSON ({str(e)[:200]})") from None
    if not isinstance(data, dict) or data.get("format") != "edgepack-bundle":
        raise _Failed(f"{MANIFEST} is not an edgepack bundle manifest (format is not 'edgepack-bundle')")
    version = data.get("schema_version")
    if version != MANIFEST_SCHEMA_VERSION:
        raise _Failed(f"{MANIFEST} schema_version {str(version)[:20]}: this edgepack reads {MANIFEST_SCHEMA_VERSION}")
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])[:200]
        raise _Failed(f"{MANIFEST} does not match its schema: {where}: {err['msg'][:200]}") from None
    for name in [*manifest.files, manifest.artifact.path, manifest.golden.inputs, manifest.golden.outputs,
                 manifest.runner.worker, manifest.runner.session]:
        pure = PurePosixPath(name)
        if pure.is_absolute() or ".." in pure.parts or "\\" in name or name in NOT_LISTED:
            raise _Failed(f"{MANIFEST} names {name[:200]!r}, which is not a file inside the bundle")
    needed = {manifest.artifact.path, *manifest.artifact.files, manifest.golden.inputs, manifest.golden.outputs,
              manifest.runner.worker, manifest.runner.session}
    unlisted = sorted(needed - set(manifest.files))
    if unlisted:
        raise _Failed(f"{MANIFEST} uses {unlisted[0]!r} but does not list its hash")
    verdict.manifest = manifest
    return (f"{manifest.name}: manifest schema {MANIFEST_SCHEMA_VERSION}, {len(manifest.files)} files listed, "
            f"manifest sha256 {sha256_file(path)}")


def _hashes(verdict: Verdict, root: Path, device) -> str:
    manifest = verdict.manifest
    if verdict.expect_manifest and sha256_file(root / MANIFEST) != verdict.expect_manifest:
        raise _Failed(f"{MANIFEST}: sha256 is not the {verdict.expect_manifest[:16]}... given: the manifest changed",
                      file=MANIFEST)
    for name, entry in sorted(manifest.files.items()):
        path = root / name
        if path.is_symlink() or not path.is_file():
            raise _Failed(f"{name}: missing from the bundle" if not path.is_symlink()
                          else f"{name}: a link, not a file", file=name)
        size = path.stat().st_size
        if size != entry.bytes:
            raise _Failed(f"{name}: {size} bytes, the manifest says {entry.bytes}: the file changed", file=name)
        if sha256_file(path) != entry.sha256:
            raise _Failed(f"{name}: sha256 differs from the manifest: the file changed", file=name)
    # links are never bundle content (a linked folder would hide what it holds): they count as extra
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_symlink() or not p.is_dir()}
    extra = sorted(present - set(manifest.files) - set(NOT_LISTED))
    if extra:
        raise _Failed(f"{extra[0]}: in the bundle but not in the manifest"
                      f"{f' (and {len(extra) - 1} more)' if len(extra) > 1 else ''}", file=extra[0])
    pinned = ", the manifest matches the sha256 given" if verdict.expect_manifest else ""
    return f"{len(manifest.files)} files match their sha256 and size{pinned}"


def _device(verdict: Verdict, root: Path, device) -> str:
    rt = verdict.manifest.runtime
    try:
        env = device.probe()
    except EdgepackError as e:
        raise _Failed(f"{device.name}: cannot tell what it is: {e}") from None
    why = refusal(env, device.name, rt.arch, (rt.package,), rt.minimum_version, rt.minimum_reason,
                  Path(verdict.manifest.artifact.path).name, verdict.manifest.artifact.precision)
    if why:
        raise _Failed(why, environment=env)
    arch, have = env.get("arch"), (env.get("runtimes") or {}).get(rt.package)
    return f"{device.name}: {arch}, {rt.package} {have} (minimum {rt.minimum_version or 'any'})"


def _golden(verdict: Verdict, root: Path, device) -> str:
    m = verdict.manifest
    try:
        feeds = golden.read_feeds(root / m.golden.inputs, m.golden.feeds)
        expected = [[f[str(j)] for j in range(len(m.outputs))] for f in golden.read_feeds(root / m.golden.outputs,
                                                                                          m.golden.feeds)]
    except (EdgepackError, KeyError) as e:
        raise _Failed(f"golden vectors unreadable: {first_line(e)}") from None
    try:
        got = device.outputs(m.backend, root / m.artifact.path, feeds)
    except EdgepackError as e:
        raise _Failed(f"golden replay on {device.name} failed: {first_line(e)}") from None
    rows = golden.compare(expected, got, [t.model_dump() for t in m.golden.tolerances])
    bad = [r for r in rows if not r["ok"]]
    if bad or len(rows) < len(m.golden.tolerances):
        r = bad[0] if bad else {"output": "?", "max_abs_diff": None}
        diff = "missing" if r.get("max_abs_diff") is None else f"max |diff| {r['max_abs_diff']:.3g}"
        why = r.get("why") or f"atol {r.get('atol', 0):.3g} + rtol {r.get('rtol', 0):.3g}"
        raise _Failed(f"output {r['output']!r} on {device.name}: {diff}, outside tolerance ({why})", outputs=rows)
    worst = max((r["max_abs_diff"] or 0.0 for r in rows), default=0.0)
    return f"{m.golden.feeds} golden feeds replayed on {device.name}: max |diff| {worst:.3g}, within tolerance"
