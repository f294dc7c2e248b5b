"""Can this device run that artifact? Asked of the device's probe before anything is sent.

One check for every caller: a profile or compile on a device (devices/remote.py, from the
backend's own description of the artifact) and `edgepack verify` (from the bundle's manifest).
Besides the architecture and the runtime, the artifact's precision: a bf16 one needs a CPU that
computes BF16 natively (the probe's flags), the same decision as this host's (hostinfo.lacks_bf16).
"""

from __future__ import annotations

import re
import shlex

from edgepack.hostinfo import arch_name, lacks_bf16


def version_tuple(text: str) -> tuple[int, ...]:
    """'1.32.0' -> (1, 32, 0); '0.27.0.post1' -> (0, 27, 0). Hand-written: the numeric release
    parts are all a runtime minimum needs, and `packaging` is not one of edgepack's dependencies."""
    parts = []
    for piece in str(text).split("."):
        digits = re.match(r"\d+", piece)
        if not digits:
            break
        parts.append(int(digits.group()))
        if digits.group() != piece:
            break
    return tuple(parts)


def refusal(env: dict, device: str, arch: str | None, packages: tuple[str, ...], minimum: str | None = None,
            reason: str | None = None, artifact: str = "the artifact", precision: str | None = None) -> str | None:
    """Why `device` (its probe answer `env`) cannot run an artifact built for `arch` ("any" or
    None: portable) in `precision` (None: not recorded) with one of the pip `packages` (the first
    is the one to install) at version `minimum` or later; None when it can. The line names what to
    install. A CPU without native BF16 comes before the runtime: installing one would not help."""
    have_arch = arch_name(env.get("arch"))
    if arch and arch != "any" and have_arch and arch_name(arch) != have_arch:
        return (f"{device} is {have_arch}, {artifact} is built for {arch_name(arch)}: refused before running "
                "(compile for this device's target, or pick a device of that architecture)")
    if precision == "bf16":
        why = bf16_refusal(env, device, artifact)
        if why:
            return why
    runtimes = env.get("runtimes") or {}
    have = next((runtimes[p] for p in packages if runtimes.get(p)), None)
    wanted = f"{packages[0]}>={minimum}" if minimum else packages[0]
    if have and minimum and have != "unknown" and version_tuple(have) < version_tuple(minimum):
        why = f" ({reason})" if reason else ""
        return f"{packages[0]} {have} on {device} is older than {minimum}{why}: pip install {shlex.quote(wanted)}"
    missing = ([] if have else [wanted]) + ([] if runtimes.get("numpy") else ["numpy"])
    if missing:
        return (f"{device} cannot run this artifact: {' and '.join(m.split('>=')[0] for m in missing)} not installed; "
                f"on the device: pip install {' '.join(map(shlex.quote, missing))}")
    return None


def bf16_refusal(env: dict, device: str, artifact: str = "the artifact") -> str | None:
    """Why `device` (its probe answer `env`) cannot run a bf16 `artifact` (None: its CPU computes
    BF16 natively). Without the instructions a runtime emulates BF16, slower than FP32 and less
    exact, so such an artifact is refused before anything is sent rather than measured wrong.
    A probe answer without `flags` (an older probe) counts as not knowing them."""
    lack = lacks_bf16(env.get("arch"), env.get("flags"))
    if lack is None:
        return None
    return (f"{device} cannot run {artifact} (bf16): its CPU ({env.get('cpu') or 'unknown'}) {lack}, so BF16 would "
            "be emulated (slower than FP32 and less exact): refused before running (build fp32, fp16 or int8 for it)")
