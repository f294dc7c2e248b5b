"""Quantization-aware training with PyTorch 2 export quantization (torchao PT2E), in the target
profile's INT8 scheme, exported as the QDQ ONNX graph every backend takes.

torch 2.13 no longer ships PT2E under torch.ao; torchao does. X86InductorQuantizer is used only
as the *annotator* (which conv/linear/pool/add patterns get fake-quant); the dtypes, symmetry and
granularity come from the profile, so an arm64 profile gets int8 activations, x86 uint8.
"""

from __future__ import annotations

import contextlib
import functools
import io
import warnings
from dataclasses import dataclass, field

import onnx
import torch
from torch import nn

from edgepack.errors import EdgepackError, first_line
from edgepack.logutil import quiet
from edgepack.training.data import arrays, as_loader
from edgepack.training.loop import SoftTargets, TrainConfig, accuracy, train

TORCH_DTYPES = {"uint8": (torch.uint8, 0, 255), "int8": (torch.int8, -128, 127)}


@dataclass
class QatResult:
    onnx_model: onnx.ModelProto  # QDQ graph, batch 1
    fake_quant_val: float  # validation accuracy of the fake-quant torch model
    onnx_val: float  # the same, of the exported ONNX graph in ONNX Runtime
    agreement: float  # share of validation samples where both predict the same class
    training: dict = field(default_factory=dict)
    scheme: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {"scheme": self.scheme, "fake_quant_val": self.fake_quant_val, "onnx_val": self.onnx_val,
                "fake_quant_vs_onnx_agreement": self.agreement, "training": self.training}


@functools.cache
def _load_torchao() -> None:
    """Import torchao once, quietly: its CUDA-only kernels fail to load on a CPU build (harmless
    for PT2E, which is pure Python) and say so at WARNING level on every import."""
    with _quiet():  # torch's and torchao's loggers, restored after
        import torchao  # noqa: F401


def quantization_config(quant):
    """A PT2E QuantizationConfig from a profile's `quantization` section (QAT fake-quant)."""
    _load_torchao()
    from torchao.quantization.pt2e import (FusedMovingAvgObsFakeQuantize, MovingAverageMinMaxObserver,
                                           MovingAveragePerChannelMinMaxObserver)
    from torchao.quantization.pt2e.quantizer import QuantizationSpec
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import QuantizationConfig

    act_dtype, act_min, act_max = TORCH_DTYPES[quant.activations.dtype]
    act = QuantizationSpec(
        dtype=act_dtype, quant_min=act_min, quant_max=act_max,
        qscheme=torch.per_tensor_symmetric if quant.activations.symmetric else torch.per_tensor_affine,
        observer_or_fake_quant_ctr=FusedMovingAvgObsFakeQuantize.with_args(
            observer=MovingAverageMinMaxObserver, eps=2 ** -12))
    w_dtype, w_min, w_max = TORCH_DTYPES[quant.weights.dtype]
    if quant.reduce_range:  # 7-bit weights, as ONNX Runtime's reduce_range does for AVX2 U8S8
        w_min, w_max = w_min // 2, w_max // 2
    per_channel = quant.weights.per_channel
    weight = QuantizationSpec(
        dtype=w_dtype, quant_min=w_min, quant_max=w_max, ch_axis=0,
        qscheme=(torch.per_channel_symmetric if per_channel else torch.per_tensor_symmetric)
        if quant.weights.symmetric else (torch.per_channel_affine if per_channel else torch.per_tensor_affine),
        observer_or_fake_quant_ctr=FusedMovingAvgObsFakeQuantize.with_args(
            observer=MovingAveragePerChannelMinMaxObserver if per_channel else MovingAverageMinMaxObserver,
            eps=2 ** -12))
    return QuantizationConfig(act, act, weight, None, True)


