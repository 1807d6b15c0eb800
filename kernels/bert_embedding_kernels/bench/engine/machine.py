"""What a measurement ran on: machine, versions, threads. Printed with every result."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> dict[str, str]:
    """A flat description of this machine and the library versions in use."""
    from ... import __version__, _threading

    return {
        "cpu": _cpu_model(),
        "cores": str(os.cpu_count()),
        "numba threads": str(numba.get_num_threads()),
        "numba threading layer": _threading.active_layer(),
        **_threading.policy(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        **provenance(__version__),
        "platform": f"{sys.platform} {platform.machine()}",
    }


# Written by `make` beside the package when it builds the wheel (the wheel carries it):
# the commit and state of the checkout it was built from.
BUILD_INFO = "BUILD_INFO.json"


def provenance(version: str) -> dict[str, str]:
    """Which code ran: the package, where it was imported from, the commit it was built from.

    A measurement of another checkout (a venv installed from elsewhere) shows here: the
    source path and commit are those of the code imported, not of the working directory.
    """
    package = Path(__file__).resolve().parents[2]  # bench/engine/machine.py
    found = {"package": f"bert_embedding_kernels {version}", "source": str(package)}
    try:
        build = json.loads((package / BUILD_INFO).read_text())
        return found | {k: str(build[k]) for k in ("commit", "dirty", "built_from") if k in build}
    except (OSError, ValueError):
        pass
    commit = _git(package, "rev-parse", "HEAD")  # a checkout or an editable install
    if commit is None:
        return found | {"commit": "unknown (no build record, not a git checkout)"}
    dirty = _git(package, "status", "--porcelain", "--untracked-files=no")
    return found | {"commit": commit, "dirty": str(bool(dirty))}


def _git(where: Path, *arguments: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(where), *arguments], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def summary() -> str:
    """:func:`describe` as one line, ``key: value; ...``, for the head of a results file."""
    return "; ".join(f"{key}: {value}" for key, value in describe().items())
