"""The fidelity yardstick: agreement on all inputs and on non-near-ties, logit cosine; and the
judge's samples held out of calibration when no --eval set is given."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import edgepack
from edgepack.compiler.inputs import HOLDOUT_BLOCKS, hold_out
from edgepack.data import Dataset, load_dataset
from edgepack.frontends import load_source
from edgepack.ir.canonical import canonicalize
from edgepack.ir.spec import graph_inputs
from edgepack.passes.metrics import NEAR_TIE_MARGIN, Evaluator
from edgepack.passes.quantize import Quantizer
from edgepack.runtime import ort_runner
from edgepack.targets import load_profile

from helpers import PinnedTiming, agreement, conv_relu, cosine, logits


@pytest.fixture(scope="module")
def mnist_canonical(mnist_model):
    model, _ = mnist_model
    return canonicalize(load_source(model, {"": (1, 1, 28, 28)}).model)[0]


def test_fidelity_figures_on_a_real_cnn(mnist_canonical, sample_sets):
    """MNIST CNN, FP32 against its INT8 graph on real digits: the figures are the ones computed
    here independently, and the near-ties are exactly the digits whose FP32 margin is < 0.25."""
    specs = graph_inputs(mnist_canonical)
    calib = load_dataset(sample_sets["mnist_calib"], specs).take(64)
    data = load_dataset(sample_sets["mnist_eval"], specs).take(300)
    fp32, int8 = ort_runner(mnist_canonical), ort_runner(Quantizer(mnist_canonical, calib, load_profile("x86-vnni"))
                                                         .quantize())
    evaluator = Evaluator.build("cosine", data, 1, fp32)
    ref, got = logits(fp32, data.batches(1)), logits(int8, data.batches(1))
    top2 = np.sort(ref, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] >= NEAR_TIE_MARGIN
    figures = evaluator.fidelity(int8)
    assert figures["samples"] == 300 and figures["near_tie_margin"] == NEAR_TIE_MARGIN
    assert figures["non_near_ties"] == int(clear.sum()) and 0 < clear.sum() < 300  # both kinds occur
    assert figures["agreement"] == pytest.approx(agreement(ref, got))
    assert figures["agreement_non_near_ties"] == pytest.approx(agreement(ref, got, clear))
    assert figures["cosine"] == pytest.approx(float(cosine(ref, got).mean()), abs=1e-6)
    assert 0.9 < figures["cosine"] < 1.0  # INT8 really moved the logits
    # one pass gives the budget's metric and the figures alike
    score, same = evaluator.assess(int8)
    assert score == pytest.approx(evaluator.score(int8)) == pytest.approx(figures["cosine"]) and same == figures
    # against itself FP32 agrees everywhere
    assert evaluator.fidelity(fp32)["agreement"] == evaluator.fidelity(fp32)["agreement_non_near_ties"] == 1.0


def test_flips_on_near_ties_do_not_count_against_non_near_ties(mnist_canonical, sample_sets):
    """Real FP32 logits with the top two swapped on every near-tie: all-input agreement drops by
    exactly the near-ties' share, agreement on the others stays 1."""
    from edgepack.passes.metrics import fidelity, near_ties

    data = load_dataset(sample_sets["mnist_eval"], graph_inputs(mnist_canonical)).take(300)
    ref = logits(ort_runner(mnist_canonical), data.batches(1))
    ties = near_ties(ref)
    swapped = ref.copy()
    order = np.argsort(ref, axis=1)
    rows = np.nonzero(ties)[0]
    swapped[rows, order[rows, -1]], swapped[rows, order[rows, -2]] = ref[rows, order[rows, -2]], ref[rows, order[rows, -1]]
    figures = fidelity(ref, swapped)
    assert ties.any()
    assert figures["agreement"] == pytest.approx(1 - ties.mean()) and figures["agreement_non_near_ties"] == 1.0


