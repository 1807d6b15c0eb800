"""Arrays from other libraries as numpy arrays, without importing those libraries.

torch tensors are accepted wherever numpy arrays are: CPU tensors become numpy
views of the same memory (``detach()`` first, so tensors that require grad
work too); bfloat16 tensors become ``ml_dtypes.bfloat16`` views of their bits.
Anything else goes through ``np.asarray``.
"""

from __future__ import annotations

import numpy as np


def is_torch_tensor(value) -> bool:
    # By module name: importing torch to ask would cost a second per process.
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


def as_numpy(name: str, value) -> np.ndarray:
    """``value`` as a numpy array, sharing memory with a CPU torch tensor where it can.

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
    if str(tensor.dtype) == "torch.bfloat16":
        import ml_dtypes  # the numpy bfloat16 (the 'half' extra); torch has no numpy bf16

        return tensor.view(_torch_int16(tensor)).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()


def _torch_int16(tensor):
    import torch  # already imported: the tensor exists

    return torch.int16
