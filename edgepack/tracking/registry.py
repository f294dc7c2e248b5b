"""`edgepack registry list | show | promote`: shipped artifacts, per model and target.

Every compile registers the artifact it ships as a new version of `<model>-<target>`, tagged
with its backend, precision and sha256, and points the `candidate` alias at it. `promote`
moves an alias (`production`, ...) to a version; when a bundle was made from it (`--bundle`,
or one recorded on the version earlier) the bundle is verified first (`edgepack verify`), must
hold the version's artifact, and its digest is tagged on the version.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

from rich.table import Table

from edgepack.errors import EdgepackError
from edgepack.fsutil import sha256_file, sha256_tree
from edgepack.tracking import models
from edgepack.tracking.store import Store


def _out():
    from edgepack.views import out

    return out


def versions(store: Store, name: str) -> list:
    found = store.search_model_versions(f"name = '{name}'")
    if not found:
        raise EdgepackError(f"no registered model {name!r} in {store.uri} (see: edgepack registry list)")
    return sorted(found, key=lambda v: int(v.version))


def cmd_list(args) -> int:
    store = Store(args.tracking_uri, create=False)
    rows = [{"name": m.name, "aliases": dict(m.aliases or {}),
             "latest": max((int(v.version) for v in m.latest_versions or []), default=None), "tags": dict(m.tags)}
            for m in store.search_registered_models(max_results=1000)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    t = Table(title=f"registered models in {store.uri}")
    for c in ("name", "latest version", "aliases"):
        t.add_column(c)
    for r in rows:
        t.add_row(r["name"], str(r["latest"]), ", ".join(f"{a}={v}" for a, v in sorted(r["aliases"].items())) or "-")
    _out().print(t)
    return 0


def describe(store: Store, name: str) -> dict:
    model = store.get_registered_model(name)
    aliases = {}
    for alias, version in (model.aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    return {"name": name, "tags": dict(model.tags), "versions": [
        {"version": int(v.version), "aliases": sorted(aliases.get(str(v.version), [])), "run_id": v.run_id,
         "model_id": v.source.removeprefix("models:/") if v.source.startswith("models:/") else None,
         "source": v.source, "tags": dict(v.tags)} for v in versions(store, name)]}


def cmd_show(args) -> int:
    info = describe(Store(args.tracking_uri, create=False), args.name)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    t = Table(title=f"{info['name']}")
    for c in ("version", "aliases", "backend", "precision", "accuracy", "p50_ms", "sha256", "bundle", "run"):
        t.add_column(c)
    for v in info["versions"]:
        tags = v["tags"]
        t.add_row(str(v["version"]), ", ".join(v["aliases"]) or "-", tags.get("backend", "-"),
                  tags.get("precision", "-"), tags.get("accuracy", "-"), tags.get("p50_ms", "-"),
                  tags.get("sha256", "-")[:12], tags.get("bundle_sha256", "-")[:12], (v["run_id"] or "-")[:8])
    _out().print(t)
    return 0


def bundle_digest(path: Path) -> tuple[str, set[str]]:
    """The bundle's digest (its file's sha256, or a folder's tree digest) and the sha256 of
    every file it holds."""
    if path.is_dir():
        return sha256_tree(path), {sha256_file(p) for p in path.rglob("*") if p.is_file()}
    inside = set()
    with tarfile.open(path) as tar:
        for member in tar:
            if member.isfile():
                inside.add(hashlib.sha256(tar.extractfile(member).read()).hexdigest())
    return sha256_file(path), inside


def verify_bundle(path: Path) -> None:
    """`edgepack verify BUNDLE` on this host (structure, hashes, runtime, golden replay), in this
    process; EdgepackError naming the check that failed."""
    from edgepack.bundle import verify

    verdict = verify(path)
    if verdict.failed is not None:
        raise EdgepackError(f"bundle {path} failed verification (exit {verdict.exit_code}): "
                            f"{verdict.failed['check']}: {verdict.failed['detail']}")


def cmd_promote(args) -> int:
    store = Store(args.tracking_uri, create=False)
    chosen = [v for v in versions(store, args.name) if str(v.version) == str(args.version)]
    if not chosen:
        raise EdgepackError(f"{args.name} has no version {args.version} (see: edgepack registry show {args.name})")
    version = chosen[0]
    bundle = Path(args.bundle) if args.bundle else (Path(version.tags["bundle"]) if "bundle" in version.tags else None)
    if bundle is not None:
        if not bundle.exists():
            raise EdgepackError(f"bundle {bundle}: no such file or folder")
        verify_bundle(bundle)  # first: it unpacks an archive safely and bounded
        digest, inside = bundle_digest(bundle)
        if version.tags.get("sha256") and version.tags["sha256"] not in inside:
            raise EdgepackError(f"bundle {bundle} does not hold version {args.version}'s artifact "
                                f"(sha256 {version.tags['sha256'][:12]}...)")
        store.set_model_version_tag(args.name, str(args.version), "bundle", str(bundle.resolve()))
        store.set_model_version_tag(args.name, str(args.version), "bundle_sha256", digest)
        if models.find(store, digest) is None:  # artifact -> bundle, in the lineage
            source = version.source.removeprefix("models:/") if version.source.startswith("models:/") else None
            models.log_bundle(store, bundle, digest, source, {"registered": f"{args.name}/{args.version}"})
    store.set_registered_model_alias(args.name, args.alias, str(args.version))
    checked = "" if bundle is None else f" (bundle {bundle} verified)"
    print(f"{args.name}: {args.alias} -> version {args.version}{checked}")
    return 0
