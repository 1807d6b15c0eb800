"""The optional peers (torch, transformers, the MiniLM package) as the tests import them.

Offline: Hugging Face never reaches for the network. Under CI (``CI`` set) a missing
package fails the module instead of skipping it, so that an install step that dropped it
cannot pass unseen; elsewhere the module is skipped.
"""

import importlib
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def require(module: str):
    if os.environ.get("CI"):
        return importlib.import_module(module)
    return pytest.importorskip(module)
