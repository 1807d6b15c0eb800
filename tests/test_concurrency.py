"""Threads and processes calling every method: the policy of :mod:`kernels._threading`.

Every scenario runs in a fresh interpreter with a timeout, because the failures
this guards against do not raise: numba's workqueue layer aborts the interpreter
when two threads enter a parallel kernel at once, and under GNU OpenMP numba
stops every forked child that calls one, so a fork ``Pool`` waits forever.

The subprocesses share one empty numba cache (``NUMBA_CACHE_DIR``): the first one
compiles the fused method's parallel kernel, so the fused calls below really run
it (a cache entry written by its serial twin could stand in for it otherwise).
Each check also runs the parallel roofline copy, a kernel with no serial twin, so
the threading layer itself is exercised in every thread and every child.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import textwrap

import pytest

# The guarantee rests on the TBB layer, whose wheel pyproject.toml pins for Linux
# x86_64 only; elsewhere kernels falls back to numba's default (docs/THREADING.md).
pytestmark = pytest.mark.skipif(
    not (sys.platform.startswith("linux") and platform.machine() == "x86_64"),
    reason="the tbb wheel is pinned for Linux x86_64 only",
)

# Seconds per scenario. A cold cache compiles the kernels (about 5 s here); a
# hang is what the limit catches, so it is generous for a loaded CI machine.
TIMEOUT = 240

COMMON = """
import json, multiprocessing, os, sys, threading, warnings
import numpy as np
import kernels
import kernels.machine
from kernels import _threading
from kernels.equivalence import Reference
from kernels.roofline import CopyReference

# 8 x 64 x 128 float32 = 256 KiB, above fused.SERIAL_MAX_BYTES: the parallel kernel.
SHAPE = (8, 64, 128)
TABLES = kernels.EmbeddingTables.random(1000, SHAPE[2], max_positions=64, seed=1)
RNG = np.random.default_rng(2)
IDS = RNG.integers(0, 1000, SHAPE[:2])
TYPES = RNG.integers(0, 2, SHAPE[:2])
REFERENCE = Reference(TABLES, IDS, TYPES)


def check(method, preallocated):
    out = np.empty(SHAPE, np.float32) if preallocated else None
    y = kernels.embed(TABLES, IDS, TYPES, method=method, out=out)
    agreement = REFERENCE.compare(method, y)
    assert agreement.ok, agreement
    copy = CopyReference(SHAPE, np.float32)  # runs the parallel copy once
    assert np.all(copy.destination == 1)


def check_all(round=0):
    for method in kernels.METHODS:
        check(method, preallocated=round % 2 == 1)
    return os.getpid(), _threading.active_layer()


def run_threads(count=8, rounds=3):
    barrier = threading.Barrier(count)
    errors = []

    def work(index):
        barrier.wait()  # all threads enter the kernels together
        try:
            for round in range(rounds):
                check_all(round + index)
        except BaseException as error:
            errors.append(repr(error))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors


def run_pool(context, workers=2, tasks=4):
    with multiprocessing.get_context(context).Pool(workers) as pool:
        results = pool.map_async(check_all, range(tasks)).get(timeout=120)
    assert len(results) == tasks
    return sorted({layer for _, layer in results})


def report(**fields):
    print("RESULT " + json.dumps({"layer": _threading.active_layer(), **fields}))
