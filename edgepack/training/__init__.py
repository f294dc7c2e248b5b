"""Training-aware compression in PyTorch: distillation, iterative pruning with fine-tuning, QAT.

Each stage takes an `nn.Module` and user data, returns a better-compressed `nn.Module` (or, for
QAT, the QDQ ONNX graph the backends take) plus a history; the pipeline gates and saves them.
"""
