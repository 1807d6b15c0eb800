"""The CUDA kernels' tests: on numba's CUDA simulator by default, on a GPU on request.

``NUMBA_ENABLE_CUDASIM`` must be set before ``numba.cuda`` is imported. It is
set here (unless the caller chose: ``NUMBA_ENABLE_CUDASIM=0`` runs these tests on
a GPU). When pytest runs the whole suite, other tests have imported numba
already, and numba read its environment then; ``reload_config`` reads it
again, which works as long as ``numba.cuda`` itself is not imported yet
(numba-cuda, if installed, keeps its own config and reads it at that import).

Test modules import ``bert_embedding_kernels.cuda`` with ``pytest.importorskip``: where it
cannot load (no GPU and no simulator), they are skipped with its message.
"""

import os
import sys

import pytest

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
if "numba" in sys.modules and "numba.cuda" not in sys.modules:
    import numba.core.config

    numba.core.config.reload_config()


@pytest.fixture(autouse=True, scope="package")
def _fast_simulator_switching():
    """Hand the GIL over more often while these tests run.

    The simulator runs every CUDA thread as a Python thread, and a manager
    thread polls them at every ``syncthreads``; with Python's default 5 ms
    switch interval, each barrier waits for it (measured on the tests' shapes:
    LayerNorm 1.8 s -> 0.6 s per call at 0.5 ms).
    """
    previous = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    yield
    sys.setswitchinterval(previous)
