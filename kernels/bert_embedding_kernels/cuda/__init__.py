"""BERT's summed embeddings on an NVIDIA GPU: numba-cuda kernels for the fused paths.

Imported on demand only (``import bert_embedding_kernels`` never imports this package), because
importing ``numba.cuda`` initialises the CUDA driver. Without a GPU, the kernels
run on numba's CUDA simulator when ``NUMBA_ENABLE_CUDASIM=1`` is set before
``numba.cuda`` is first imported (slow: one Python thread per CUDA thread; for
tests). Elsewhere the import fails with an ImportError that says so.

What the kernels compute, and how they line up with the CPU ``fused`` method:

- :func:`fused_sum`: ``out[b, s] = (token[i] + segment[j]) + position[k]`` in the
  tables' dtype, the CPU's rounding order: bit-identical to it.
- :func:`fused_sum_norm`: the same sum, then LayerNorm with float64 statistics;
  optionally keeps the pre-norm sum (bit-identical to :func:`fused_sum`).
- :func:`layer_norm_backward`: LayerNorm's gradients for the sum, the weight and
  the bias, float64 sums in a fixed order (within 2e-6 of the CPU's, whose
  element-wise update runs in the row's dtype).
- :func:`fused_backward`: the three table gradients, each element summed in
  token order from zero without float atomics: bit-identical to the CPU; or,
  with ``order="tree"``, in a fixed binary tree (the same bits for any launch).
- float16 and bfloat16 tables (:mod:`.half`, :mod:`.halfbits`): widened to
  float32 exactly, summed (and normalised) as the CPU does, rounded once;
  bit-identical to the CPU's 16-bit results; float32 gradients.
- :func:`prepare`: shape and dtype checks on the host, the id range check on
  the device (one small read-back), raising the CPU's IndexError message.

docs/GPU.md has the design, the measurements and how to run the tests.
"""

import numpy as np


def _patch_numpy(numpy=np) -> bool:
    """Give numpy back ``row_stack`` where numba-cuda still expects it; True if patched.

    numba-cuda 0.30.4 registers an overload of ``np.row_stack`` at its first
    kernel compile; numpy 2.5 removed that alias of ``np.vstack`` (deprecated
    since 2.0), and the compile failed with ``module 'numpy' has no attribute
    'row_stack'`` (numba 0.68.0, numba-cuda 0.30.4, numpy 2.5.2). Restoring the
    alias (the same function numpy used to export) fixes it; numpy versions
    that still have it are left untouched.
    """
    if hasattr(numpy, "row_stack"):
        return False
    numpy.row_stack = numpy.vstack
    return True


_patch_numpy()

from ._runtime import HAS_SHUFFLE, HAS_STREAMING_STORE, SIMULATOR, cuda  # noqa: E402  (after the shim: it may compile)
from .backward import DeviceGradients, embed_backward, fused_backward  # noqa: E402
from .forward import embed, fused_sum  # noqa: E402
from .norm import fused_sum_norm  # noqa: E402
from .norm_backward import layer_norm_backward  # noqa: E402
from .tables import DeviceTables  # noqa: E402
from .validate import DeviceBatch, prepare  # noqa: E402


def _fix_warning_registries(modules) -> None:
    """Give each module its warnings registry now.

    The simulator runs a Python thread per CUDA thread, and every call of a
    device function lists its module's globals (to swap ``cuda`` for its fake
    one). A numpy warning raised in a kernel (an overflow while narrowing to
    float16) adds ``__warningregistry__`` to the globals of the module that
    raised it, the first time: if another thread was listing them then, it
    failed with "dictionary changed size during iteration" (seen once in CI
    in test_cuda_half.py). With the entry there from the start the globals
    never change size.
    """
    for module in modules:
        vars(module).setdefault("__warningregistry__", {})


if SIMULATOR:
    import sys as _sys

    _fix_warning_registries(
        module for name, module in list(_sys.modules.items()) if name.startswith(__name__ + ".")
    )

__all__ = [
    "HAS_SHUFFLE",
    "HAS_STREAMING_STORE",
    "SIMULATOR",
    "DeviceBatch",
    "DeviceGradients",
    "DeviceTables",
    "cuda",
    "embed",
    "embed_backward",
    "fused_backward",
    "fused_sum",
    "fused_sum_norm",
    "layer_norm_backward",
    "prepare",
]
