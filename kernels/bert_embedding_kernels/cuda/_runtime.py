"""Which numba.cuda this is (hardware or simulator, built-in or numba-cuda) and array adapters."""

from __future__ import annotations

import numpy as np

try:
    from numba import cuda
except ImportError as error:  # e.g. numba-cuda installed without NVIDIA's cuda-bindings
    raise ImportError(
        f"bert_embedding_kernels.cuda could not import numba.cuda: {error}. Install the package's "
        "'cuda' extra (numba-cuda with its CUDA bindings)."
    ) from error

if not cuda.is_available():
    raise ImportError(
        "bert_embedding_kernels.cuda needs a CUDA GPU, and numba.cuda found none "
        f"({str(cuda.cuda_error() or 'no device').strip()}). To run the kernels without a "
        "GPU, on numba's CUDA simulator (slow; for tests), set NUMBA_ENABLE_CUDASIM=1 "
        "before numba.cuda is first imported."
    )

# Both numba's built-in numba.cuda and numba-cuda load their simulator through
# a module named simulator_init; their config flags live in different modules.
SIMULATOR: bool = cuda.is_available.__module__.endswith("simulator_init")

# Hardware-only features. The simulator has no warp shuffles; numba 0.68's
# built-in numba.cuda has no cache-hint stores (numba-cuda does; its simulator
# defines them as None).
HAS_SHUFFLE: bool = not SIMULATOR and hasattr(cuda, "shfl_xor_sync")
HAS_STREAMING_STORE: bool = not SIMULATOR and callable(getattr(cuda, "stcs", None))

WARP = 32


def as_device(value, name: str):
    """``value`` as a numba device array without copying, or None if it is host data.

    numba's own device arrays (and the simulator's) pass as they are; any other
    object with ``__cuda_array_interface__`` (CuPy, torch CUDA tensors) becomes
    a numba view of the same memory, synchronised with the producer's stream as
    the interface asks.
    """
    if getattr(value, "__cuda_ndarray__", False):
        return value
    if hasattr(value, "__cuda_array_interface__"):
        if SIMULATOR:
            raise TypeError(
                f"{name} is a {type(value).__name__} in GPU memory; numba's CUDA simulator "
                "reads only its own device arrays. Pass cuda.to_device(array) or a host array."
            )
        return cuda.as_cuda_array(value)
    return None


def memory_span(array) -> tuple[int, int]:
    """``[first, last)`` byte addresses that a device array's elements can touch."""
    # numba device arrays export __cuda_array_interface__; the simulator's wrap a
    # numpy array whose __array_interface__ they forward.
    interface = getattr(array, "__cuda_array_interface__", None) or array.__array_interface__
    start = interface["data"][0]
    if array.size == 0:
        return start, start
    itemsize = np.dtype(array.dtype).itemsize
    strides = interface.get("strides") or _c_strides(array.shape, itemsize)
    low = sum(
        stride * (n - 1) for n, stride in zip(array.shape, strides, strict=True) if stride < 0
    )
    high = sum(
        stride * (n - 1) for n, stride in zip(array.shape, strides, strict=True) if stride > 0
    )
    return start + low, start + high + itemsize


def _c_strides(shape, itemsize: int) -> tuple[int, ...]:
    strides, step = [], itemsize
    for n in reversed(shape):
        strides.append(step)
        step *= n
    return tuple(reversed(strides))


def intersect(a: tuple[int, int], b: tuple[int, int]) -> bool:
    """True if two :func:`memory_span` ranges share a byte (the arrays may share memory)."""
    return a[0] < b[1] and b[0] < a[1]


def is_read_only(array) -> bool:
    """The read-only flag of an array's (CUDA or host) array interface."""
    interface = getattr(array, "__cuda_array_interface__", None) or array.__array_interface__
    return bool(interface["data"][1])
