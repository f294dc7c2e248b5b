"""Can this device run that artifact? Asked of the device's probe before anything is sent.

One check for every caller: a profile or compile on a device (devices/remote.py, from the
backend's own description of the artifact) and `edgepack verify` (from the bundle's manifest).
"""

from __future__ import annotations

import re
import shlex

from edgepack.hostinfo import arch_name


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
            reason: str | None = None, artifact: str = "the artifact") -> str | None:
    """Why `device` (its probe answer `env`) cannot run an artifact built for `arch` ("any" or
    None: portable) with one of the pip `packages` (the first is the one to install) at version
    `minimum` or later; None when it can. The line names what to install."""
    have_arch = arch_name(env.get("arch"))
    if arch and arch != "any" and have_arch and arch_name(arch) != have_arch:
        return (f"{device} is {have_arch}, {artifact} is built for {arch_name(arch)}: refused before running "
                "(compile for this device's target, or pick a device of that architecture)")
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
