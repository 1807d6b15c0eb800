"""JIT compile time of the fused kernel: what a user pays once per new signature.

The package caches compiled kernels on disk (``cache=True``), so timing the real
kernel's first call would time a cache load. Instead a fresh dispatcher is built
from the kernel's Python source with the kernel's own options, caching off, and
its compilation for the signature the forward pass uses is timed.
"""

import time

import numba

from .common import SWEEP_BASE, forward_call, package_module


class CompileFused:
    """Seconds to compile the parallel fused kernel for float32 tables and int64 ids."""

    timeout = 120

    def setup(self):
        # Runs the real kernel once at a shape that takes the parallel path: that
        # records the exact signature and pays numba's one-time start-up costs.
        forward_call("fused", SWEEP_BASE.with_vocab(1000))
        # The module holds the kernel (methods.fused.forward since issue 38, methods.fused
        # since the registry, fused before),
        # named _sum_rows_parallel since 7ba90b0 and _sum_rows before.
        module = package_module("methods.fused.forward", "methods.fused", "fused")
        kernel = getattr(module, "_sum_rows_parallel", None) or module._sum_rows
        (self.signature,) = kernel.signatures
        self.fresh = numba.jit(**kernel.targetoptions)(kernel.py_func)

    def track_compile_seconds(self):
        start = time.perf_counter()
        self.fresh.compile(self.signature)
        return time.perf_counter() - start

    track_compile_seconds.unit = "seconds"
