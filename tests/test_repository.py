"""The repository's own text: every path it names exists, no module of the package outgrows
400 lines, docs/TRACKING.md names the versions asv pins.

Paths are named in the README, docs/, comments and docstrings of every Python file, the
Makefile, pyproject.toml and .ci/. A path is a token that starts with one of the
repository's top-level folders (``kernels/...``, ``docs/...``, ``tests/...``): after a
rename or a move (issue 28 moved the package under ``kernels/bert_embedding_kernels/``)
such a token must still point at something. Globs (``*.py``) must match at least one file.
"""

import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP_FOLDERS = ("kernels", "docs", "tests", "scripts", "benchmarks", ".ci")
# A top-level folder, a slash, then path characters; not preceded by anything that would
# make it part of a longer path (/tmp/kernels/..., site-packages/kernels/...), a word, or a
# path at an older commit (`git show fe50b75:kernels/fused.py`).
PATH = re.compile(
    r"(?<![\w./$:-])((?:" + "|".join(re.escape(t) for t in TOP_FOLDERS) + r")/[\w./*-]*)"
)
MAX_MODULE_LINES = 400


def _tracked() -> list[Path]:
    try:
        names = subprocess.run(
            ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / name for name in names]


def _texts() -> list[Path]:
    suffixes = {".py", ".md", ".toml", ".sh", ".txt", ".json"}
    return [
        p
        for p in _tracked()
        if p.is_file() and (p.suffix in suffixes or p.name == "Makefile" or p.parent.name == ".ci")
    ]


def _named_paths(text: str) -> set[str]:
    found = set()
    for match in PATH.finditer(text):
        path = match.group(1).rstrip(".-")
        if path.endswith("/"):
            path = path.rstrip("/")
        found.add(path)
    return found


def _exists(path: str) -> bool:
    if "*" in path:
        return any(ROOT.glob(path))
    return (ROOT / path).exists()


def test_every_path_the_repository_names_exists():
    missing = []
    for file in _texts():
        for path in sorted(_named_paths(file.read_text(errors="replace"))):
            if not _exists(path):
                missing.append(f"{file.relative_to(ROOT)}: {path}")
    assert not missing, "paths that do not exist:\n" + "\n".join(missing)


def test_the_path_check_finds_what_it_should():
    # independent cases, so that a regex that matches nothing cannot pass the test above
    text = "kernels/bert_embedding_kernels/api.py, docs/GPU.md, /tmp/kernels/x.py, a0:docs/x"
    assert _named_paths(text) == {"kernels/bert_embedding_kernels/api.py", "docs/GPU.md"}
    assert not _exists("kernels" + "/fused.py") and _exists("kernels/bert_embedding_kernels/*.py")


def test_no_module_of_the_package_is_over_400_lines():
    package = ROOT / "kernels"
    long = [
        f"{p.relative_to(ROOT)}: {n} lines"
        for p in _tracked()
        if p.suffix == ".py"
        and package in p.parents
        and (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    assert not long, long


def test_tracking_names_every_version_asv_pins():
    """docs/TRACKING.md lists asv's pinned versions and the results file name they make; a
    pin added to asv.conf.json (ml_dtypes was) must show in both."""
    config = (ROOT / "asv.conf.json").read_text()
    config = "\n".join(line for line in config.splitlines() if not line.strip().startswith("//"))
    pins = {name: versions[0] for name, versions in json.loads(config)["matrix"]["req"].items()}
    text = (ROOT / "docs" / "TRACKING.md").read_text()
    words = " ".join(text.split())
    missing = [f"{n} {v}" for n, v in pins.items() if f"{n} {v}" not in words]
    assert not missing, missing
    # asv names an environment by its pins sorted by name (asv.environment.get_env_name)
    environment = "-".join(f"{name}{version}" for name, version in sorted(pins.items()))
    assert f"-virtualenv-py3.11-{environment}.json" in text, environment
