"""The launch guard of ``bert_embedding_kernels._jit.parallel_kernel``, in this process.

``tests/test_concurrency.py`` shows the guard keeps real threads and forks safe;
these tests pin down each of its modes directly (by setting the mode that a
layer or a fork would set) and that the wrapper still looks like numba's
dispatcher to code that inspects it.
"""

from __future__ import annotations

import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from numba import prange
from numba.core.errors import TypingError

from bert_embedding_kernels import _jit, _threading


def _fill(out, value):
    for i in prange(out.shape[0]):
        out[i] = value + i


def _double(values, out):
    for i in prange(values.shape[0]):
        out[i] = 2 * values[i]


FILL = _jit.parallel_kernel(_fill)  # no serial twin: the fallback compiles its own
DOUBLE = _jit.parallel_kernel(_double)
DOUBLE_SERIAL = _jit.serial_kernel(_double)


@pytest.fixture
def mode(monkeypatch):
    """Force a launch mode for one test; the policy's state comes back afterwards."""

    def force(name, forked_from=None):
        monkeypatch.setattr(_threading, "_launch_mode", name)
        monkeypatch.setattr(_threading, "launch_direct", name == _threading.DIRECT)
        monkeypatch.setitem(_threading._state, "forked_from", forked_from)
        monkeypatch.delitem(_threading._state, "serial_warned", raising=False)

    return force


def test_the_wrapper_exposes_the_dispatcher():
    out = np.empty(4)
    FILL(out, 1.0)
    np.testing.assert_array_equal(out, [1, 2, 3, 4])
    assert FILL.dispatcher.targetoptions["parallel"] is True
    # What benchmarks and scripts read from a kernel: numba's own attributes.
    assert FILL.signatures == FILL.dispatcher.signatures and len(FILL.signatures) == 1
    assert FILL.py_func is FILL.dispatcher.py_func
    assert FILL.py_func.__qualname__ == "_fill_parallel"
    assert FILL.targetoptions["parallel"] is True
    assert FILL.__wrapped__ is _fill and FILL.__name__ == "_fill"
    assert isinstance(FILL.stats.cache_hits, object)


def test_direct_mode_calls_the_dispatcher_without_the_lock(mode):
    mode(_threading.DIRECT)
    out = np.empty(3)
    with _threading._launch_lock:  # held elsewhere: a direct launch does not wait
        FILL(out, 0.0)
    np.testing.assert_array_equal(out, [0, 1, 2])


def test_locked_mode_waits_for_the_lock(mode):
    mode(_threading.LOCKED)
    out = np.zeros(3)
    FILL(out, 0.0)  # compiled here, not in the thread below while the test holds the lock
    started, done = threading.Event(), threading.Event()

    def call():
        started.set()
        FILL(out, 5.0)
        done.set()

    with _threading._launch_lock:
        thread = threading.Thread(target=call)
        thread.start()
        started.wait()  # the thread is at its launch: only the lock can hold it now
        assert not done.wait(0.3), "a locked launch ran while another held the lock"
    thread.join()
    assert done.is_set()
    np.testing.assert_array_equal(out, [5, 6, 7])


def test_locked_mode_releases_the_lock_when_the_kernel_raises(mode):
    mode(_threading.LOCKED)
    with pytest.raises(TypingError):
        FILL("not an array", 1.0)  # numba refuses the types
    assert not _threading._launch_lock.locked()


