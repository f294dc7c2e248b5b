"""The torch stages on real MNIST digits: distillation, iterative pruning, QAT -> QDQ ONNX."""

from __future__ import annotations

import onnx
import pytest
import torch

from edgepack.errors import EdgepackError
from edgepack.models.mnist_cnn import MnistCNN
from edgepack.targets import load_profile
from edgepack.training import checkpoint
from edgepack.training.distill import distill
from edgepack.training.data import as_loader
from edgepack.training.loop import SoftTargets, TrainConfig, accuracy, distillation_loss
from edgepack.training.prune import PruneSchedule, prune_iteratively
from edgepack.training.qat import quantize_aware


def _top1(model, split) -> float:
    with torch.no_grad():
        return float((model.eval()(torch.from_numpy(split[0])).argmax(1).numpy() == split[1]).mean())


def test_distillation_loss_is_hinton():
    torch.manual_seed(0)
    s, t, y = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
    ce = torch.nn.functional.cross_entropy(s, y)
    assert torch.allclose(distillation_loss(s, t, y, 4.0, 0.0), ce)
    # identical logits: the soft term vanishes at any temperature
    assert torch.allclose(distillation_loss(s, s, y, 3.0, 1.0), torch.tensor(0.0), atol=1e-6)
    # T^2 scaling: the soft term grows with T for the same logits, it does not shrink as 1/T^2
    assert distillation_loss(s, t, y, 4.0, 1.0) > 0.5 * distillation_loss(s, t, y, 1.0, 1.0)


def test_distilled_student_learns_and_keeps_best_epoch(mnist_teacher, mnist_flow_splits):
    teacher, _ = mnist_teacher
    train, val, test = mnist_flow_splits
    torch.manual_seed(0)  # the same student whichever tests ran before
    result = distill(teacher, MnistCNN(16), train, val, TrainConfig(epochs=3, lr=5e-3))
    assert result.best_val == max(h["val_accuracy"] for h in result.history)
    assert accuracy(result.model, as_loader(val, 256)) == result.best_val  # the best epoch's weights came back
    assert _top1(result.model, test) > 0.75, result.summary()  # 24K parameters, 1,600 digits, 3 epochs
    with pytest.raises(EdgepackError, match="differ in shape"):
        distill(teacher, torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 5)), train, val)


def test_teacher_runs_once_per_weights_and_inputs(mnist_teacher, mnist_flow_splits):
    """A flow trains with the same frozen teacher and data in every stage: its logits are reused;
    new weights or new inputs are run again."""
    teacher, _ = mnist_teacher
    x = torch.from_numpy(mnist_flow_splits[0][0][:300])
    runs = []
    soft_targets = SoftTargets().logits  # one flow's cache
    hook = teacher.register_forward_hook(lambda *_: runs.append(1))
    try:
        first = soft_targets(teacher, x)
        assert soft_targets(teacher, x.clone()) is first and len(runs) == 2  # 300 = 256 + 44: one pass
        assert torch.allclose(first, teacher(x)) and len(runs) == 3
        assert soft_targets(teacher, x[:100]).shape == (100, 10) and len(runs) == 4  # other inputs
        edited = MnistCNN(32)
        edited.load_state_dict(teacher.state_dict())
        with torch.no_grad():
            edited.head[-1].bias += 1.0
        assert torch.allclose(soft_targets(edited, x), first + 1.0, atol=1e-5)  # other weights
    finally:
        hook.remove()


def test_training_takes_npz_of_any_numeric_dtype(tmp_path, mnist_flow_splits):
    """Pixels saved as uint8 or float64 train as float32; non-integer labels are one clear line."""
    import numpy as np

    from edgepack.data import save_npz
    from edgepack.training.data import arrays

    x, y = mnist_flow_splits[1]
    save_npz(tmp_path / "f64.npz", {"input": x.astype(np.float64)}, y)
    save_npz(tmp_path / "u8.npz", {"input": (x * 40 + 100).clip(0, 255).astype(np.uint8)}, y.astype(np.uint8))
    for name in ("f64.npz", "u8.npz"):
        xs, ys = arrays(tmp_path / name)
        assert xs.dtype == np.float32 and ys.dtype == np.int64 and xs.flags.c_contiguous
    result = distill(None, MnistCNN(8), tmp_path / "f64.npz", tmp_path / "u8.npz", TrainConfig(epochs=1))
    assert len(result.history) == 1
    save_npz(tmp_path / "soft.npz", {"input": x}, y.astype(np.float32) + 0.5)
    with pytest.raises(EdgepackError, match="integer class labels, got float32 and float32"):
        arrays(tmp_path / "soft.npz")