"""


@pytest.fixture(scope="module")
def numba_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("numba-cache")


def run_scenario(tmp_path, numba_cache, body: str, **environment) -> dict:
    """Run COMMON + body as a script in a fresh interpreter; return its RESULT line."""
    script = tmp_path / "scenario.py"
    script.write_text(COMMON + "\nif __name__ == '__main__':\n" + textwrap.indent(body, "    "))
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("NUMBA_THREADING_LAYER", "NUMBA_THREADING_LAYER_PRIORITY")
    }
    env.update(NUMBA_CACHE_DIR=str(numba_cache), PYTHONFAULTHANDLER="1", **environment)
    # A session of its own, so that a hung Pool's children are killed with it.
    process = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"hung for {TIMEOUT} s\nstdout:\n{stdout[-3000:]}\nstderr:\n{stderr[-3000:]}")
    if process.returncode != 0:
        pytest.fail(
            f"exit status {process.returncode}\nstdout:\n{stdout[-3000:]}\n"
            f"stderr:\n{stderr[-3000:]}"
        )
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, stdout
    result = json.loads(lines[-1][len("RESULT ") :])
    result["stderr"] = stderr
    return result


def test_default_policy_is_the_tbb_layer(tmp_path, numba_cache):
    result = run_scenario(
        tmp_path,
        numba_cache,
        "report(policy=_threading.policy(), describe=kernels.machine.describe())\n",
    )
    assert result["layer"] == "tbb", (
        "the TBB layer did not load: is the tbb package (a dependency in pyproject.toml) "
        f"installed? {result['policy']}"
    )
    assert result["policy"]["layer thread-safe"] == "True"
    assert result["policy"]["layer fork-safe"] == "True"
    assert result["describe"]["numba threading layer"] == "tbb"
    assert "tbb" in result["describe"]["threading policy"]


def test_eight_threads_call_every_method_at_once(tmp_path, numba_cache):
    result = run_scenario(tmp_path, numba_cache, "run_threads()\nreport()\n")
    assert result["layer"] == "tbb"


@pytest.mark.parametrize("parent", ["main thread", "eight threads"])
def test_fork_pool_after_the_parent_ran_every_method(tmp_path, numba_cache, parent):
    # The parent starts the layer and runs every method before it forks; in the
    # second case its own threads have used the layer too (as a threaded server
    # that later forks workers would).
    body = "check_all()\n"
    if parent == "eight threads":
        body += "run_threads(rounds=1)\n"
    body += "report(children=run_pool('fork'))\n"
    result = run_scenario(tmp_path, numba_cache, body)
    assert result["children"] == ["tbb"]


def test_spawn_pool_after_the_parent_ran_every_method(tmp_path, numba_cache):
    result = run_scenario(
        tmp_path, numba_cache, "check_all()\nreport(children=run_pool('spawn'))\n"
    )
    # Spawned children import kernels afresh and apply the same policy.
    assert result["children"] == ["tbb"]


def test_an_explicit_layer_choice_is_respected(tmp_path, numba_cache):
    body = "before = _threading.active_layer()\ncheck('fused', False)\nreport(before=before)\n"
    result = run_scenario(tmp_path, numba_cache, body, NUMBA_THREADING_LAYER="workqueue")
    assert result["before"].startswith("not started")
    assert result["layer"] == "workqueue"


def test_the_safe_layer_loads_in_a_virtual_environment(tmp_path, numba_cache):
    # numba's own name for "fork- and thread-safe": it needs TBB, which numba
    # cannot find in a virtual environment unless kernels has loaded it.
    body = "check('fused', False)\nreport()\n"
    result = run_scenario(tmp_path, numba_cache, body, NUMBA_THREADING_LAYER="safe")
    assert result["layer"] == "tbb"


def test_a_child_forked_from_gnu_openmp_is_warned(tmp_path, numba_cache):
    body = """
check('fused', False)
pid = os.fork()
if pid == 0:  # the child calls no kernel (numba would stop it): it only warns
    os._exit(0)
os.waitpid(pid, 0)
report()
"""
    result = run_scenario(tmp_path, numba_cache, body, NUMBA_THREADING_LAYER="omp")
    assert result["layer"] == "omp"
    assert "GNU OpenMP" in result["stderr"] and "spawn" in result["stderr"]


def test_configure_is_idempotent():
    from kernels import _threading

    assert _threading.configure() == _threading.configure() == _threading.active_layer()
