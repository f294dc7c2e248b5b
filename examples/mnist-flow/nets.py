"""The models of the MNIST flow recipe: any `file.py:factory` returning an nn.Module works."""

from edgepack.models.mnist_cnn import MnistStudent, MnistTeacher


def teacher():
    return MnistTeacher(width=32)  # ~0.98M parameters, ~62M MACs


def student():
    return MnistStudent(width=32)  # ~0.10M parameters, ~7.5M MACs before pruning
