"""Every Python snippet in README.md and docs/ runs, offline, as a reader would paste it.

Each ```python block is saved as a script and run in a fresh interpreter from an empty
directory, with no network
(Hugging Face offline) and, for the GPU pages' snippets, numba's CUDA simulator; it must
exit 0. A snippet that needs something must show where it comes from (the shipped MiniLM,
random tables), so that a newcomer following the README meets no NameError.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def _snippets():
    for document in DOCUMENTS:
        for match in FENCE.finditer(document.read_text()):
            line = document.read_text().count("\n", 0, match.start()) + 1
            name = f"{document.relative_to(ROOT)}:{line}"
            yield pytest.param(match.group(1), id=name)


SNIPPETS = list(_snippets())


def test_the_documents_have_snippets():
    assert len(SNIPPETS) >= 5, [s.id for s in SNIPPETS]


@pytest.mark.parametrize("code", SNIPPETS)
def test_snippet_runs(code, tmp_path):
    if "import torch" in code or "transformers" in code:
        pytest.importorskip("transformers") if not os.environ.get("CI") else None
    environment = dict(
        os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", NUMBA_ENABLE_CUDASIM="1"
    )
    environment.pop("PYTHONPATH", None)
    script = tmp_path / "snippet.py"  # a file: numba caches only functions defined in one
    script.write_text(code)
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
