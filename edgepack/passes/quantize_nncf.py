"""NNCF's post-training quantization of the ONNX graph behind the Quantizer interface (`model`,
`quantize(keep_float)`), so edgepack's accuracy control can return NNCF's layers to float just as
it does its own. NNCF brings what onnxruntime.quantization lacks (its range estimators and fast
bias correction: on MobileNetV2, all layers INT8, top-1 agreement 0.85 against 0.70); its output
is QDQ ONNX that ONNX Runtime and OpenVINO both run."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import onnx

from edgepack.errors import EdgepackError, first_line
from edgepack.logutil import quiet
from edgepack.passes.quantize import Quantizer


@dataclass(frozen=True)
class NncfConfig:
    """How NNCF is run: each configuration is one candidate of the INT8 search, named in the report."""

    label: str
    fast_bias_correction: bool = True  # False: NNCF's full bias correction (slower, layer by layer)
    histogram_ranges: bool = False  # activation ranges from histograms instead of NNCF's min/max


DEFAULT = NncfConfig("static QDQ (NNCF: its ranges + bias correction)")


class NncfQuantizer:
    """Same model, calibration data and profile as an edgepack Quantizer; the profile picks the
    preset (symmetric activations: PERFORMANCE, else MIXED) and the weights' range: 7-bit on every
    layer where it says reduce_range (x86 without VNNI saturates 8-bit products), full 8-bit
    elsewhere (NNCF's default narrows the first layer only); `config` the rest. Raises ImportError
    without nncf."""

    def __init__(self, quantizer: Quantizer, subset_size: int = 300, config: NncfConfig = DEFAULT):
        import nncf
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
        from nncf.quantization.range_estimator import RangeEstimatorParameters, RangeEstimatorParametersSet

        self.model, self.config = quantizer.model, config
        scheme = quantizer.profile.quantization
        self.preset = nncf.QuantizationPreset.PERFORMANCE if scheme.activations.symmetric else nncf.QuantizationPreset.MIXED
        self.advanced = AdvancedQuantizationParameters(
            overflow_fix=OverflowFix.ENABLE if scheme.reduce_range else OverflowFix.DISABLE,
            activations_range_estimator_params=(RangeEstimatorParametersSet.HISTOGRAM if config.histogram_ranges
                                                else RangeEstimatorParameters()))
        self.feeds = list(quantizer.calib.batches(quantizer.batch))
        self.excluded = quantizer.excluded  # the profile's float op types (Softmax on arm64) too
        self.subset_size = min(subset_size, len(self.feeds))

    def quantize(self, keep_float: list[str] = ()) -> onnx.ModelProto:
        import nncf

        names = self.excluded(keep_float)
        # validate=False: a name NNCF would not have quantized anyway (e.g. a Flatten) is no error
        scope = nncf.IgnoredScope(names=names, validate=False) if names else None
        try:
            # its progress bars are not ours to print; its log level is restored after
            with contextlib.redirect_stdout(io.StringIO()), quiet("nncf"):
                return nncf.quantize(self.model, nncf.Dataset(self.feeds), preset=self.preset,
                                     subset_size=self.subset_size, ignored_scope=scope,
                                     fast_bias_correction=self.config.fast_bias_correction,
                                     advanced_parameters=self.advanced)
        except Exception as e:
            raise EdgepackError(f"NNCF quantization failed: {type(e).__name__}: {first_line(e)}")


# The search's NNCF candidates. Preset MIXED + full bias correction + histogram activation ranges
# was measured on MobileNetV2 with photos disjoint from calibration (benchmarks/int8_fidelity.py,
# results/int8_fidelity.md): lower agreement and cosine than DEFAULT at 2.3x its quantization
# time, so it is not one of them.
NNCF_CONFIGS = (DEFAULT,)
