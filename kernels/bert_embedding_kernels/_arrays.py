"""Arrays from other libraries as numpy arrays, without importing those libraries.

torch tensors are accepted wherever numpy arrays are: CPU tensors become numpy
views of the same memory (``detach()`` first, so tensors that require grad
work too); bfloat16 tensors become ``ml_dtypes.bfloat16`` views of their bits.
Anything else goes through ``np.asarray``.

The views are built from the tensor's address (``__array_interface__``), not with
``Tensor.numpy()``: that call marks the tensor's storage as not resizable for the
rest of its life, and FSDP2 frees and re-allocates its parameters' storage with
``storage.resize_()`` ("Trying to resize storage that is not resizable" after one
forward, issue 36). The view holds the tensor, so the memory outlives the array.
"""

from __future__ import annotations

import numpy as np

# torch's dtypes by name (importing torch to compare would cost a second per process).
_NUMPY_DTYPES = {
    "torch.float64": np.dtype(np.float64),
    "torch.float32": np.dtype(np.float32),
    "torch.float16": np.dtype(np.float16),
    "torch.int64": np.dtype(np.int64),
    "torch.int32": np.dtype(np.int32),
    "torch.int16": np.dtype(np.int16),
    "torch.int8": np.dtype(np.int8),
    "torch.uint8": np.dtype(np.uint8),
    "torch.uint16": np.dtype(np.uint16),
    "torch.uint32": np.dtype(np.uint32),
    "torch.uint64": np.dtype(np.uint64),
    "torch.bool": np.dtype(np.bool_),
}


def is_torch_tensor(value) -> bool:
    # By module name: importing torch to ask would cost a second per process.
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


class _TensorMemory:
    """A CPU tensor's memory as numpy's array interface; the array's base holds the tensor
    (unless ``hold`` is False: then the caller keeps the tensor alive while it uses the view)."""

    __slots__ = ("__array_interface__", "tensor")

    def __init__(self, tensor, dtype: np.dtype, hold: bool = True):
        self.tensor = tensor if hold else None
        size = tensor.element_size()
        self.__array_interface__ = {
            "data": (tensor.data_ptr(), False),
            "shape": tuple(tensor.shape),
            "strides": tuple(stride * size for stride in tensor.stride()),
            "typestr": dtype.str,
            "version": 3,
        }


def as_numpy(name: str, value, hold: bool = True) -> np.ndarray:
    """``value`` as a numpy array, sharing memory with a CPU torch tensor where it can.

    ``hold=False``: the view of a tensor does not keep the tensor alive (for a cache that
    uses it only while the tensor it was made from is alive: ``nn/ops.py``).

    Raises
    ------
    TypeError
        A torch tensor on another device than the CPU (named, with the fix).
    """
    if not is_torch_tensor(value):
        return value if isinstance(value, np.ndarray) else np.asarray(value)
    tensor = value.detach()
    if tensor.device.type != "cpu":
        raise TypeError(
            f"{name} is a torch tensor on {tensor.device}; this call runs on the CPU. "
            f"Pass {name}.cpu(), or device tables (EmbeddingTables.to_device()) for the GPU."
        )
    kind = str(tensor.dtype)
    if kind == "torch.bfloat16":
        import ml_dtypes  # the numpy bfloat16 (the 'half' extra); torch has no numpy bf16

        # The bits as int16 (numpy's array interface has no code for bfloat16), then viewed.
        return _shared(tensor, np.dtype(np.int16), hold).view(ml_dtypes.bfloat16)
    dtype = _NUMPY_DTYPES.get(kind)
    if dtype is None:  # complex and other kinds: numpy's own conversion (or its error)
        return tensor.numpy()
    return _shared(tensor, dtype, hold)


def _shared(tensor, dtype: np.dtype, hold: bool) -> np.ndarray:
    if tensor.numel() == 0:  # no memory to share (its address may be null)
        return np.empty(tuple(tensor.shape), dtype)
    return np.asarray(_TensorMemory(tensor, dtype, hold))
