"""Numba options for every kernel in the package, kept in one place.

Why these values:

- ``cache=True``: compiled machine code is written next to the module, so a fresh
  process pays compilation once per machine, not once per start.
- ``nogil=True``: kernels release the GIL, so callers' threads can overlap.
- ``error_model="numpy"``: no Python exception checks inside loops (validation is
  done in Python before any kernel runs, see :mod:`bert_embedding_kernels.validate`).
- no ``fastmath`` in kernels: its ``reassoc`` flag would let LLVM reorder
  ``(a + b) + c``, which breaks the bit-for-bit agreement between the fused
  kernel and numpy's gather that the tests guarantee. The sum is memory-bound,
  so nothing is lost.
- ``reassoc`` only in :func:`reduction_helper`, small functions that reduce a
  row (LayerNorm's mean and variance): without it LLVM must add 768 values one
  after another, one add latency each, and cannot use vector registers. The
  flags travel with the helper's instructions when LLVM inlines it, so the
  kernel around it keeps its strict order.

Every ``parallel=True`` kernel is made by :func:`parallel_kernel`, the one place
where a launch can be guarded: on a threading layer that is not thread-safe the
launch takes a process-wide lock, and in a forked child that cannot use its
parent's layer the serial compile of the same function runs instead
(:mod:`bert_embedding_kernels._threading`, docs/THREADING.md).
"""

import os
import threading
import types

from numba import njit

from . import _threading

JIT_OPTIONS = {"cache": True, "nogil": True, "error_model": "numpy"}

# The serial dispatcher compiled from each Python function, so that a parallel
# kernel's serial fallback reuses it (and what it already compiled) where one exists.
_SERIAL_TWINS: dict = {}
_twin_lock = threading.Lock()


def _new_lock_in_child() -> None:
    # A thread of the parent may have held the lock at the fork; it does not exist here.
    global _twin_lock
    _twin_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_in_child)


def serial_kernel(func):
    """Compile ``func`` as a serial kernel with the project's options."""
    dispatcher = njit(**JIT_OPTIONS)(func)
    _SERIAL_TWINS.setdefault(func, dispatcher)
    return dispatcher


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


class ParallelKernel:
    """A ``parallel=True`` dispatcher behind a launch guard; call it like the dispatcher.

    While a thread-safe layer runs (TBB, OpenMP) a call costs one flag test more
    than the dispatcher's own. Otherwise :func:`bert_embedding_kernels._threading.launch`
    decides: a lock around the launch (workqueue, or no layer started yet), or
    the serial compile of the same function (a forked child whose parent started
    GNU OpenMP). Every other attribute (``py_func``, ``signatures``, ``stats``,
    ``targetoptions``, ...) is the dispatcher's, which is also :attr:`dispatcher`.
    """

    def __init__(self, func):
        self.dispatcher = njit(parallel=True, **JIT_OPTIONS)(_renamed(func, "_parallel"))
        self.__wrapped__ = func
        self.__name__ = func.__name__
        self.__qualname__ = func.__qualname__
        self.__module__ = func.__module__
        self.__doc__ = func.__doc__
        self._serial = None

    def __call__(self, *args):
        if _threading.launch_direct:
            return self.dispatcher(*args)
        return _threading.launch(self, args)

    def __getattr__(self, name):
        if name in ("dispatcher", "__wrapped__"):  # not set yet: no endless recursion
            raise AttributeError(name)
        return getattr(self.dispatcher, name)

    @property
    def serial(self):
        """The serial compile of the same function, made on first use.

        The function's :func:`serial_kernel` dispatcher where its module made one
        (it may have compiled the signature already); otherwise a copy renamed
        ``*_serial_fallback``, so that its cache entries are its own (numba keys
        them by qualified name, not by ``parallel``; see :func:`parallel_kernel`).
        """
        if self._serial is None:
            with _twin_lock:
                if self._serial is None:
                    func = self.__wrapped__
                    twin = _SERIAL_TWINS.get(func)
                    if twin is None:
                        twin = njit(**JIT_OPTIONS)(_renamed(func, "_serial_fallback"))
                    self._serial = twin
        return self._serial

    def __repr__(self):
        return f"<parallel kernel {self.__module__}.{self.__qualname__}>"


def parallel_kernel(func):
    """Compile ``func`` as a ``parallel=True`` kernel with the project's options.

    It is compiled from a renamed copy: numba's on-disk cache keys entries by
    the function's qualified name and signature, not by ``parallel``, so a
    serial and a parallel kernel made from one function would share cache
    entries and whichever compiled first would serve the other (found here: the
    "parallel" fused kernel ran the serial code at BERT-base).

    Returns a :class:`ParallelKernel`: the dispatcher behind the launch guard of
    :mod:`bert_embedding_kernels._threading`.
    """
    return ParallelKernel(func)


def row_helper(func):
    """Compile a small helper that numba inlines into each kernel that calls it (numba IR,
    before any optimisation): the kernel compiles as if the helper's lines were written in it."""
    return njit(inline="always", **JIT_OPTIONS)(func)


def reduction_helper(func):
    """Compile a row-reducing helper that LLVM may reassociate (and so vectorise)."""
    return njit(fastmath={"reassoc"}, **JIT_OPTIONS)(func)
