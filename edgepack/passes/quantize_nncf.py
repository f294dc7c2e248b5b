"""NNCF's post-training quantization of the ONNX graph behind the Quantizer interface (`model`,
`quantize(keep_float)`), so edgepack's accuracy control can return NNCF's layers to float just as
it does its own. NNCF brings what onnxruntime.quantization lacks (its range estimators and fast
bias correction: on MobileNetV2, all layers INT8, top-1 agreement 0.85 against 0.70); its output
is QDQ ONNX that ONNX Runtime and OpenVINO both run."""

from __future__ import annotations

import contextlib
import io

import onnx

from edgepack.errors import EdgepackError, first_line
from edgepack.logutil import quiet
from edgepack.passes.quantize import Quantizer


class NncfQuantizer:
    """Same model, calibration data and profile as an edgepack Quantizer; the profile picks the
    preset (symmetric activations: PERFORMANCE, else MIXED) and the weights' range: 7-bit on every
    layer where it says reduce_range (x86 without VNNI saturates 8-bit products), full 8-bit
    elsewhere (NNCF's default narrows the first layer only). Raises ImportError without nncf."""

    def __init__(self, quantizer: Quantizer, subset_size: int = 300):
        import nncf
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

        self.model = quantizer.model
        scheme = quantizer.profile.quantization
        self.preset = nncf.QuantizationPreset.PERFORMANCE if scheme.activations.symmetric else nncf.QuantizationPreset.MIXED
        self.advanced = AdvancedQuantizationParameters(
            overflow_fix=OverflowFix.ENABLE if scheme.reduce_range else OverflowFix.DISABLE)
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
                                     advanced_parameters=self.advanced)
        except Exception as e:
            raise EdgepackError(f"NNCF quantization failed: {type(e).__name__}: {first_line(e)}")
