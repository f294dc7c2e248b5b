"""Which runtimes to build for, and which artifact ships."""

from __future__ import annotations

from edgepack.backends import REGISTRY, get_backend
from edgepack.errors import EdgepackError
from edgepack.report.schema import Artifact, Selected
from edgepack.targets import TargetProfile

HEADLINE = ("backend", "precision", "latency_ms", "load_ms", "throughput_per_s", "memory_mb", "parity")


def choose_backends(profile: TargetProfile, requested: list[str] | None) -> list[str]:
    """Requested backends as given; "auto": every runtime of the target that edgepack can build
    here; by default the target's default runtimes that are installed (the profile's `default`
    flags: on x86 ONNX Runtime and OpenVINO, which each win on different models). Of several,
    the fastest within the accuracy budget is selected."""
    if requested and requested != ["auto"]:
        for name in requested:
            if name not in REGISTRY:
                get_backend(name)  # raises with close-name suggestions
        return list(dict.fromkeys(requested))
    usable, missing = [], []
    wanted = profile.backends if requested == ["auto"] else profile.default_backends
    for name in wanted:
        try:
            get_backend(name)
            usable.append(name)
        except EdgepackError as e:
            missing.append(str(e))
    if not usable:
        raise EdgepackError(f"none of {profile.name}'s runtimes is usable: {'; '.join(missing)}")
    return usable


def select(artifacts: list[Artifact], max_drop: float | None) -> Selected:
    """The artifact to ship: the lowest p50 among those within the accuracy budget."""
    timed = [i for i, a in enumerate(artifacts) if a.latency_ms is not None]
    if not timed:
        return Selected(index=0, backend=artifacts[0].backend, reason="only emulated artifacts (not timed)")
    ok = [i for i in timed if max_drop is None or (artifacts[i].accuracy_drop or 0.0) <= max_drop]
    best = min(ok or timed, key=lambda i: artifacts[i].latency_ms.p50)
    a = artifacts[best]
    why = "the only artifact" if len(artifacts) == 1 else (
        f"lowest p50 ({a.latency_ms.p50:.3f} ms) of {len(artifacts)} artifacts"
        + (" within the accuracy budget" if max_drop is not None and ok else ""))
    return Selected(index=best, backend=a.backend, reason=why)


def headline(a: Artifact) -> dict:
    """The shipped artifact's headline fields, at the top of the report for quick reading."""
    return {k: getattr(a, k) for k in HEADLINE if getattr(a, k) is not None or k == "latency_ms"}
