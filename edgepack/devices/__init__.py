"""Devices: where an artifact runs (this host in a fresh process, the emulated ARM64 board, a
board over SSH: `resolve("pi5" | "ssh://user@host:port" | "local" | "qemu")`, see devices/config.py).

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
from edgepack.devices.base import Device, DeviceLost
from edgepack.devices.config import DeviceOptions, load_devices, resolve
from edgepack.devices.local import LocalDevice
from edgepack.devices.qemu import QemuDevice

__all__ = ["Device", "DeviceLost", "DeviceOptions", "LocalDevice", "QemuDevice", "for_artifact", "load_devices",
           "resolve"]


def for_artifact(backend: str, artifact: str | Path) -> Device:
    """The device an artifact runs on: the emulated board when its backend says it was
    cross-compiled for another architecture, this host otherwise."""
    if get_backend(backend).cross_compiled(Path(artifact)):
        return QemuDevice()
    return LocalDevice()

