"""Which numba threading layer the parallel kernels run on, and how they are launched.

The policy, applied at ``import bert_embedding_kernels`` (measurements and rejected alternatives:
docs/THREADING.md):

- **TBB, found in the installed environment.** TBB is the one numba layer that is
  both thread-safe (eight Python threads may call a ``parallel=True`` kernel at
  once) and fork-safe (a forked child may call one after its parent has). GNU
  OpenMP, numba's choice when TBB is missing, kills every fork child that calls a
  parallel kernel (numba raises SIGTERM in it, so a fork ``Pool`` hangs forever);
  ``workqueue`` aborts the interpreter on concurrent calls from threads.
  The ``tbb`` wheel (pinned in pyproject.toml) puts ``libtbb.so.12`` in the
  environment's ``lib/``, which is not on the loader path of a virtual
  environment, so numba cannot find it by itself. :func:`configure` loads it by
  full path with ``RTLD_GLOBAL`` first; numba's own ``CDLL("libtbb.so.12")`` and
  its ``tbbpool`` extension then resolve to that already-loaded library.
- **Initialised now, from the importing thread.** With TBB usable and numba left
  at its default choice, the layer is started here (7-19 ms measured): numba's TBB
  pool remembers the thread that started it and can only prepare a ``fork()``
  made from that thread (otherwise it warns that the child may be broken). The
  thread that imports a package is almost always the main thread, while the first
  kernel call may come from any worker thread.
- **The user's choice wins.** ``NUMBA_THREADING_LAYER`` (or
  ``numba.config.THREADING_LAYER``) set to anything but ``default``, a reordered
  ``NUMBA_THREADING_LAYER_PRIORITY``, or a layer already started before
  ``import bert_embedding_kernels`` are left alone; TBB is still made loadable, so asking for
  ``tbb`` or ``safe`` works in a virtual environment too.
- **Without a usable TBB: numba's default, made safe.** numba picks OpenMP where
  it exists, else workqueue. The layer is left to start lazily, since a started
  GNU OpenMP layer breaks every fork child, even one whose parent never ran a
  kernel. Every parallel kernel is launched through :func:`launch`
  (``bert_embedding_kernels._jit.parallel_kernel`` puts each one behind it), which

  * takes a process-wide lock around the launch on a layer that is not
    thread-safe (workqueue, or before numba has started a layer), so threads wait
    for each other instead of aborting the interpreter;
  * runs the serial compile of the same kernel in a process forked after its
    parent started a layer that is not fork-safe (GNU OpenMP), with one
    ``RuntimeWarning`` per process naming the faster fix (``pip install tbb``);
  * takes nothing while TBB or OpenMP runs (both thread-safe): the guard costs
    one flag test per call there.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import site
import sys
import sysconfig
import threading
import warnings
from importlib import metadata
from pathlib import Path

import numba
from numba.np.ufunc import parallel as _numba_parallel

# numba's own check (numba/np/ufunc/parallel.py): TBB 2021.6, interface 12060, or later.
MIN_TBB_INTERFACE_VERSION = 12060
# What numba documents for each layer (docs: "The Threading Layers"): OpenMP is
# thread-safe everywhere and fork-safe except GNU OpenMP (Linux); workqueue is
# fork-safe only; TBB is both.
THREAD_SAFE_LAYERS = frozenset({"tbb", "omp"})
FORK_SAFE_LAYERS = frozenset({"tbb", "workqueue"})

_TBB_LIBRARY = {"linux": "libtbb.so.12", "darwin": "libtbb.12.dylib", "win32": "tbb12.dll"}

_lock = threading.Lock()
_state: dict[str, object] = {}

# How parallel kernels are launched in this process (see launch).
# ``launch_direct`` is what bert_embedding_kernels._jit.ParallelKernel tests on every call: True
# once a thread-safe layer runs in a process that may use it.
DIRECT, LOCKED, SERIAL = "direct", "locked", "serial"
launch_direct = False
_launch_mode: str | None = None  # None: decided again at the next launch
_launch_lock = threading.Lock()


def _tbb_library_name() -> str | None:
    return _TBB_LIBRARY.get("linux" if sys.platform.startswith("linux") else sys.platform)


def _tbb_prefixes() -> list[str]:
    """Installation prefixes whose ``lib/`` may hold TBB, best first, without repeats."""
    prefixes = [sysconfig.get_path("data"), sys.prefix]
    # A conda environment: conda's tbb package has no Python metadata to follow.
    prefixes.append(os.environ.get("CONDA_PREFIX", ""))
    # pip install --user; an unusual site module must not break import bert_embedding_kernels.
    with contextlib.suppress(Exception):
        prefixes.append(site.getuserbase())
    unique: list[str] = []
    for prefix in prefixes:
        if prefix and prefix not in unique:
            unique.append(prefix)
    return unique


def _tbb_candidates(name: str):
    """Paths where an installed TBB may have put ``name``, best first.

    The ``tbb`` distribution's own file list comes first: its RECORD names the
    library relative to the ``site-packages`` it was installed into, which is
    right for venv, ``--user`` and ``--prefix`` installs alike. Then the ``lib/``
    of this interpreter's prefix, an active conda environment (``$CONDA_PREFIX``)
    and the user base. ``pip install --target`` keeps only the wheel's Python
    files and drops its ``lib/``, so nothing can be found after it.
    """
    try:
        distribution = metadata.distribution("tbb")
    except metadata.PackageNotFoundError:
        distribution = None
    if distribution is not None:
        for file in distribution.files or ():
            if file.name == name:
                yield Path(distribution.locate_file(file))
    for prefix in _tbb_prefixes():
        for folder in ("lib", os.path.join("Library", "bin")):
            yield Path(prefix, folder, name)


def _interface_version(library: ctypes.CDLL) -> int:
    try:
        version = library.TBB_runtime_interface_version
    except AttributeError:  # not oneTBB
        return 0
    version.argtypes = []
    version.restype = ctypes.c_int
    return int(version())


def _load_tbb() -> tuple[ctypes.CDLL | None, str]:
    """Make TBB loadable for numba; return the library and where it came from."""
    name = _tbb_library_name()
    if name is None:
        return None, f"no TBB library name known for platform {sys.platform}"
    if hasattr(os, "RTLD_NOLOAD"):
        # Another package already loaded a TBB: a second copy in one process
        # would run two schedulers, so use the loaded one (numba will too).
        try:
            return ctypes.CDLL(name, mode=os.RTLD_NOLOAD | ctypes.RTLD_GLOBAL), "already loaded"
        except OSError:
            pass
    failures = []
    for path in _tbb_candidates(name):
        if path.is_file():
            try:
                return ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL), str(path.resolve())
            except OSError as error:
                failures.append(f"{path}: {error}")
    try:  # a system TBB on the loader path
        return ctypes.CDLL(name, mode=ctypes.RTLD_GLOBAL), f"{name} on the loader path"
    except OSError:
        failures.append(f"{name} not found (pip install tbb)")
    return None, "; ".join(failures)


def _openmp_vendor() -> str:
    try:
        from numba.np.ufunc import omppool
    except ImportError:
        return "unknown"
    return str(getattr(omppool, "openmp_vendor", "unknown"))


def _is_fork_safe(layer: str) -> bool:
    # numba's rule: OpenMP is fork-safe except GNU OpenMP (what numba's Linux wheels link).
    if layer in FORK_SAFE_LAYERS:
        return True
    if layer != "omp":
        return False
    vendor = _openmp_vendor()
    if vendor == "unknown":
        return not sys.platform.startswith("linux")
    return vendor != "GNU"


def _tbbpool_imports() -> bool:
    # numba's TBB extension must load against this TBB; otherwise numba would
    # silently move on to OpenMP, which must not be started early (see above).
    try:
        from numba.np.ufunc import tbbpool  # noqa: F401
    except ImportError:
        return False
    return True


def _started_layer() -> str | None:
    try:
        return numba.threading_layer()
    except ValueError:  # numba has not started a layer yet
        return None


def launch(kernel, args: tuple):
    """Run ``kernel`` (a ``_jit.ParallelKernel``) on ``args`` as this process must.

    The slow path of ``ParallelKernel.__call__``, never reached while
    ``launch_direct`` is set: the serial twin in a child forked from a fork-unsafe
    layer, the dispatcher under ``_launch_lock`` on a layer that is not
    thread-safe (or before numba has chosen one), the dispatcher alone otherwise.
    """
    mode = _launch_mode or _decide()
    if mode == SERIAL:
        if not _state.get("serial_warned"):
            _warn_serial_fallback()
        return kernel.serial(*args)
    if mode == DIRECT:
        return kernel.dispatcher(*args)
    with _launch_lock:
        result = kernel.dispatcher(*args)
    if _launch_mode is None:
        _decide()  # that launch may have started the layer
    return result


def _decide() -> str:
    """The launch mode for this process; LOCKED, not remembered, until a layer starts."""
    global _launch_mode, launch_direct
    if _state.get("forked_from"):
        mode = SERIAL
    else:
        layer = _started_layer()
        if layer is None:
            # numba chooses at the first parallel launch: until then assume the worst.
            return LOCKED
        mode = DIRECT if layer in THREAD_SAFE_LAYERS else LOCKED
    _launch_mode = mode
    launch_direct = mode == DIRECT
    return mode


def launch_mode() -> str:
    """How parallel kernels are launched in this process, and why."""
    mode = _launch_mode or _decide()
    layer = _started_layer()
    if mode == SERIAL:
        return (
            f"serial: forked after the parent started {_state['forked_from']!r}, "
            "which is not fork-safe"
        )
    if layer is None:
        return "locked until numba starts a layer"
    if mode == LOCKED:
        return f"locked: the {layer!r} layer is not thread-safe"
    return f"direct: the {layer!r} layer is thread-safe"


def _after_fork_in_child() -> None:
    global _launch_lock, _launch_mode, launch_direct
    # A thread of the parent may have held the lock at the fork; it does not exist here.
    _launch_lock = threading.Lock()
    _state.pop("serial_warned", None)  # once per process
    if _state.get("forked_from"):
        return  # forked from a process that was itself such a child: still serial
    layer = _started_layer()
    if layer is not None and not _is_fork_safe(layer):
        # numba would stop this process (SIGTERM) at its first parallel launch, and
        # GNU OpenMP could not run one here anyway: the serial kernels run instead.
        _state["forked_from"] = layer
        _launch_mode = SERIAL
        launch_direct = False


def _warn_serial_fallback() -> None:
    _state["serial_warned"] = True
    warnings.warn(
        f"kernels: this process was forked after its parent started numba's "
        f"{_state['forked_from']!r} threading layer (GNU OpenMP), which cannot run in a "
        "forked child, so its parallel kernels run serially here (correct, one core "
        "each). For parallel kernels in forked workers install TBB (pip install tbb, "
        "leave NUMBA_THREADING_LAYER unset) or start workers with "
        "multiprocessing.get_context('spawn').",
        RuntimeWarning,
        stacklevel=4,  # the caller of the kernel
    )


def configure() -> str:
    """Apply the threading-layer policy once per process; return the layer's name.

    Safe to call again: later calls change nothing and return the same answer as
    :func:`active_layer`.
    """
    with _lock:
        if _state:
            return active_layer()
        already = _started_layer()
        library, source = _load_tbb()
        tbb_version = _interface_version(library) if library is not None else 0
        if library is None:
            tbb_problem = source
        elif tbb_version < MIN_TBB_INTERFACE_VERSION:
            tbb_problem = f"{source}: interface version {tbb_version} < {MIN_TBB_INTERFACE_VERSION}"
        elif not _tbbpool_imports():
            tbb_problem = f"{source}: numba's tbbpool extension does not load against it"
        else:
            tbb_problem = None
        _state.update(
            tbb=f"interface {tbb_version} from {source}" if tbb_problem is None else tbb_problem,
            tbb_usable=tbb_problem is None,
        )

        user_choice = str(numba.config.THREADING_LAYER).lower()
        priority = list(numba.config.THREADING_LAYER_PRIORITY)
        if already is not None:
            _state["policy"] = (
                f"inherited: numba started {already!r} before import bert_embedding_kernels"
            )
        elif user_choice != "default":
            _state["policy"] = f"user's choice: NUMBA_THREADING_LAYER={user_choice}"
        elif priority[:1] != ["tbb"]:
            _state["policy"] = f"user's choice: NUMBA_THREADING_LAYER_PRIORITY={priority}"
        elif tbb_problem is None:
            try:
                _numba_parallel._launch_threads()  # private, stable since numba 0.40
            except (ImportError, OSError, ValueError) as error:
                _state["policy"] = f"fallback: numba's default (starting TBB failed: {error})"
            else:
                _state["policy"] = "tbb: thread- and fork-safe"
        else:
            _state["policy"] = "fallback: numba's default, guarded (no usable TBB)"
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_after_fork_in_child)
        _decide()
        return active_layer()


def active_layer() -> str:
    """The numba threading layer in use, or "not started (...)" before the first kernel."""
    started = _started_layer()
    if started is not None:
        return started
    return f"not started (numba will choose: {numba.config.THREADING_LAYER})"


def tbb_usable() -> bool:
    """Whether a TBB that numba accepts was found and loaded (TBB may still not be the layer)."""
    configure()
    return bool(_state["tbb_usable"])


def policy() -> dict[str, str]:
    """How the layer was chosen and kernels are launched, for ``machine.describe``."""
    configure()
    layer = _started_layer()
    unknown = "unknown until numba starts a layer"
    return {
        "threading policy": str(_state["policy"]),
        "layer thread-safe": unknown if layer is None else str(layer in THREAD_SAFE_LAYERS),
        "layer fork-safe": unknown if layer is None else str(_is_fork_safe(layer)),
        "parallel launches": launch_mode(),
        "tbb": str(_state["tbb"]),
    }


configure()
