"""What one compile holds while it runs: built once from the request, read by every step.

Everything a step needs that is not the model itself lives here, passed in, never global:
the target profile, the chosen runtimes, the resolved benchmark settings, where events go and
how candidates are timed (an injected strategy: tests pin it instead of patching functions).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgepack.backends import get_backend
from edgepack.compiler.request import BenchSettings, CompileRequest
from edgepack.events import Events
from edgepack.frontends import Source
from edgepack.passes.quantize import IgnoredScope
from edgepack.runtime import Timing
from edgepack.targets import TargetProfile


@dataclass(frozen=True)
class Compilation:
    req: CompileRequest
    profile: TargetProfile
    backends: tuple[str, ...]
    bench: BenchSettings  # resolved against the profile: no None left
    scope: IgnoredScope
    source: Source
    outdir: Path
    events: Events
    timing: Timing
    devices: tuple = ()  # the devices each artifact is also measured on (--device), probed already

    def backend(self, name: str):
        """Runtime `name` with the options the target profile gives it (e.g. TVM's target)."""
        return get_backend(name, self.profile.backend_options(name))

    @property
    def exploring(self) -> bool:
        """Runtimes edgepack chose (--backend auto, or the target's defaults): one that cannot take
        the model is reported, not fatal. Runtimes the user named must all build."""
        return self.req.backends is None or self.req.backends == ("auto",)

    @property
    def insist_int8(self) -> bool:
        return self.req.quant.precision == "int8"
