"""The compiler: a request in, a typed report out (see flow.py for the steps)."""

from edgepack.compiler.flow import compile_request
from edgepack.compiler.request import (BenchSettings, Budget, CompileRequest, EvalOptions, PruneOptions,
                                       QuantOptions, Ref)

__all__ = ["BenchSettings", "Budget", "CompileRequest", "EvalOptions", "PruneOptions", "QuantOptions", "Ref",
           "compile_request"]
