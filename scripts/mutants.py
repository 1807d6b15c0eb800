"""Mutation testing of our own: plant each bug of scripts/mutants_list.py; the tests must fail.

For every mutant, a temporary copy of the package and its tests gets one textual
patch (file, exact old snippet, new snippet) and the mutant's tests run against
that copy, which must fail. The working tree is never modified.

- The copy comes first on the import path: the tests run with the copy as the
  working directory and on ``PYTHONPATH``, both of which precede the editable
  install's finder in site-packages (checked once per run: ``bert_embedding_kernels.__file__``
  must lie in the copy).
- numba's on-disk cache must never serve unmutated code (its key is the source
  file's path, modification time and size, and it does not track calls between
  modules): every run gets a fresh, empty ``NUMBA_CACHE_DIR``. With ``-x`` a
  caught mutant compiles only the few kernels its first failing test needs, so
  this costs little (measured on the 2-core CI machine kind: 30 mutants in
  162 s with the baseline's 65 s; seeding each cache from the baseline's
  saved under 10%).
- Before any mutant, the baseline (the unmutated copy) must pass every test the
  mutants use, or a "caught" would mean nothing. ``--no-baseline`` skips it where
  the whole suite has just passed on the same tree (.ci/run, after ``make test``:
  146 s saved of a CI run that must stay under 25 minutes).
- A mutant whose old snippet is not found exactly once is stale: reported as an
  error, never skipped.

Prints one line per mutant (caught / SURVIVED / stale / ERROR, the test file that
caught it, seconds) and exits non-zero unless every mutant was caught.

    python scripts/mutants.py               # all (make mutants)
    python scripts/mutants.py --list        # what would be planted
    python scripts/mutants.py --only 'fused-*' --verbose
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mutants_list import MUTANTS  # noqa: E402

# What a test run needs from the repository: the package, the tests, the asv suite
# (tests/test_rules.py reads its pinned rules), the pytest configuration and the
# shipped report the auto tests check the calibration against.
COPIED = ("kernels", "tests", "benchmarks", "pyproject.toml", "docs/report/results.json")
IGNORED = shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc", ".hypothesis", "*.pyc")
TIMEOUT_S = 600


class Stale(Exception):
    """The mutant's snippet is not where it says (the code moved on without it)."""


def apply(mutant: dict, text: str) -> str:
    """``text`` with the mutant's old snippet replaced; Stale unless it occurs exactly once."""
    start, stop = 0, len(text)
    if "within" in mutant:
        anchors = text.count(mutant["within"])
        if anchors != 1:
            raise Stale(f"anchor {mutant['within']!r} found {anchors} times in {mutant['file']}")
        start = text.index(mutant["within"])
        # The anchor's definition ends at the next top-level line (a closing bracket
        # of its own signature aside): the snippet must occur once in it.
        line_end = text.find("\n", start)
        following = re.compile(r"^(?![)\]}])\S", re.MULTILINE).search(text, line_end + 1)
        stop = len(text) if line_end < 0 or following is None else following.start()
    found = text.count(mutant["old"], start, stop)
    if found != 1:
        where = f"in the definition at {mutant['within']!r} " if "within" in mutant else ""
        raise Stale(f"old snippet found {found} times {where}in {mutant['file']}")
    at = text.index(mutant["old"], start, stop)
    return text[:at] + mutant["new"] + text[at + len(mutant["old"]) :]


def copy_tree(destination: Path) -> None:
    if destination.exists():
        shutil.rmtree(destination)
    destination.mkdir(parents=True)
    for name in COPIED:
        source = ROOT / name
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=IGNORED)  # copy2: modification times kept
        elif source.exists():
            shutil.copy2(source, target)


def environment(work: Path, cache: Path) -> dict:
    env = dict(os.environ)
    # The copy's src root (the package) and its top (tests/ and benchmarks/ import helpers).
    path = [str(work / "kernels"), str(work), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(path).rstrip(os.pathsep)
    env["NUMBA_CACHE_DIR"] = str(cache)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("NUMBA_DISABLE_JIT", None)
    return env


def check_import_precedence(work: Path, cache: Path) -> None:
    """The copy's package, not the installed one, is what the tests import."""
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import bert_embedding_kernels; print(bert_embedding_kernels.__file__)",
        ],
        cwd=work,
        env=environment(work, cache),
        capture_output=True,
        text=True,
        check=False,
    )
    imported = Path(probe.stdout.strip() or "?").resolve()
    if probe.returncode != 0 or work.resolve() not in imported.parents:
        sys.exit(
            f"mutants: the copy is not what imports: the package came from {imported}\n"
            f"{probe.stderr}"
        )


