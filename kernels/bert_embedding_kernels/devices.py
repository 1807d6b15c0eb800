"""Device backends, named by module path: the core reaches a backend without importing it.

A backend is a package that provides ``DeviceTables`` (with ``from_tables``),
``embed`` and ``embed_backward`` with the signatures of ``bert_embedding_kernels.cuda``'s, and
depends on the core, not the other way round: the core names it here by its
module path and imports it on first use, as a plugin. That keeps ``import
kernels`` light (importing ``numba.cuda`` starts the CUDA driver) and the import
graph free of circles (the backend imports the core; the core never imports
the backend).
"""

from __future__ import annotations

import importlib
from types import ModuleType

BACKENDS = {"cuda": "bert_embedding_kernels.cuda"}


def backend(device: str) -> ModuleType:
    """The backend module for ``device`` ("cuda"), imported on first use."""
    if device not in BACKENDS:
        raise ValueError(f"device is {device!r}; it must be one of {tuple(BACKENDS)}.")
    return importlib.import_module(BACKENDS[device])
