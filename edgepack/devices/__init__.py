"""Devices: where an artifact runs (this host in a fresh process, the emulated ARM64 board).

    device = for_artifact(backend, artifact)
    device.outputs(backend, artifact, feeds)           # parity, accuracy
    device.time(backend, artifact, feeds, threads, warmup, runs)
    device.latency_is_real                               # False: emulated, never reported as latency
    device.probe()                                       # arch, CPU, runtimes: asked before sending work
    resolve("qemu")                                      # a device by its --device name
"""

from __future__ import annotations

from pathlib import Path

from edgepack.backends import get_backend
from edgepack.devices.base import Device
from edgepack.devices.local import LocalDevice
from edgepack.devices.qemu import QemuDevice
from edgepack.errors import EdgepackError, close_names

__all__ = ["Device", "LocalDevice", "QemuDevice", "for_artifact", "resolve"]

# the devices every machine has; devices.yaml and ssh:// addresses extend this
BUILTIN = {"local": LocalDevice, "qemu": QemuDevice, "qemu-aarch64": QemuDevice}


def for_artifact(backend: str, artifact: str | Path) -> Device:
    """The device an artifact runs on: the emulated board when its backend says it was
    cross-compiled for another architecture, this host otherwise."""
    if get_backend(backend).cross_compiled(Path(artifact)):
        return QemuDevice()
    return LocalDevice()


def resolve(spec: str | None, devices_file: str | Path | None = None) -> Device:
    """The device named `spec` on the command line (--device): "local" (this host, the default)
    or "qemu" / "qemu-aarch64" (the emulated ARM64 board). `devices_file` is for a devices.yaml
    inventory, which this build does not read yet."""
    name = (spec or "local").strip()
    if name in BUILTIN:
        return BUILTIN[name]()
    if devices_file is not None or name.startswith("ssh://"):
        raise EdgepackError(f"device {name[:200]!r}: devices.yaml and ssh:// devices are not supported by this "
                            f"build; available: {', '.join(BUILTIN)}")
    raise EdgepackError(f"unknown device {name[:200]!r}{close_names(name, BUILTIN)}; available: {', '.join(BUILTIN)}")
