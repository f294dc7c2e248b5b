"""Numbers that cannot lie (issue 12, item 5) and signals that are honoured (item 3).

NaN/Inf in weights, data or outputs is reported or refused, labels are checked against the
model's classes, numeric options refuse NaN and out-of-range values, and a SIGTERM swallowed by a
library (OpenVINO's converter has bare `except:` clauses) still ends the compile with 130 and no output.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from helpers import ROOT, conv_relu, message_lines, run_cli

from edgepack.errors import EdgepackError

NAN, INF = float("nan"), float("inf")


def _one_error(proc, *words) -> str:
    """The run failed with exactly one `edgepack: error:` line (no traceback) holding `words`."""
    lines = message_lines(proc.stderr)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("edgepack: error: "), lines
    assert "Traceback" not in proc.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def _nan_model(path):
    """conv_relu with one NaN and one Inf weight: it outputs NaN whatever it is fed."""
    m = conv_relu(3, 4, 8)
    w = numpy_helper.to_array(m.graph.initializer[0]).copy()
    w[0, 0, 0, 0], w[1, 0, 0, 0] = np.nan, np.inf
    m.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, "w"))
    onnx.save(m, str(path))
    return path


# --------------------------------------------------------------------------- parity over NaN/Inf outputs

def test_parity_reports_nan_outputs_instead_of_zero_difference():
    from edgepack.verify import compare_outputs

    ref = [[np.full((2, 10), np.nan, np.float32)]]
    got = [[np.full((2, 10), np.nan, np.float32)]]
    p = compare_outputs(ref, got)
    assert math.isnan(p["max_abs_diff"]) and math.isnan(p["mean_abs_diff"])
    assert p["top1_agreement"] == 0.0  # all-NaN rows "agreed" on argmax 0 before
    assert math.isnan(p["cosine_min"])
    assert p["nonfinite"] == {"reference": 20, "candidate": 20}


def test_parity_inf_in_candidate_only():
    from edgepack.verify import compare_outputs

    ref = np.zeros((1, 10), np.float32)
    ref[0, 3] = 1
    got = ref.copy()
    got[0, 5] = np.inf
    p = compare_outputs([[ref], [ref]], [[ref], [got]])
    assert p["max_abs_diff"] == INF and p["top1_agreement"] == 0.5
    assert p["nonfinite"] == {"reference": 0, "candidate": 1}
    assert "nonfinite" not in compare_outputs([[ref]], [[ref]])  # finite outputs: no new key


def test_parity_json_writes_nonfinite_as_null_with_the_count():
    from edgepack.report.markdown import parity_text
    from edgepack.report.schema import Parity
    from edgepack.verify import compare_outputs

    p = Parity(**compare_outputs([[np.ones((1, 4))]], [[np.array([[1, np.nan, 1, 1]])]]))
    js = p.to_json()
    text = json.dumps(js, allow_nan=False)  # valid JSON: no NaN literal
    assert js["max_abs_diff"] is None and js["nonfinite"] == {"reference": 0, "candidate": 1}
    back = Parity.model_validate(json.loads(text))
    assert "non-finite" in parity_text(back) and "NaN/Inf outputs" in parity_text(back)
    assert "nan" in parity_text(p)


# --------------------------------------------------------------------------- non-finite weights and data

def test_nonfinite_weights_are_named():
    from edgepack.verify import nonfinite_weights

    m = conv_relu(3, 4, 8)
    assert nonfinite_weights(m) == []
    w = numpy_helper.to_array(m.graph.initializer[0]).copy()
    w[0, 0, 0, :2] = np.nan
    w[1, 0, 0, 0] = -np.inf
    m.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, "w"))
    assert nonfinite_weights(m) == ["'w' (2 NaN, 1 Inf)"]


def test_compile_refuses_nan_weights_in_one_line(tmp_path):
    model = _nan_model(tmp_path / "nan.onnx")
    proc = run_cli("compile", model, "-o", tmp_path / "out", "--no-progress", cwd=tmp_path)
    _one_error(proc, "'w' (1 NaN, 1 Inf)", "NaN or Inf")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_data_is_refused_naming_file_and_input(tmp_path, bad):
    from edgepack.data import load_dataset
    from edgepack.ir.spec import graph_inputs

    x = np.zeros((5, 3, 8, 8), np.float32)
    x[3, 0, 1, 1] = bad
    path = tmp_path / "calib.npz"
    np.savez(path, x=x)
    with pytest.raises(EdgepackError, match=r"calib\.npz: input 'x' holds NaN or Inf values in 1 of 5 samples "
                                            r"\(first: sample 3\)"):
        load_dataset(path, graph_inputs(conv_relu(3, 4, 8)))


def test_nonfinite_training_inputs_are_refused():
    from edgepack.training.data import arrays

    x = np.zeros((4, 2), np.float32)
    x[1, 1] = np.nan
    with pytest.raises(EdgepackError, match="NaN or Inf"):
        arrays((x, np.zeros(4, np.int64)))


# --------------------------------------------------------------------------- labels

def _evaluator(labels, metric="top1"):
    from edgepack.data import Dataset
    from edgepack.passes.metrics import Evaluator

    n = len(labels)
    data = Dataset({"x": np.zeros((n, 4), np.float32)}, np.asarray(labels), "eval.npz")
    return Evaluator.build(metric, data, 1, _ten_classes)  # the FP32 reference: fidelity is reported beside


def _ten_classes(feed):
    return [np.arange(10, dtype=np.float32)[None, :]]


@pytest.mark.parametrize("labels", [[1, 50, 2], [1, -3, 2], [1000, 2, 3]])
def test_labels_outside_the_class_count_are_refused(labels):
    bad = [v for v in labels if not 0 <= v < 10]
    with pytest.raises(EdgepackError, match=rf"eval\.npz: labels must be class indices in \[0, 10\).*found {bad[0]}"):
        _evaluator(labels).score(_ten_classes)
    assert _evaluator([1, 2, 9]).score(_ten_classes) == pytest.approx(1 / 3)


@pytest.mark.parametrize("metric", ["top1", "top5"])
def test_float_labels_are_refused(metric):
    with pytest.raises(EdgepackError, match="eval.npz: labels must be integer class indices.*float64"):
        _evaluator([1.0, 2.5, np.nan], metric)


def test_pipeline_labels_checked_against_the_teacher_classes():
    import torch

    from edgepack.training.data import check_classes

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 10), torch.nn.BatchNorm1d(10))
    ok = (np.zeros((3, 4), np.float32), np.array([0, 9, 3]))
    check_classes(model, torch.zeros(1, 4), {"train": ok})
    assert model.training  # the mode is left as it was
    with pytest.raises(EdgepackError, match=r"data\.val: labels must be class indices in \[0, 10\).*found -3, 50"):
        check_classes(model, torch.zeros(1, 4), {"train": ok, "val": (ok[0], np.array([50, -3, 1]))})


# --------------------------------------------------------------------------- numeric options

@pytest.mark.parametrize("text", ["nan", "NaN%", "inf", "-inf", "-0.01", "1e400"])
def test_max_drop_refuses_nan_inf_and_negative(text):
    from edgepack.compiler.request import Budget
    from edgepack.passes.metrics import parse_drop

    with pytest.raises(EdgepackError, match="--max-drop must be a finite number >= 0"):
        parse_drop(text)
    with pytest.raises(EdgepackError, match="--max-drop"):
        Budget.parse(float(text.rstrip("%")))
    assert parse_drop("1%") == (0.01, True) and parse_drop(0) == (0.0, False)


def test_budget_built_directly_is_checked():
    from edgepack.compiler.request import Budget

    with pytest.raises(EdgepackError, match="--max-drop"):
        Budget(NAN)


@pytest.mark.parametrize("field", ["prune", "sparsity"])
@pytest.mark.parametrize("value", [NAN, INF, 1.0, 1.5, -0.1, "0.5"])
def test_prune_and_sparsity_outside_0_1_are_refused(field, value):
    from edgepack.compiler.request import CompileRequest

    with pytest.raises(EdgepackError, match=rf"--{field} must be"):
        CompileRequest.from_kwargs("m.onnx", **{field: value})
    CompileRequest.from_kwargs("m.onnx", **{field: 0.0})
    CompileRequest.from_kwargs("m.onnx", **{field: np.float32(0.5)})


def test_prune_layer_ratio_is_checked():
    from edgepack.compiler.request import CompileRequest

    with pytest.raises(EdgepackError, match="--prune-layer conv must be in"):
        CompileRequest.from_kwargs("m.onnx", prune_layers={"conv": NAN})


@pytest.mark.parametrize("args", [["--max-drop", "nan"], ["--prune", "nan"], ["--sparsity", "1"]])
def test_cli_refuses_bad_numbers_in_one_line(tmp_path, args):
    model = tmp_path / "m.onnx"
    onnx.save(conv_relu(3, 4, 8), str(model))
    proc = run_cli("compile", model, *args, "-o", tmp_path / "out", "--no-progress", cwd=tmp_path)
    _one_error(proc, args[0])
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- signals

@pytest.fixture
def handlers():
    """install() replaces the process's SIGTERM/SIGINT handlers: put pytest's back afterwards."""
    from edgepack import interrupt

    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    interrupt.reset()
    yield interrupt
    interrupt.reset()
    for s, h in saved.items():
        signal.signal(s, h)


# The signal goes to a fresh process, as a user's Ctrl-C or kill reaches the CLI: sent to the
# pytest process, it also reached native libraries earlier tests loaded there, and one of them
# crashed the whole run (SIGSEGV) on receiving it.
SWALLOWED = textwrap.dedent("""
    import os, signal, sys, time
    from edgepack import interrupt
    sig = int(sys.argv[1])
    assert interrupt.install()
    interrupt.check()  # nothing yet
    assert not interrupt.requested()
    try:  # what OpenVINO's converter does with the KeyboardInterrupt
        os.kill(os.getpid(), sig)
        time.sleep(5)  # the handler raises before this ends
    except BaseException:
        pass
    assert interrupt.requested()
    for _ in range(2):  # and again: the flag stays until reset
        try:
            interrupt.check()
            sys.exit("check() did not raise")
        except KeyboardInterrupt:
            pass
    interrupt.reset()
    interrupt.check()
    print("ok")
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_check_raises_after_a_swallowed_signal(sig):
    r = subprocess.run([sys.executable, "-c", SWALLOWED, str(int(sig))], capture_output=True, text=True, timeout=120,
                       cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-1500:]


def test_install_off_the_main_thread_changes_nothing(handlers):
    import threading

    before = signal.getsignal(signal.SIGTERM)
    result = []
    t = threading.Thread(target=lambda: result.append(handlers.install()))
    t.start()
    t.join()
    assert result == [False] and signal.getsignal(signal.SIGTERM) is before


SWALLOWING_CONVERTER = textwrap.dedent("""
    import os, signal, sys, time
    import openvino
    real = openvino.convert_model

    def convert_model(*args, **kwargs):  # OpenVINO's bare `except:` around its frontends, in small
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        except:
            pass
        return real(*args, **kwargs)

    openvino.convert_model = convert_model
    from edgepack.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_sigterm_swallowed_by_the_openvino_converter_still_ends_the_compile(tmp_path):
    """SIGTERM during conversion, eaten by the converter: exit 130, no output folder, no staging."""
    model = tmp_path / "m.onnx"
    onnx.save(conv_relu(3, 4, 8), str(model))
    out = tmp_path / "out" / "ov"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", SWALLOWING_CONVERTER, "compile", str(model), "-b", "openvino",
                           "-o", str(out), "--no-progress"], capture_output=True, text=True, cwd=tmp_path,
                          env=env, timeout=600)
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert "interrupted" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_inf_read_as_a_bound_is_no_poison():
    """Max(-inf, x) is x (magika's logits pass through one): refused, the model could not compile."""
    from onnx import TensorProto, helper

    from edgepack.verify import nonfinite_weights

    lo = numpy_helper.from_array(np.array(-np.inf, np.float32), "lo")
    mx = helper.make_node("Max", ["lo", "x"], ["m"], name="max")
    add = helper.make_node("Add", ["m", "lo"], ["y"], name="add")
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in ("x", "y")]
    graph = helper.make_graph([mx], "g", io[:1], [helper.make_tensor_value_info("m", TensorProto.FLOAT, [1, 4])],
                              [lo])
    assert nonfinite_weights(helper.make_model(graph)) == []
    graph = helper.make_graph([mx, add], "g", io[:1], io[1:], [lo])  # the same -inf also added: poison
    assert nonfinite_weights(helper.make_model(graph)) == ["'lo' (0 NaN, 1 Inf)"]


def test_cosine_of_two_all_zero_outputs_is_one():
    """A detector's probability map of an image with nothing in it is all zeros in FP32 and INT8
    alike: the same answer, so cosine 1, not the 0 a bare division gives."""
    from edgepack.passes.metrics import cosines

    ref = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 0.0]])
    got = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 0.0], [0.5, 0.0, 0.0]])
    assert cosines(got, ref).tolist() == [1.0, pytest.approx(1.0), 0.0]
