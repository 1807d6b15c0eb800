"""Run transformers' own common model tests with and without the drop-in (issue 36).

    .venv/bin/python scripts/transformers_model_tests.py [--write docs/TRANSFORMERS_TESTS.md]

Fetches the source distribution of the installed transformers (``pip download
--no-binary :all: --no-deps transformers==<installed>``, kept in .transformers-tests/),
takes its ``tests/*.py`` (``ModelTesterMixin`` in test_modeling_common.py), and runs
``ModelTesterMixin`` on BERT, RoBERTa and DistilBERT with all their heads
(scripts/transformers_tests/test_bek_models.py: our model testers) twice: as they are,
and with every supported family's embeddings patched to the drop-in for the session
(scripts/transformers_tests/bek_patch.py). Fails (exit 1) if any test that passes without
the drop-in does not pass with it. Nothing of transformers is copied into this repository.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import transformers

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OURS = HERE / "transformers_tests"


def fetch(version: str, work: Path) -> Path:
    archive = work / f"transformers-{version}.tar.gz"
    if not archive.exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:",
             "--no-deps", f"transformers=={version}", "-d", str(work)],
            check=True,
        )  # fmt: skip
    return archive


def prepare(archive: Path, run: Path) -> None:
    """run/tests: transformers' top-level test modules, the stand-ins, our testers."""
    shutil.rmtree(run, ignore_errors=True)
    tests = run / "tests"
    tests.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if len(parts) == 3 and parts[1] == "tests" and parts[2].endswith(".py"):
                (tests / parts[2]).write_bytes(tar.extractfile(member).read())
    sys.path.insert(0, str(OURS))
    from stubs import STUBS

    for path, source in STUBS.items():
        target = tests / path
        target.parent.mkdir(exist_ok=True)
        (target.parent / "__init__.py").touch()
        if not target.exists():
            target.write_text(source)
    (tests / "utils").mkdir(exist_ok=True)
    (tests / "utils" / "__init__.py").touch()
    utils = tests / "utils" / "test_configuration_utils.py"
    if not utils.exists():  # not shipped either; test_configuration_common reads one dict
        utils.write_text("config_common_kwargs = {}\n")
    (tests / "__init__.py").touch()
    shutil.copy(OURS / "test_bek_models.py", tests)
    shutil.copy(OURS / "bek_patch.py", run)


def pytest_run(run: Path, name: str, plugin: bool) -> dict[str, str]:
    report = run / f"{name}.xml"
    command = [sys.executable, "-m", "pytest", os.path.join("tests", "test_bek_models.py"), "-q",
               "-p", "no:cacheprovider", f"--junitxml={report}", "-o", "addopts="]  # fmt: skip
    if plugin:
        command += ["-p", "bek_patch"]
    paths = [str(run), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "BEK_PATCHED": str(int(plugin))}
    subprocess.run(command, cwd=run, env=env, check=False)
    outcomes = {}
    for case in ET.parse(report).iter("testcase"):
        key = f"{case.get('classname')}::{case.get('name')}"
        kinds = {child.tag for child in case}
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            if tag in kinds:
                outcome = tag
        outcomes[key] = outcome
    return outcomes


def summary(plain: dict, patched: dict, version: str, seconds: dict) -> tuple[str, list]:
    lost = sorted(k for k, v in plain.items() if v == "passed" and patched.get(k) != "passed")
    gained = sorted(k for k, v in patched.items() if v == "passed" and plain.get(k) != "passed")

    def count(outcomes):
        kinds = ("passed", "failure", "error", "skipped")
        return ", ".join(f"{sum(v == k for v in outcomes.values())} {k}" for k in kinds)

    lines = [
        "# transformers' own model tests with the drop-in",
        "",
        f"`.venv/bin/python scripts/transformers_model_tests.py --write "
        f"docs/TRANSFORMERS_TESTS.md` (transformers {version}, its source distribution's "
        f"`transformers-<version>/tests/test_modeling_common.py`; BERT, RoBERTa and "
        f"DistilBERT with every head; "
        f"our model testers in scripts/transformers_tests/).",
        "",
        "The source distribution ships `tests/*.py` (ModelTesterMixin and what it imports) but "
        "not the model-specific files (`transformers-<version>/tests/models/bert/...`) nor "
        "its `exporters` and `generation` test packages: the model testers (sizes and inputs) are "
        "ours, and the export and generation mixins are empty stand-ins, so their tests do not "
        "run here (the export of the drop-in is tested in tests/test_torch_ops.py; the "
        "broadcastable `token_type_ids` / `position_ids` those tests pass, and RoBERTa's "
        "`create_position_ids_*` tests, in tests/test_training.py). Failures and skips without "
        "the drop-in are this CPU-only environment's (flash attention, accelerators, hub "
        "access) and the same with it. `DropInTest` checks that the patched run builds the "
        "drop-in and the plain run does not.",
        "",
        f"- without the drop-in: {len(plain)} tests, {count(plain)} ({seconds['plain']:.0f} s)",
        f"- with the drop-in patched into every model: {len(patched)} tests, {count(patched)} "
        f"({seconds['patched']:.0f} s)",
        f"- passing without it but not with it: **{len(lost)}**",
        "",
    ]
    lines += [f"    {k}: {patched.get(k)}" for k in lost]
    if gained:
        lines += ["", "Passing with it but not without it:", ""]
        lines += [f"    {k}: {plain.get(k)}" for k in gained]
    return "\n".join(lines) + "\n", lost


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=ROOT / ".transformers-tests")
    parser.add_argument("--write", type=Path, help="write the summary (Markdown) here")
    arguments = parser.parse_args(argv)
    if importlib.util.find_spec("parameterized") is None:
        parser.error("transformers' tests import parameterized: pip install parameterized "
                     "(it is in this package's dev extra)")  # fmt: skip
    arguments.work.mkdir(exist_ok=True)
    version = transformers.__version__
    run = arguments.work / "run"
    prepare(fetch(version, arguments.work), run)
    results, seconds = {}, {}
    for name, plugin in (("plain", False), ("patched", True)):
        start = time.perf_counter()
        results[name] = pytest_run(run, name, plugin)
        seconds[name] = time.perf_counter() - start
    text, lost = summary(results["plain"], results["patched"], version, seconds)
    print(text)
    if arguments.write:
        arguments.write.write_text(text)
    return 1 if lost or not results["plain"] else 0


if __name__ == "__main__":
    sys.exit(main())
