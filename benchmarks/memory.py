"""Memory of one forward call, per method, at BERT's vocabulary and longest sequence."""

import tracemalloc

from .common import METHODS, SWEEP_BASE, forward_call

# batch 8 x seq 512 x hidden 768 x vocab 30522, float32: the output is 12 MiB, so
# gather's two temporaries of its size are visible, and whole one-hot codes would
# take 500 MB, so onehot and concat run at their memory budget (256 MiB).
SHAPE = SWEEP_BASE.with_seq(512)


class Memory:
    """Peak memory of one call per method, as the process sees it and as numpy allocates it."""

    params = (METHODS,)
    param_names = ("method",)
    timeout = 120

    def setup(self, method):
        self.call = forward_call(method, SHAPE)

    def peakmem_forward(self, method):
        # The whole process's peak resident memory, as asv measures it: Python,
        # numpy and numba (about 160 MB), the tables (100 MB), then what the call adds.
        self.call()

    def track_temporary_bytes(self, method):
        # Only what the call itself allocates through numpy and Python, at its peak:
        # deterministic, free of the process's baseline and of compilation.
        tracemalloc.start()
        try:
            self.call()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    track_temporary_bytes.unit = "bytes"
