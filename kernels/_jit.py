"""Numba options for every kernel in the package, kept in one place.

Why these values:

- ``cache=True``: compiled machine code is written next to the module, so a fresh
  process pays compilation once per machine, not once per start.
- ``nogil=True``: kernels release the GIL, so callers' threads can overlap.
- ``error_model="numpy"``: no Python exception checks inside loops (validation is
  done in Python before any kernel runs, see :mod:`kernels.validate`).
- no ``fastmath`` in kernels: its ``reassoc`` flag would let LLVM reorder
  ``(a + b) + c``, which breaks the bit-for-bit agreement between the fused
  kernel and numpy's gather that the tests guarantee. The sum is memory-bound,
  so nothing is lost.
- ``reassoc`` only in :func:`reduction_helper`, small functions that reduce a
  row (LayerNorm's mean and variance): without it LLVM must add 768 values one
  after another, one add latency each, and cannot use vector registers. The
  flags travel with the helper's instructions when LLVM inlines it, so the
  kernel around it keeps its strict order.
"""

import types

from numba import njit

JIT_OPTIONS = {"cache": True, "nogil": True, "error_model": "numpy"}


def serial_kernel(func):
    """Compile ``func`` as a serial kernel with the project's options."""
    return njit(**JIT_OPTIONS)(func)


def _renamed(func, suffix: str):
    """A copy of ``func`` under another name (same code, globals and defaults)."""
    copy = types.FunctionType(
        func.__code__,
        func.__globals__,
        func.__name__ + suffix,
        func.__defaults__,
        func.__closure__,
    )
    copy.__qualname__ = func.__qualname__ + suffix
    copy.__doc__ = func.__doc__
    copy.__module__ = func.__module__
    return copy


def parallel_kernel(func):
    """Compile ``func`` as a ``parallel=True`` kernel with the project's options.

    It is compiled from a renamed copy: numba's on-disk cache keys entries by
    the function's qualified name and signature, not by ``parallel``, so a
    serial and a parallel kernel made from one function would share cache
    entries and whichever compiled first would serve the other (found here: the
    "parallel" fused kernel ran the serial code at BERT-base).
    """
    return njit(parallel=True, **JIT_OPTIONS)(_renamed(func, "_parallel"))


def reduction_helper(func):
    """Compile a row-reducing helper that LLVM may reassociate (and so vectorise)."""
    return njit(fastmath={"reassoc"}, **JIT_OPTIONS)(func)