def test_serial_mode_runs_the_serial_twin_and_warns_once(mode):
    mode(_threading.SERIAL, forked_from="omp")
    values = np.arange(5.0)
    out = np.empty(5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        DOUBLE(values, out)
        DOUBLE(values, out)
    np.testing.assert_array_equal(out, 2 * values)
    assert DOUBLE.serial is DOUBLE_SERIAL  # the module's own serial kernel, reused
    assert DOUBLE_SERIAL.signatures
    messages = [str(w.message) for w in caught if w.category is RuntimeWarning]
    assert len(messages) == 1, messages
    assert "pip install tbb" in messages[0] and "'omp'" in messages[0]


def test_the_serial_fallback_compiles_under_its_own_name(mode):
    mode(_threading.SERIAL, forked_from="omp")
    out = np.empty(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        FILL(out, 2.0)
    np.testing.assert_array_equal(out, [2, 3, 4])
    # Its own cache entries: not the parallel kernel's, not a serial twin's.
    assert FILL.serial.py_func.__qualname__ == "_fill_serial_fallback"
    assert not FILL.serial.targetoptions.get("parallel")


def test_a_forked_child_of_gnu_openmp_switches_to_serial(monkeypatch, mode):
    mode(_threading.DIRECT)
    monkeypatch.setattr(_threading, "_started_layer", lambda: "omp")
    monkeypatch.setattr(_threading, "_openmp_vendor", lambda: "GNU")
    monkeypatch.setattr(_threading, "_launch_lock", _threading._launch_lock)
    held = threading.Lock()
    held.acquire()
    monkeypatch.setattr(_threading, "_launch_lock", held)
    _threading._after_fork_in_child()
    assert _threading._launch_mode == _threading.SERIAL and not _threading.launch_direct
    assert _threading._launch_lock is not held and not _threading._launch_lock.locked()
    assert _threading.launch_mode().startswith("serial")


@pytest.mark.parametrize(
    ("layer", "vendor", "expected"),
    [
        ("tbb", None, "direct"),
        ("omp", "GNU", "direct"),
        ("workqueue", None, "locked"),
    ],
)
def test_forked_children_keep_their_mode_except_under_gnu_openmp(
    monkeypatch, mode, layer, vendor, expected
):
    mode(None)
    monkeypatch.setattr(_threading, "_started_layer", lambda: layer)
    monkeypatch.setattr(_threading, "_openmp_vendor", lambda: vendor or "GNU")
    assert _threading._decide() == expected
    _threading._after_fork_in_child()
    if layer == "omp":  # GNU OpenMP is the one layer a child cannot inherit
        expected = _threading.SERIAL
    assert _threading._launch_mode == expected


def test_no_layer_started_means_locked_and_undecided(monkeypatch, mode):
    mode(None)
    monkeypatch.setattr(_threading, "_started_layer", lambda: None)
    assert _threading._decide() == _threading.LOCKED
    assert _threading._launch_mode is None  # decided again at the next launch
    assert _threading.launch_mode() == "locked until numba starts a layer"


def _package_calls(call) -> list[str]:
    """The functions of this package that ``call()`` runs, as ``module.py:function``."""
    package = str(Path(_threading.__file__).parent)
    calls = []

    def record(frame, event, arg):
        if event == "call" and frame.f_code.co_filename.startswith(package):
            calls.append(f"{Path(frame.f_code.co_filename).name}:{frame.f_code.co_name}")

    sys.setprofile(record)
    try:
        call()
    finally:
        sys.setprofile(None)
    return calls


def test_the_guard_adds_one_python_call_on_a_thread_safe_layer(mode):
    # What the guard costs is measured in docs/THREADING.md ("What the guard costs"); a
    # test that timed it would fail on a busy machine (no test asserts a time). Here the
    # reason it is cheap: with a thread-safe layer a launch runs no Python of this package
    # but the wrapper's own __call__ (one flag test), no lock and no launch(), whatever
    # numba does inside its dispatcher.
    out = np.empty(1)
    FILL(out, 0.0)  # compiled and the layer started before anything is recorded
    mode(_threading.DIRECT)
    assert _package_calls(lambda: FILL(out, 0.0)) == ["_jit.py:__call__"]
    mode(_threading.LOCKED)  # the recorder sees the guarded path: the test can fail
    assert "_threading.py:launch" in _package_calls(lambda: FILL(out, 1.0))
    assert out[0] == 1.0
