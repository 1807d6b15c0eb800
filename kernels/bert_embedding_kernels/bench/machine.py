"""What a measurement ran on: machine, versions, threads. Printed with every result."""

from __future__ import annotations

import os
import platform
import sys

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
    from .. import __version__, _threading

    return {
        "cpu": _cpu_model(),
        "cores": str(os.cpu_count()),
        "numba threads": str(numba.get_num_threads()),
        "numba threading layer": _threading.active_layer(),
        **_threading.policy(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "kernels": __version__,
        "platform": f"{sys.platform} {platform.machine()}",
    }


def summary() -> str:
    """:func:`describe` as one line, ``key: value; ...``, for the head of a results file."""
    return "; ".join(f"{key}: {value}" for key, value in describe().items())
