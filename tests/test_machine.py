"""What every measurement carries about the machine, the threading policy included.

``bert_embedding_kernels.bench.engine.machine.describe()`` goes into every report, calibration and
``embench check``. Where the project's threading policy applies (Linux x86_64,
where pyproject.toml pins the ``tbb`` wheel), it must report the TBB layer,
chosen by that policy, as thread- and fork-safe, once a parallel kernel has run.
The policy itself, in fresh interpreters with threads and forks, is tested in
tests/test_concurrency.py.
"""

import os
import platform
import sys
from pathlib import Path

import numba
import numpy as np
import pytest

import bert_embedding_kernels as bek
from bert_embedding_kernels.bench.engine.machine import describe

FIELDS = (
    "cpu",
    "cores",
    "numba threads",
    "numba threading layer",
    "threading policy",
    "layer thread-safe",
    "layer fork-safe",
    "tbb",
    "python",
    "numpy",
    "numba",
    "package",
    "source",
    "commit",
    "platform",
)


def test_describe_names_every_field_as_text():
    described = describe()
    assert set(FIELDS) <= set(described)
    assert all(isinstance(value, str) and value for value in described.values())
    assert described["package"] == f"bert_embedding_kernels {bek.__version__}"
    # the code measured is named by where it was imported from, not the working directory
    assert Path(described["source"]) == Path(bek.__file__).resolve().parent
    assert described["numba threads"] == str(numba.get_num_threads())


@pytest.mark.skipif(
    not (sys.platform.startswith("linux") and platform.machine() == "x86_64"),
    reason="the tbb wheel is pinned for Linux x86_64 only",
)
@pytest.mark.skipif(
    os.environ.get("NUMBA_THREADING_LAYER", "default") != "default",
    reason="a threading layer chosen by the user is left alone",
)
def test_the_policy_runs_the_parallel_kernels_on_tbb():
    # 8 x 64 x 128 float32 = 256 KiB: the fused parallel kernel, so a layer is running.
    tables = bek.EmbeddingTables.random(100, 128, max_positions=64)
    bek.embed(tables, np.zeros((8, 64), np.int64), method="fused")
    described = describe()
    assert described["numba threading layer"] == "tbb", described
    assert described["threading policy"] == "tbb: thread- and fork-safe"
    assert described["layer thread-safe"] == "True"
    assert described["layer fork-safe"] == "True"
    assert described["tbb"].startswith("interface "), described["tbb"]
