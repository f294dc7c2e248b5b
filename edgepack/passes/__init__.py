"""Passes: each takes an ONNX model (and its settings) and returns a new model."""