def test_early_stopping_after_patience(mnist_flow_splits):
    train, val, _ = mnist_flow_splits
    # a learning rate too small to change any prediction: validation never improves
    # and BatchNorm's running statistics frozen (momentum 0), which would otherwise still move
    cfg = TrainConfig(epochs=5, lr=1e-12, schedule="constant", patience=2)
    torch.manual_seed(0)
    model = MnistCNN(8)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.0
    result = distill(None, model, train, val, cfg)
    assert result.stopped_early and len(result.history) == 2  # two epochs without improvement


def test_iterative_pruning_rounds_widths_and_keeps_accuracy(mnist_teacher, mnist_flow_splits, tmp_path):
    teacher, _ = mnist_teacher
    train, val, test = mnist_flow_splits
    model = MnistCNN(32)
    model.load_state_dict(teacher.state_dict())
    before = _top1(model, test)
    schedule = PruneSchedule(ratio=0.5, steps=2, channel_multiple=8, max_drop=0.05)
    result = prune_iteratively(model, train, val, schedule, TrainConfig(epochs=1, lr=3e-3), teacher=teacher)
    assert result.steps[0]["kept"], result.summary()
    convs = [m for m in result.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.out_channels % 8 == 0 and c.out_channels < 32 * 2 ** i for i, c in enumerate(convs))
    kept = [s for s in result.steps if s["kept"]]
    assert kept[-1]["macs_ratio"] < 0.7
    # what comes back is the last kept step's model (an over-budget step is undone), within the
    # budget on validation; test may differ by a point or two
    assert accuracy(result.model, as_loader(val, 256)) == pytest.approx(kept[-1]["val_after_finetune"])
    assert _top1(result.model, test) > before - 0.07
    # the pruned widths survive a safe (weights_only) save/load into a fresh instance
    checkpoint.save(result.model, tmp_path / "pruned.pt")
    again = checkpoint.load(MnistCNN(32), tmp_path / "pruned.pt")
    x = torch.from_numpy(test[0][:4])
    assert torch.equal(again(x), result.model.eval()(x))


def test_pruning_stops_at_budget_and_returns_last_good(mnist_teacher, mnist_flow_splits):
    teacher, _ = mnist_teacher
    train, val, _ = mnist_flow_splits
    model = MnistCNN(32)
    model.load_state_dict(teacher.state_dict())
    widths = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    schedule = PruneSchedule(ratio=0.95, steps=1, max_drop=0.0)
    result = prune_iteratively(model, train, val, schedule, TrainConfig(epochs=0))
    assert result.steps[0]["kept"] is False and "kept step 0" in result.stopped
    assert [m.out_channels for m in result.model.modules() if isinstance(m, torch.nn.Conv2d)] == widths


@pytest.mark.parametrize("target, act_dtype, epochs", [("x86-vnni", onnx.TensorProto.UINT8, 1),
                                                        ("arm64", onnx.TensorProto.INT8, 0)])
def test_qat_exports_qdq_in_the_profile_scheme(mnist_teacher, mnist_flow_splits, target, act_dtype, epochs):
    from edgepack.runtime import predict

    teacher, _ = mnist_teacher
    train, val, test = mnist_flow_splits
    model = MnistCNN(32)
    model.load_state_dict(teacher.state_dict())
    result = quantize_aware(model, train, val, load_profile(target).quantization,
                            TrainConfig(epochs=epochs, lr=1e-4, optimizer="sgd", schedule="cosine"), teacher=teacher)
    graph = result.onnx_model.graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("QuantizeLinear") >= 4 and ops.count("DequantizeLinear") >= 8
    # weights stored as int8 (per channel: one scale per output channel), activations as the profile says
    inits = {i.name: i for i in graph.initializer}
    zero_points = [inits[n.input[2]] for n in graph.node if n.op_type == "QuantizeLinear" and n.input[2] in inits]
    assert zero_points and all(z.data_type == act_dtype for z in zero_points)
    assert any(i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 4 for i in graph.initializer)
    # the exported graph agrees with the fake-quant model it came from, and keeps the accuracy
    assert result.agreement >= 0.98
    assert abs(result.onnx_val - result.fake_quant_val) <= 0.01
    pred = predict(result.onnx_model, test[0][:300])
    assert (pred == test[1][:300]).mean() > _top1(teacher, (test[0][:300], test[1][:300])) - 0.03