def quantize_aware(model: nn.Module, train_data, val_data, quant, cfg: TrainConfig | None = None,
                   teacher: nn.Module | None = None, progress=None,
                   soft_targets: SoftTargets | None = None) -> QatResult:
    """Fake-quantize `model` in the profile's scheme, fine-tune it, convert, export QDQ ONNX and
    check the ONNX graph's accuracy against the fake-quant model's. `soft_targets`: the flow's
    cache of the teacher's logits (None: computed for this call)."""
    _load_torchao()
    from torchao.quantization.pt2e import (disable_observer, enable_observer, move_exported_model_to_eval,
                                           move_exported_model_to_train)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import X86InductorQuantizer

    cfg = cfg or TrainConfig(epochs=1, lr=1e-4, optimizer="sgd", schedule="cosine")
    train_loader = as_loader(train_data, cfg.batch_size, shuffle=True, seed=cfg.seed)
    val_loader = as_loader(val_data, 256)
    x, _ = next(iter(val_loader))
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    with _quiet():
        try:
            exported = torch.export.export(model.train(), (x[:2],), dynamic_shapes=({0: batch},)).module()
        except Exception as e:
            raise EdgepackError(f"torch.export cannot trace the model for QAT: {first_line(e)}")
        annotator = X86InductorQuantizer().set_global(quantization_config(quant))
        prepared = prepare_qat_pt2e(exported, annotator)
    def set_train(m):  # ranges follow the training batches...
        move_exported_model_to_train(m)
        m.apply(enable_observer)

    def set_eval(m):  # ...and are frozen whenever the model is judged: judged = what converts
        move_exported_model_to_eval(m)
        m.apply(disable_observer)

    _calibrate(prepared, train_loader)
    tuned = train(prepared, train_loader, val_loader, cfg, teacher=teacher, progress=progress,
                  modes=(set_train, set_eval), soft_targets=soft_targets)
    fake_val = accuracy(prepared, val_loader, set_eval)
    with _quiet():
        converted = convert_pt2e(prepared)
        proto = _export_onnx(converted, x[:1])
    onnx_val, agree = _check_onnx(proto, converted, val_loader)
    scheme = {"weights": quant.weights.model_dump(), "activations": quant.activations.model_dump(),
              "reduce_range": quant.reduce_range, "by": "torchao PT2E prepare_qat_pt2e / convert_pt2e"}
    return QatResult(proto, fake_val, onnx_val, agree, tuned.summary(), scheme)


@torch.no_grad()
def _calibrate(prepared, loader, batches: int = 16) -> None:
    """Start from calibrated ranges (as PTQ would), not the observers' empty defaults: fine-tuning
    then only adjusts them, and zero epochs of QAT is plain PTQ in the same scheme."""
    from torchao.quantization.pt2e import enable_observer, move_exported_model_to_eval

    move_exported_model_to_eval(prepared)
    prepared.apply(enable_observer)
    for i, (x, *_) in enumerate(loader):
        if i == batches:
            break
        prepared(x)


def _export_onnx(converted, example: torch.Tensor) -> onnx.ModelProto:
    """The converted graph's quantize/dequantize ops become ONNX QuantizeLinear/DequantizeLinear."""
    try:
        program = torch.export.export(converted, (example,))
        onnx_program = torch.onnx.export(program, (example,), dynamo=True, verbose=False,
                                         input_names=["input"])
    except Exception as e:
        raise EdgepackError(f"QAT model -> ONNX export failed: {first_line(e)}")
    return onnx_program.model_proto


@torch.no_grad()
def _check_onnx(proto: onnx.ModelProto, converted, val_loader) -> tuple[float, float]:
    """ONNX Runtime accuracy of the exported graph, and its agreement with the torch model."""
    from edgepack.runtime import predict

    x, y = arrays(val_loader)
    got = predict(proto, x)
    ref = torch.cat([converted(b).argmax(1) for b in torch.from_numpy(x).split(256)]).numpy()
    return float((got == y).mean()), float((got == ref).mean())


@contextlib.contextmanager
def _quiet():
    """torch.export / torch.onnx print progress and deprecation chatter: keep the terminal ours."""
    with quiet("torch", "torchao"), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield
