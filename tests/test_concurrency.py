"""Compiles side by side in one process (threads) and in a reused process pool decide exactly
what they decide one after another: no process-global state leaks between them."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest

from helpers import compile_choices


@pytest.fixture(scope="module")
def requests(tmp_path_factory, mnist_model, sample_sets):
    import torch

    model, _ = mnist_model
    path = tmp_path_factory.mktemp("conc") / "cnn.onnx"
    torch.onnx.export(model.eval(), (torch.zeros(1, 1, 28, 28),), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"])
    out = tmp_path_factory.mktemp("conc-out")
    common = dict(model=str(path), calib=str(sample_sets["mnist_calib"]), eval_data=str(sample_sets["mnist_eval"]),
                  runs=5, warmup=1, threads=1, force=True,
                  # ONNX Runtime only: its choices are pinned; OpenVINO's would be timed for real
                  backends=["onnxruntime"])
    # two different option sets: other target (scheme), other budget and float scope
    return [dict(common, target="x86-vnni", max_drop=0.02, output_dir=str(out / "a")),
            dict(common, target="x86-avx2", max_drop=0.005, keep_float=["type:Gemm"], output_dir=str(out / "b"))]


def _with_dir(kwargs: dict, suffix: str) -> dict:
    return dict(kwargs, output_dir=kwargs["output_dir"] + suffix)


@pytest.mark.slow
def test_concurrent_compiles_decide_as_sequential_ones(requests):
    sequential = [compile_choices(_with_dir(r, "-seq")) for r in requests]
    assert sequential[0] != sequential[1]  # the two requests really differ
    with ThreadPoolExecutor(max_workers=2) as pool:
        threaded = list(pool.map(compile_choices, [_with_dir(r, "-thread") for r in requests]))
    assert threaded == sequential
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        first = list(pool.map(compile_choices, [_with_dir(r, "-pool1") for r in requests]))
        again = list(pool.map(compile_choices, [_with_dir(r, "-pool2") for r in reversed(requests)]))
    assert first == sequential and again == sequential[::-1]
