"""devices.yaml: the user's inventory of devices, and `resolve(spec)` -> a Device.

    devices:
      - name: pi5
        kind: ssh                 # local | ssh | qemu | adb
        host: 192.168.1.40
        user: pi
        port: 22
        key_file: ~/.ssh/id_ed25519     # else the agent's keys
        known_hosts: ~/.ssh/known_hosts # host keys are always checked against it
        workdir: /tmp/edgepack
        python: /home/pi/venv/bin/python
        affinity: "2-3"            # taskset -c
        env: {OMP_WAIT_POLICY: PASSIVE}

Found in this order: `--devices FILE`, $EDGEPACK_DEVICES, ./devices.yaml,
~/.config/edgepack/devices.yaml. On the command line a device is a name from that file,
`local`, `qemu` (the emulated ARM64 board), or `ssh://user@host[:port]`.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgepack.errors import EdgepackError, close_names, excerpt
from edgepack.schema import condense

BUILTIN = ("local", "qemu")


class DeviceEntry(BaseModel):
    """One device of devices.yaml."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    kind: Literal["local", "ssh", "qemu", "adb"]
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    user: str | None = None
    key_file: str | None = None
    known_hosts: str | None = None  # default: ssh's own (~/.ssh/known_hosts)
    accept_new_host_key: bool = False  # record an unknown host's key on first use (never a changed one)
    serial: str | None = None  # adb
    workdir: str | None = None  # default /tmp/edgepack (/data/local/tmp/edgepack on a phone)
    python: str | None = None  # the device's Python command (a path or a wrapper with arguments)
    env: dict[str, str] = {}
    affinity: str | None = Field(default=None, pattern=r"^[0-9]+([-,][0-9]+)*$")  # taskset -c CPU list
    emulated: bool = False  # its times are emulation's (e.g. qemu behind ssh): labelled, never latency
    benchmark_model: str | None = None  # LiteRT's benchmark_model binary on the device: runs its TFLite artifacts
    connect_timeout_s: float = Field(default=10, gt=0, le=300)

    @model_validator(mode="after")
    def _needs(self):
        if self.kind == "ssh" and not self.host:
            raise ValueError(f"device {self.name!r}: kind ssh needs host")
        return self


class DevicesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    devices: list[DeviceEntry] = []

    @model_validator(mode="after")
    def _unique(self):
        names = [d.name for d in self.devices]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"device names must be unique: {', '.join(dup)}")
        return self


@dataclass(frozen=True)
class DeviceOptions:
    """Which devices a compile or profile also runs on (`--device`, repeatable), and how they
    are looked up and trusted."""

    names: tuple[str, ...] = ()
    file: str | None = None
    accept_new_host_key: bool = False

    def resolve(self) -> list:
        return [resolve(n, self.file, self.accept_new_host_key) for n in self.names]


def find_devices_file(explicit: str | Path | None = None) -> Path | None:
    """The devices.yaml in use (lookup order in the module doc), or None."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise EdgepackError(f"{explicit}: no such devices file")
        return path
    env = os.environ.get("EDGEPACK_DEVICES")
    if env:
        if not Path(env).expanduser().is_file():
            raise EdgepackError(f"EDGEPACK_DEVICES={env}: no such devices file")
        return Path(env).expanduser()
    for path in (Path("devices.yaml"), Path.home() / ".config" / "edgepack" / "devices.yaml"):
        if path.is_file():
            return path
    return None


def load_devices(path: str | Path | None = None) -> list[DeviceEntry]:
    """The devices of the devices file in use ([] when there is none)."""
    found = find_devices_file(path)
    if found is None:
        return []
    try:
        data = yaml.safe_load(found.read_text()) or {}
    except yaml.YAMLError as e:
        raise EdgepackError(f"{found}: not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise EdgepackError(f"{found}: expected a mapping with a `devices:` list, got {type(data).__name__}")
    try:
        return DevicesFile.model_validate(data).devices
    except ValidationError as e:
        raise EdgepackError(f"{found}: {condense(e, DevicesFile)}") from None


def parse_ssh_url(spec: str, accept_new_host_key: bool = False) -> DeviceEntry:
    """ssh://user@host[:port][/workdir] as a device entry named by the URL."""
    url = urlsplit(spec)
    try:
        port = url.port
    except ValueError:
        raise EdgepackError(f"{excerpt(spec)}: bad port") from None
    if not url.hostname:
        raise EdgepackError(f"{excerpt(spec)}: expected ssh://user@host[:port]")
    return DeviceEntry(name=spec, kind="ssh", host=url.hostname, user=url.username, port=port,
                       workdir=url.path if url.path not in ("", "/") else None,
                       accept_new_host_key=accept_new_host_key)


