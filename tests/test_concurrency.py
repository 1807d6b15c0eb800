"""Threads and processes calling every method: the policy of
:mod:`bert_embedding_kernels._threading`.

Every scenario runs in a fresh interpreter with a timeout, because the failures
this guards against do not raise: numba's workqueue layer aborts the interpreter
when two threads enter a parallel kernel at once, and under GNU OpenMP numba
stops every forked child that calls one, so a fork ``Pool`` waits forever.

The battery (threads, fork pools, a spawn pool, a fork while threads run kernels)
runs on whatever layer this environment gives: TBB where it is installed, else
numba's default (GNU OpenMP on Linux). ``NUMBA_THREADING_LAYER`` set around
pytest (``workqueue``, ``omp``) is handed to the battery's scenarios, which is how
``.ci/threading-without-tbb`` runs it a second and third time without TBB; the
scenarios that test the policy itself set their own. Assertions about TBB itself
skip where no usable TBB is installed.

The subprocesses share one empty numba cache (``NUMBA_CACHE_DIR``): the first one
compiles the fused method's parallel kernel, so the fused calls below really run
it (a cache entry written by its serial twin could stand in for it otherwise).
Each check also runs the parallel roofline copy, a kernel with no serial twin, so
the threading layer itself is exercised in every thread and every child.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from bert_embedding_kernels import _threading

TBB = _threading.tbb_usable()
NO_TBB = f"needs a usable TBB: {_threading.policy()['tbb']}"
# The layer the battery runs on: the one asked for around pytest, else the policy's.
BATTERY_LAYER = os.environ.get("NUMBA_THREADING_LAYER", "default").lower()
CAN_FORK = "fork" in multiprocessing.get_all_start_methods()
needs_fork = pytest.mark.skipif(not CAN_FORK, reason="no fork() on this platform")

# Seconds per scenario. A cold cache compiles the kernels (about 5 s here); a
# hang is what the limit catches, so it is generous for a loaded CI machine.
TIMEOUT = 240

from concurrency_script import COMMON  # noqa: E402  (the script every scenario runs)

SERIAL_WARNING = "pip install tbb"


@pytest.fixture(scope="module")
def numba_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("numba-cache")


def run_scenario(tmp_path, numba_cache, body: str, layer: str | None = BATTERY_LAYER) -> dict:
    """Run COMMON + body as a script in a fresh interpreter; return its RESULT line.

    ``layer`` is the ``NUMBA_THREADING_LAYER`` it runs under ("default" or None:
    unset, the policy's choice).
    """
    script = tmp_path / "scenario.py"
    script.write_text(COMMON + "\nif __name__ == '__main__':\n" + textwrap.indent(body, "    "))
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("NUMBA_THREADING_LAYER", "NUMBA_THREADING_LAYER_PRIORITY")
    }
    env.update(NUMBA_CACHE_DIR=str(numba_cache), PYTHONFAULTHANDLER="1")
    if layer not in (None, "default"):
        env["NUMBA_THREADING_LAYER"] = layer
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


def check_battery_layer(result: dict) -> None:
    """The battery ran on the layer asked for, or the policy's; never 'serial' itself."""
    if BATTERY_LAYER in ("tbb", "omp", "workqueue"):
        assert result["layer"] == BATTERY_LAYER
    elif BATTERY_LAYER == "default" and TBB:
        assert result["layer"] == "tbb", (
            f"the TBB layer did not load though TBB is usable: {_threading.policy()}"
        )
    else:
        assert result["layer"] in ("tbb", "omp", "workqueue")
    thread_safe = result["layer"] in _threading.THREAD_SAFE_LAYERS
    assert result["mode"] == ("direct" if thread_safe else "locked")


def expected_children(result: dict) -> list[list[str]]:
    """What forked children report: the parent's layer; serial where it is not fork-safe."""
    if result["fork_safe"] == "True":
        return [[result["layer"], result["mode"]]]
    return [[result["layer"], "serial"]]


def check_fork_warning(result: dict, children: list) -> None:
    serial = any(mode == "serial" for _, mode in children)
    # One warning per child process that ran serially; none where nothing did.
    assert (SERIAL_WARNING in result["stderr"]) == serial, result["stderr"][-2000:]


def test_default_policy(tmp_path, numba_cache):
    body = (
        "before = _threading.launch_mode()\n"
        "check('fused', False)\n"
        "report(before=before, policy=_threading.policy())\n"
    )
    result = run_scenario(tmp_path, numba_cache, body, layer=None)
    if TBB:
        assert result["layer"] == "tbb", (
            "the TBB layer did not load: is the tbb package (a dependency in pyproject.toml) "
            f"installed? {result['policy']}"
        )
        assert result["policy"]["layer thread-safe"] == "True"
        assert result["policy"]["layer fork-safe"] == "True"
        assert result["before"].startswith("direct")
        assert result["mode"] == "direct"
        assert "tbb" in result["policy"]["threading policy"]
    else:
        # numba's default, started by the first kernel, under the lock until then.
        assert "no usable TBB" in result["policy"]["threading policy"]
        assert result["before"].startswith("locked until")
        assert result["layer"] in ("omp", "workqueue")
        assert result["mode"] == ("direct" if result["layer"] == "omp" else "locked")


@pytest.mark.skipif(not TBB, reason=NO_TBB)
def test_describe_reports_the_tbb_layer(tmp_path, numba_cache):
    body = """
try:
    from bert_embedding_kernels.bench.engine.machine import describe
except ImportError:
    from bert_embedding_kernels.machine import describe
report(describe=describe())
"""
    result = run_scenario(tmp_path, numba_cache, body, layer=None)
    assert result["describe"]["numba threading layer"] == "tbb"
    assert "tbb" in result["describe"]["threading policy"]
    assert result["describe"]["parallel launches"].startswith("direct")


def test_eight_threads_call_every_method_at_once(tmp_path, numba_cache):
    result = run_scenario(tmp_path, numba_cache, "prepare()\nrun_threads()\nreport()\n")
    check_battery_layer(result)


@needs_fork
@pytest.mark.parametrize("parent", ["main thread", "eight threads"])
def test_fork_pool_after_the_parent_ran_every_method(tmp_path, numba_cache, parent):
    # The parent starts the layer and runs every method before it forks; in the
    # second case its own threads have used the layer too (as a threaded server
    # that later forks workers would). Half the tasks run threads in the child.
    body = "check_all()\n"
    if parent == "eight threads":
        body += "run_threads(rounds=1)\n"
    body += "report(children=run_pool('fork'), threaded=run_pool('fork', task=threads_task))\n"
    result = run_scenario(tmp_path, numba_cache, body)
    check_battery_layer(result)
    assert result["children"] == result["threaded"] == expected_children(result)
    check_fork_warning(result, result["children"])


BATTERY_ON_TBB = BATTERY_LAYER in ("tbb", "safe", "threadsafe") or (
    BATTERY_LAYER == "default" and TBB
)


@needs_fork
@pytest.mark.skipif(
    BATTERY_ON_TBB,
    reason="TBB cannot prepare a fork while another thread is inside a parallel kernel: "
    "the child may hang in its first kernel (docs/THREADING.md, Caveats)",
)
def test_fork_pool_while_threads_run_kernels(tmp_path, numba_cache):
    # Threads are inside kernels (and may hold the launch lock) when the parent
    # forks: the children must neither inherit a held lock nor a broken layer.
    body = "check_all()\nreport(children=in_background_threads(lambda: run_pool('fork')))\n"
    result = run_scenario(tmp_path, numba_cache, body)
    check_battery_layer(result)
    assert result["children"] == expected_children(result)


def test_spawn_pool_after_the_parent_ran_every_method(tmp_path, numba_cache):
    result = run_scenario(
        tmp_path, numba_cache, "check_all()\nreport(children=run_pool('spawn'))\n"
    )
    check_battery_layer(result)
    # Spawned children import the package afresh and apply the same policy.
    assert result["children"] == [[result["layer"], result["mode"]]]
    assert SERIAL_WARNING not in result["stderr"]


def test_an_explicit_layer_choice_is_respected(tmp_path, numba_cache):
    body = (
        "before = _threading.active_layer()\n"
        "mode = _threading.launch_mode()\n"
        "check('fused', False)\n"
        "report(before=before, mode_before=mode)\n"
    )
    result = run_scenario(tmp_path, numba_cache, body, layer="workqueue")
    assert result["before"].startswith("not started")
    assert result["mode_before"].startswith("locked")
    assert result["layer"] == "workqueue"
    assert result["mode"] == "locked"


@pytest.mark.skipif(not TBB, reason=NO_TBB)
def test_the_safe_layer_loads_in_a_virtual_environment(tmp_path, numba_cache):
    # numba's own name for "fork- and thread-safe": it needs TBB, which numba
    # cannot find in a virtual environment unless the package has loaded it.
    body = "check('fused', False)\nreport()\n"
    result = run_scenario(tmp_path, numba_cache, body, layer="safe")
    assert result["layer"] == "tbb"
    assert result["mode"] == "direct"


@needs_fork
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="GNU OpenMP is Linux's")
def test_a_child_forked_from_gnu_openmp_computes_serially(tmp_path, numba_cache):
    # numba stops such a child with SIGTERM at its first parallel kernel; the package
    # runs the serial kernels there instead, warns once, and so do grandchildren.
    body = """
check_all()
if _threading._openmp_vendor() != "GNU":
    report(skipped="OpenMP is not GNU's: " + _threading._openmp_vendor())
    sys.exit(0)


def child(depth):
    for round in range(3):
        check_all(round)
    run_threads(count=4, rounds=1)
    assert _threading.launch_mode().startswith("serial"), _threading.launch_mode()
    if depth:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                child(depth - 1)
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status


pid = os.fork()
if pid == 0:
    code = 1
    try:
        child(depth=1)
        code = 0
    finally:
        os._exit(code)
_, status = os.waitpid(pid, 0)
report(child=os.waitstatus_to_exitcode(status))
"""
    result = run_scenario(tmp_path, numba_cache, body, layer="omp")
    if "skipped" in result:
        pytest.skip(result["skipped"])
    assert result["layer"] == "omp"
    assert result["mode"] == "direct"  # the parent keeps its parallel layer
    assert result["child"] == 0, result["stderr"][-3000:]
    # Once per process however many calls it made: in the child, and in the
    # grandchild unless Python's own once-per-location registry, inherited from
    # the child, holds it back.
    assert result["stderr"].count(SERIAL_WARNING) in (1, 2), result["stderr"][-3000:]
    assert "GNU OpenMP" in result["stderr"]


def test_configure_is_idempotent():
    assert _threading.configure() == _threading.configure() == _threading.active_layer()