def run_tests(work: Path, cache: Path, tests: list[str]) -> tuple[int, str, float]:
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-rfE", "-p", "no:cacheprovider"]
    start = time.perf_counter()
    try:
        completed = subprocess.run(
            [*command, *tests],
            cwd=work,
            env=environment(work, cache),
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        output = (error.stdout or b"").decode(errors="replace") if error.stdout else ""
        return -1, output, time.perf_counter() - start
    return completed.returncode, completed.stdout + completed.stderr, time.perf_counter() - start


def first_failure(output: str) -> str:
    """The test file (and test) the short summary names first."""
    match = re.search(r"^(?:FAILED|ERROR) ([^\s:]+)(?:::([^\s\[]+))?", output, re.MULTILINE)
    if not match:
        return "?"
    return match.group(1) + (f"::{match.group(2)}" if match.group(2) else "")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="print the mutants and exit")
    parser.add_argument("--only", nargs="+", metavar="GLOB", help="run the mutants named so")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--verbose", action="store_true", help="print each run's last lines")
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the unmutated run: only where the whole suite just passed on this tree",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="mutants run at once, each in its own copy (numba compiles on one core)",
    )
    arguments = parser.parse_args(argv)

    mutants = [
        m
        for m in MUTANTS
        if not arguments.only or any(fnmatch.fnmatch(m["name"], g) for g in arguments.only)
    ]
    if arguments.list:
        for m in mutants:
            print(f"{m['name']:<34} {m['file']:<36} {' '.join(m['tests'])}\n    {m['why']}")
        return 0
    if not mutants:
        print("mutants: none selected", file=sys.stderr)
        return 2

    started = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="mutants-"))
    work, pristine = scratch / "work", scratch / "pristine"
    failures = 0
    try:
        copy_tree(pristine)
        copy_tree(work)
        check_import_precedence(work, scratch / "cache-probe")
        # Stale mutants first: they need no test run.
        patched = {}
        for m in mutants:
            try:
                patched[m["name"]] = apply(m, (pristine / m["file"]).read_text())
            except (Stale, FileNotFoundError) as error:
                patched[m["name"]] = error
        # The baseline: every test any mutant uses passes on the unmutated copy.
        selection = list(dict.fromkeys(t for m in mutants for t in m["tests"]))
        if arguments.no_baseline:
            print(f"{'baseline':<9} {'(skipped: --no-baseline)':<34}", flush=True)
        else:
            status, output, seconds = run_tests(work, scratch / "cache-baseline", selection)
            selected = f"{len(selection)} test selections"
            line = f"{'baseline':<9} {'(unmutated)':<34} {selected:<70} {seconds:6.1f} s"
            print(line, flush=True)
            if status != 0:
                print(output[-4000:])
                print("mutants: the baseline fails, so no mutant result would mean anything")
                return 1
        runnable = [m for m in mutants if not isinstance(patched[m["name"]], Exception)]
        for m in mutants:
            if m not in runnable:
                print(f"{'stale':<9} {m['name']:<34} {patched[m['name']]}")
                failures += 1

        def run_one(m: dict) -> tuple[dict, int, str, float]:
            copy = scratch / f"work-{m['name']}"
            copy_tree(copy)
            (copy / m["file"]).write_text(patched[m["name"]])
            cache = scratch / f"cache-{m['name']}"  # fresh and empty: compiled from the mutant
            status, output, seconds = run_tests(copy, cache, m["tests"])
            shutil.rmtree(copy, ignore_errors=True)
            return m, status, output, seconds

        with ThreadPoolExecutor(max_workers=max(1, arguments.jobs)) as pool:
            for m, status, output, seconds in pool.map(run_one, runnable):
                if status in (1, 2) and re.search(r"^(FAILED|ERROR) ", output, re.MULTILINE):
                    verdict, detail = "caught", first_failure(output)
                elif status == 0:
                    verdict, detail = "SURVIVED", "every selected test passed"
                    failures += 1
                elif status == -1:
                    verdict, detail = "ERROR", f"timed out after {TIMEOUT_S} s"
                    failures += 1
                else:
                    verdict, detail = "ERROR", f"pytest exit status {status}: {output[-300:]!r}"
                    failures += 1
                print(f"{verdict:<9} {m['name']:<34} {detail:<70} {seconds:6.1f} s", flush=True)
                if arguments.verbose:
                    print(textwrap.indent(output[-2000:], "    | "))
    finally:
        if arguments.keep:
            print(f"mutants: kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    total = time.perf_counter() - started
    caught = len(mutants) - failures
    print(f"mutants: {caught} of {len(mutants)} caught in {total:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