@pytest.mark.parametrize("n, batch", [(60, 1), (300, 1), (64, 2), (24, 1)])
def test_hold_out_is_disjoint_deterministic_and_spread(n, batch):
    data = Dataset({"x": np.arange(n, dtype=np.float32)[:, None]}, labels=np.arange(n))
    split = hold_out(data, batch)
    calibrated, judged = set(split.calib.labels.tolist()), set(split.judged.labels.tolist())
    assert not calibrated & judged and calibrated | judged == set(range(n))
    assert judged == {i for lo, hi in split.held_out for i in range(lo, hi + 1)}
    assert len(judged) % batch == 0 and len(split.calib) >= 16 * batch
    assert len(split.held_out) == HOLDOUT_BLOCKS and split.held_out[-1][1] == n - 1  # one block per quarter
    assert [r[0] for r in split.held_out] == sorted(r[0] for r in split.held_out)
    assert np.array_equal(split.judged.inputs["x"][:, 0], split.judged.labels)  # inputs and labels cut alike
    again = hold_out(data, batch)  # deterministic
    assert again.held_out == split.held_out and np.array_equal(again.judged.labels, split.judged.labels)
    info = split.describe()
    assert info["samples"] == len(judged) and info["of"] == n


def test_a_set_too_small_to_cut_is_judged_on_calibration_inputs_and_says_so():
    data = Dataset({"x": np.zeros((20, 1), np.float32)})
    split = hold_out(data, 1)
    assert split.held_out == [] and len(split.calib) == 20 and len(split.judged) == 20
    assert "too few to hold some out" in split.describe()["note"]


def test_compile_judges_fidelity_on_samples_it_did_not_calibrate_on(tmp_path, monkeypatch):
    """Held-out samples are scaled x50: had any quantizer calibrated on them, the input's INT8
    range would be ~50x wider. Every candidate is judged on them, with the fidelity figures, and
    each NNCF configuration of the search is a candidate of its own in the report."""
    from edgepack.passes import precision
    from edgepack.passes.quantize_nncf import DEFAULT, NncfConfig

    other = NncfConfig("static QDQ (NNCF: histogram ranges + full bias correction)", fast_bias_correction=False,
                       histogram_ranges=True)
    monkeypatch.setattr(precision, "NNCF_CONFIGS", (DEFAULT, other))
    onnx.save(conv_relu(3, 8, 8), str(tmp_path / "model.onnx"))
    x = np.random.default_rng(0).standard_normal((64, 3, 8, 8)).astype(np.float32)
    held = hold_out(Dataset({"x": x}), 1).held_out
    mask = np.zeros(64, bool)
    for lo, hi in held:
        mask[lo:hi + 1] = True
    x[mask] *= 50
    np.savez(tmp_path / "calib.npz", x=x)
    r = edgepack.compile(tmp_path / "model.onnx", target="x86-vnni", backends=["onnxruntime"], precision="int8",
                         calib=tmp_path / "calib.npz", max_drop=1.0, output_dir=tmp_path / "o", runs=3, warmup=1,
                         progress=False, timing=PinnedTiming(int8_ms=0.5))
    acc, q = r["accuracy"], r["quantization"]
    assert acc["held_out"]["ranges"] == [list(h) for h in held] and acc["samples"] == acc["held_out"]["samples"] == 16
    assert q["calibration"]["samples"] == 48
    assert {c["format"] for c in q["format_candidates"]} >= {DEFAULT.label, other.label}
    for c in q["format_candidates"]:
        assert "error" not in c, c
        assert c["fidelity"]["samples"] == 16 and c["fidelity"]["cosine"] == pytest.approx(c["score"]), c
        assert c["seconds"] > 0
    assert q["fidelity"]["cosine"] == pytest.approx(q["int8_score"])
    assert r["artifacts"][0]["fidelity"]["samples"] == 16
    shipped = onnx.load(str(tmp_path / "o" / r["artifacts"][0]["path"]))
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in shipped.graph.initializer}
    scale = next(float(inits[n.input[1]]) for n in shipped.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "x")
    calibrated = x[~mask]
    assert scale * 255 <= 1.01 * (calibrated.max() - min(calibrated.min(), 0))  # no held-out sample widened it
    assert "non-near-ties" in (tmp_path / "o" / "report.md").read_text()
