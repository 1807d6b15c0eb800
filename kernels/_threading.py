"""Which numba threading layer the parallel kernels run on, decided at ``import kernels``.

The policy (measurements and rejected alternatives: docs/THREADING.md):

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
  ``import kernels`` are left alone; TBB is still made loadable, so asking for
  ``tbb`` or ``safe`` works in a virtual environment too.
- **Fallback: numba's default** (OpenMP where it exists, else workqueue) when no
  usable TBB is installed (platforms without a ``tbb`` wheel). It is not started
  early, since a started GNU OpenMP layer breaks every fork child, even one whose
  parent never ran a kernel; a forked child that inherits a started OpenMP layer
  gets a warning naming the fix instead of dying silently.
"""

from __future__ import annotations

import ctypes
import os
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


def _tbb_library_name() -> str | None:
    return _TBB_LIBRARY.get("linux" if sys.platform.startswith("linux") else sys.platform)


def _tbb_candidates(name: str):
    """Paths where an installed ``tbb`` distribution may have put ``name``, best first."""
    try:
        distribution = metadata.distribution("tbb")
    except metadata.PackageNotFoundError:
        distribution = None
    if distribution is not None:
        # The wheel's own file list: right for venvs, --user and --prefix installs alike.
        for file in distribution.files or ():
            if file.name == name:
                yield Path(distribution.locate_file(file))
    for prefix in (sysconfig.get_path("data"), sys.prefix):
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


def _is_fork_safe(layer: str) -> bool:
    return layer in FORK_SAFE_LAYERS or (layer == "omp" and not sys.platform.startswith("linux"))


def _tbbpool_imports() -> bool:
    # numba's TBB extension must load against this TBB; otherwise numba would
    # silently move on to OpenMP, which must not be started early (see above).
    try:
        from numba.np.ufunc import tbbpool  # noqa: F401
    except ImportError:
        return False
    return True


def _warn_forked_child_on_unsafe_layer() -> None:
    # numba's GNU OpenMP layer stops only the direct children of the process that
    # started it (its check is ``getppid() == pid that started the layer``), so
    # warn in those and not again in their own children.
    if _state.get("inherited_layer"):
        return
    layer = _started_layer()
    _state["inherited_layer"] = layer
    if layer is not None and not _is_fork_safe(layer):
        warnings.warn(
            f"kernels: this process was forked after its parent started numba's {layer!r} "
            "threading layer (GNU OpenMP), which numba stops with SIGTERM in a forked child "
            "at the first parallel kernel. Use the TBB layer (pip install tbb, leave "
            "NUMBA_THREADING_LAYER unset) or start workers with "
            "multiprocessing.get_context('spawn').",
            RuntimeWarning,
            stacklevel=1,
        )


def _started_layer() -> str | None:
    try:
        return numba.threading_layer()
    except ValueError:  # numba has not started a layer yet
        return None


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
            tbb=f"interface {tbb_version} from {source}" if tbb_problem is None else tbb_problem
        )

        user_choice = str(numba.config.THREADING_LAYER).lower()
        priority = list(numba.config.THREADING_LAYER_PRIORITY)
        if already is not None:
            _state["policy"] = f"inherited: numba started {already!r} before import kernels"
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
            _state["policy"] = "fallback: numba's default (no usable TBB)"
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_warn_forked_child_on_unsafe_layer)
        return active_layer()


def active_layer() -> str:
    """The numba threading layer in use, or "not started (...)" before the first kernel."""
    started = _started_layer()
    if started is not None:
        return started
    return f"not started (numba will choose: {numba.config.THREADING_LAYER})"


def policy() -> dict[str, str]:
    """How the layer was chosen, for :func:`kernels.machine.describe`."""
    configure()
    layer = _started_layer()
    unknown = "unknown until numba starts a layer"
    return {
        "threading policy": str(_state["policy"]),
        "layer thread-safe": unknown if layer is None else str(layer in THREAD_SAFE_LAYERS),
        "layer fork-safe": unknown if layer is None else str(_is_fork_safe(layer)),
        "tbb": str(_state["tbb"]),
    }


configure()
