"""edgepack: a hardware-aware deployment compiler for edge runtimes."""

__version__ = "0.1.0"


def __getattr__(name):
    # `edgepack.compile(...)` without importing torch/onnxruntime at `import edgepack` time
    if name in ("compile", "profile", "inspect", "run"):
        from edgepack import api

        return getattr(api, name)
    raise AttributeError(name)