def resolve(spec: str | None, devices_file: str | Path | None = None, accept_new_host_key: bool = False):
    """The Device `spec` names: an ssh:// URL, a devices.yaml name, "local" (also when None) or "qemu"."""
    spec = "local" if spec is None else str(spec).strip()
    if spec.startswith("ssh://"):
        return build(parse_ssh_url(spec, accept_new_host_key))
    entries = load_devices(devices_file)
    for entry in entries:
        if entry.name == spec:
            return build(entry.model_copy(update={"accept_new_host_key": True}) if accept_new_host_key else entry)
    if spec in BUILTIN:
        return build(DeviceEntry(name=spec, kind=spec))
    known = [e.name for e in entries] + list(BUILTIN)
    where = f" in {find_devices_file(devices_file)}" if entries else " (no devices.yaml found)"
    raise EdgepackError(f"unknown device {excerpt(spec, 80)}{close_names(spec, known)}{where}; "
                        f"known: {', '.join(known)}, or ssh://user@host[:port]")


def build(entry: DeviceEntry):
    """A RemoteDevice for one entry: its transport, its Python, its work folder."""
    from edgepack.devices.remote import RemoteDevice

    python = tuple(shlex.split(entry.python)) if entry.python else ("python3",)
    common = {"name": entry.name, "kind": entry.kind, "env": dict(entry.env), "affinity": entry.affinity,
              "emulated": entry.emulated, "benchmark_model": entry.benchmark_model}
    if entry.kind == "ssh":
        from edgepack.devices.ssh import SshTransport

        transport = SshTransport(entry.host, entry.user, entry.port, entry.key_file, entry.known_hosts,
                                 entry.accept_new_host_key, name=entry.name, connect_timeout_s=entry.connect_timeout_s)
        return RemoteDevice(transport=transport, workdir=entry.workdir or "/tmp/edgepack", python=python, **common)
    if entry.kind == "adb":
        return _adb(entry, python, common)
    return _on_this_machine(entry, python, common)


def _on_this_machine(entry: DeviceEntry, python: tuple, common: dict):
    """"local" (this host's Python in a fresh process) or "qemu" (the emulated ARM64 board)."""
    import tempfile

    from edgepack.devices.remote import RemoteDevice
    from edgepack.devices.transports import LocalTransport

    if entry.kind == "qemu":
        from edgepack.board import ensure_board

        board = ensure_board()
        workdir = entry.workdir or str(board.root / "tmp" / "jobs")
        common.update(emulated=True, name="qemu-aarch64" if entry.name == "qemu" else entry.name)
        return RemoteDevice(transport=LocalTransport(common["name"], board.env()), workdir=workdir,
                            python=tuple(board.command()), **common)
    workdir = entry.workdir or str(Path(tempfile.gettempdir()) / "edgepack-local-jobs")
    return RemoteDevice(transport=LocalTransport(entry.name), workdir=workdir,
                        python=python if entry.python else (sys.executable,), **common)


def _adb(entry: DeviceEntry, python: tuple, common: dict):
    from edgepack.devices.adb import ROOT, AdbTransport
    from edgepack.devices.remote import RemoteDevice

    workdir = entry.workdir or ROOT
    return RemoteDevice(transport=AdbTransport(entry.serial, root=workdir), workdir=workdir, python=python, **common)

