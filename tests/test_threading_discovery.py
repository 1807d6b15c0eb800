"""Where ``bert_embedding_kernels._threading`` looks for TBB: venv, --user, --prefix, conda;
--target.

Each layout is rebuilt in a temporary folder the way pip (or conda) leaves it:
the ``tbb`` wheel's RECORD names ``libtbb.so.12`` relative to the
``site-packages`` it was installed into (``../../libtbb.so.12`` for a prefix's
``lib/python3.X/site-packages``), and ``pip install --target`` keeps the
``dist-info`` but drops the wheel's ``lib/``. The end-to-end test loads a copy
of this environment's TBB from a ``--prefix`` layout in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bert_embedding_kernels import _threading

NAME = "libtbb.so.12"
linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the layouts below are Linux's"
)
PYVER = f"python{sys.version_info.major}.{sys.version_info.minor}"


def fake_distribution(site_packages: Path, record_path: str, library: bool = True) -> None:
    """A ``tbb`` dist-info whose RECORD lists the library at ``record_path``.

    With ``library``, an empty file stands at that path: Python 3.12's
    ``importlib.metadata`` leaves files that do not exist out of ``files``.
    """
    info = site_packages / "tbb-2021.13.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tbb\nVersion: 2021.13.1\n")
    (info / "RECORD").write_text(f"{record_path},sha256=x,1\ntbb-2021.13.1.dist-info/RECORD,,\n")
    if library:
        path = site_packages / record_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


def candidates(monkeypatch, site_packages: Path | None = None) -> list[Path]:
    if site_packages is not None:
        monkeypatch.syspath_prepend(str(site_packages))
    return list(_threading._tbb_candidates(NAME))


@linux_only
def test_prefix_install_is_found_through_its_record(tmp_path, monkeypatch):
    prefix = tmp_path / "prefix"
    site_packages = prefix / "lib" / PYVER / "site-packages"
    fake_distribution(site_packages, f"../../{NAME}")
    found = candidates(monkeypatch, site_packages)
    assert found[0].resolve() == (prefix / "lib" / NAME).resolve()


@linux_only
def test_user_install_is_found_through_its_record_and_the_user_base(tmp_path, monkeypatch):
    base = tmp_path / "userbase"
    site_packages = base / "lib" / PYVER / "site-packages"
    fake_distribution(site_packages, f"../../{NAME}")
    monkeypatch.setattr(_threading.site, "getuserbase", lambda: str(base))
    found = candidates(monkeypatch, site_packages)
    assert found[0].resolve() == (base / "lib" / NAME).resolve()
    # In a virtual environment the user site is hidden, so the RECORD is not
    # seen; the user base's lib/ is searched all the same.
    monkeypatch.setattr(_threading.metadata, "distribution", missing_distribution)
    assert base / "lib" / NAME in candidates(monkeypatch)


def missing_distribution(name):
    raise _threading.metadata.PackageNotFoundError(name)


@linux_only
def test_conda_prefix_is_searched(tmp_path, monkeypatch):
    monkeypatch.setenv("CONDA_PREFIX", str(tmp_path / "conda-env"))
    monkeypatch.setattr(_threading.metadata, "distribution", missing_distribution)
    assert tmp_path / "conda-env" / "lib" / NAME in candidates(monkeypatch)


@linux_only
def test_this_environment_is_searched_first_after_the_record(monkeypatch):
    monkeypatch.setattr(_threading.metadata, "distribution", missing_distribution)
    found = candidates(monkeypatch)
    assert found[0] == Path(_threading.sysconfig.get_path("data"), "lib", NAME)
    assert len(found) == len(set(found)), "a folder is searched twice"


@linux_only
def test_target_install_has_no_library_to_find(tmp_path, monkeypatch):
    # pip install --target DIR tbb: DIR holds the dist-info, whose RECORD still
    # says ../libtbb.so.12 (outside DIR); the library itself was not installed.
    target = tmp_path / "target"
    fake_distribution(target, f"../{NAME}", library=False)
    found = candidates(monkeypatch, target)
    assert not [path for path in found if tmp_path in path.parents and path.is_file()]


def _this_tbb() -> Path | None:
    source = str(_threading._state.get("tbb", ""))
    if _threading.tbb_usable() and " from " in source:
        path = Path(source.split(" from ", 1)[1])
        if path.is_file():
            return path
    return None


@linux_only
@pytest.mark.skipif(_this_tbb() is None, reason="needs a usable TBB library file to copy")
def test_a_prefix_install_loads_in_a_fresh_interpreter(tmp_path):
    prefix = tmp_path / "prefix"
    site_packages = prefix / "lib" / PYVER / "site-packages"
    fake_distribution(site_packages, f"../../{NAME}")
    shutil.copyfile(_this_tbb(), prefix / "lib" / NAME)
    script = textwrap.dedent(
        """
        import json, sys
        from bert_embedding_kernels import _threading
        print(json.dumps({"tbb": _threading.policy()["tbb"], "layer": _threading.active_layer()}))
        """
    )
    env = dict(os.environ)
    env.pop("NUMBA_THREADING_LAYER", None)
    env["PYTHONPATH"] = os.pathsep.join(
        # the fake prefix, then wherever this process imported the package from
        [str(site_packages), str(Path(_threading.__file__).parents[1]), env.get("PYTHONPATH", "")]
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert str((prefix / "lib" / NAME).resolve()) in result["tbb"], result
    assert result["layer"] == "tbb"
