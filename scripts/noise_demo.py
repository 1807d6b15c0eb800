"""The report on a quiet machine and beside two busy processes: do its winners hold?

Runs ``embench report`` twice at the same ``--budget``, each into its own directory: once on
the machine as it is (the quiet run) and once with two CPU-bound processes started beside it
(``python -c 'while True: pass'``, stopped when it ends), then writes NOISE.md into docs/
(or ``--doc``): both runs' recorded noise (the 1-minute load before and after, the spread
of the copy repeated every round, the median interval, the unstable medians and what the
second pass re-timed), every point's verdict in each run side by side, every winner that
flipped (the two runs name different winners where both decided) and every verdict the
busy run could not decide (a tie, or nothing else measured) where the quiet run did.

A run is called quiet only where the load before it is at most 0.5 per core
(:data:`QUIET_LOAD_PER_CORE`); above that the script refuses to start (exit 2) unless
``--anyway``, and the document then says the first run was not quiet.

    python scripts/noise_demo.py --budget 3                  # about 2 x make report's time
    python scripts/noise_demo.py --budget 0.05 --out /tmp/nd --doc /tmp/nd/NOISE.md \\
        --anyway -- --quick --peers                           # a smoke run, anywhere
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bert_embedding_kernels.bench.engine import noise
from bert_embedding_kernels.bench.engine.timing import UNSTABLE

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "NOISE.md"
TOOL = "scripts/noise_demo.py"
QUIET_LOAD_PER_CORE = 0.5  # a run with more load before it is not called quiet
BUSY_PROCESSES = 2
EMBENCH = "import sys; from bert_embedding_kernels.bench.cli import main; sys.exit(main())"


def load_per_core() -> float:
    return os.getloadavg()[0] / (os.cpu_count() or 1)


@contextlib.contextmanager
def busy(count: int = BUSY_PROCESSES):
    """``count`` CPU-bound processes beside the block, stopped when it ends (or fails)."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield burners
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


def report(out: Path, budget: float, extra: list[str]) -> dict:
    """One ``embench report`` into ``out``; its results.json."""
    argv = ["report", "--budget", f"{budget:g}", "--out", str(out), *extra]
    subprocess.run([sys.executable, "-c", EMBENCH, *argv], check=True)
    return json.loads((out / "results.json").read_text())


def decided(entry: dict | None) -> bool:
    """A verdict that names a winner: something else measured, and no tie."""
    return bool(entry and entry.get("runner_up") and not entry.get("tie"))


def verdict_text(entry: dict | None) -> str:
    if entry is None:
        return "-"
    if entry.get("runner_up") is None:
        return f"{entry['fastest']} (nothing else measured)"
    low, high = entry["ci95"]
    ratio = f"{entry['median']:.2f} [{low:.2f}, {high:.2f}]"
    if entry.get("tie"):
        return f"tie: {entry['runner_up']} / {entry['fastest']} {ratio}"
    return f"{entry['fastest']}, {entry['runner_up']} {ratio}x slower"


def compare(quiet: dict, busy_run: dict) -> list[dict]:
    """Every (sweep, size, group) verdict of either run, side by side, and how they relate:
    ``same``, ``flip`` (both decided, different winners), ``busy undecided`` (only the
    quiet run decided), ``quiet undecided`` or ``neither decided``."""
    points = {}
    for side, results in (("quiet", quiet), ("busy", busy_run)):
        for point in results["points"]:
            for group, entry in point.get("verdict", {}).items():
                key = (point["sweep"], point["size"], group)
                points.setdefault(key, {"quiet": None, "busy": None})[side] = entry
    rows = []
    for (sweep, size, group), entries in sorted(points.items()):
        a, b = entries["quiet"], entries["busy"]
        if decided(a) and decided(b):
            relation = "same" if a["fastest"] == b["fastest"] else "flip"
        elif decided(a):
            relation = "busy undecided"
        elif decided(b):
            relation = "quiet undecided"
        else:
            relation = "neither decided"
        rows.append(
            {
                "sweep": sweep,
                "size": size,
                "group": group,
                "quiet": a,
                "busy": b,
                "relation": relation,
            }
        )
    return rows


def noise_row(name: str, results: dict) -> str:
    record = noise.of_results(results)
    load = record.get("load")
    cores = record.get("cores") or "-"
    before, after = (f"{value:.2f}" for value in load) if load else ("-", "-")
    unstable = sum(
        (e["ci95_s"][1] - e["ci95_s"][0]) / 2 > UNSTABLE * e["median_s"]
        for p in results["points"]
        for e in p["contenders"].values()
        if e["status"] == "measured"
    )
    measured = sum(
        e["status"] == "measured" for p in results["points"] for e in p["contenders"].values()
    )
    retimed = results.get("retimed") or {}
    second = (
        f"{retimed['retimed']} of {retimed['unstable_before']} points, "
        f"{retimed['unstable_after']} stay unstable"
        if retimed
        else "-"
    )

    def width(key):
        return "-" if record.get(key) is None else f"+-{record[key]:.1%}"

    return (
        f"| {name} | {before} | {after} | {cores} | {width('copy_half_width')} | "
        f"{width('median_half_width')} | {unstable} of {measured} | {second} |"
    )


def _listed(title: str, rows: list[dict]) -> list[str]:
    """``title`` and one line per row, both runs' verdicts; nothing for no rows."""
    if not rows:
        return []
    lines = [title, ""]
    lines += [
        f"- {r['sweep']} {r['size']} ({r['group']}): quiet {verdict_text(r['quiet'])}; busy "
        f"{verdict_text(r['busy'])}"
        for r in rows
    ]
    return [*lines, ""]


def render(
    quiet: dict, busy_run: dict, *, budget: float, quiet_load: float, extra: tuple = ()
) -> str:
    """NOISE.md: the two runs' noise, their verdicts side by side, the flips."""
    rows = compare(quiet, busy_run)
    flips = [r for r in rows if r["relation"] == "flip"]
    undecided = [r for r in rows if r["relation"] == "busy undecided"]
    same = sum(r["relation"] == "same" for r in rows)
    was_quiet = quiet_load <= QUIET_LOAD_PER_CORE
    lines = [
        "# The report on a quiet machine and beside two busy processes",
        "",
        f"Generated by `python {TOOL} --budget {budget:g}"
        + (f" -- {' '.join(extra)}" if extra else "")
        + "` (do not edit): `embench report` "
        f"at `--budget {budget:g}` twice, first on the machine as it was, then with "
        f"{BUSY_PROCESSES} CPU-bound processes (`python -c 'while True: pass'`) beside it.",
        "",
        f"- machine: {quiet['machine'].get('cpu', '?')}, {quiet['machine'].get('cores', '?')} "
        "cores",
        f"- quiet run: `{quiet.get('command', 'embench report')}`",
        f"- busy run: `{busy_run.get('command', 'embench report')}`",
        f"- a run is called quiet only where the 1-minute load before it is at most "
        f"{QUIET_LOAD_PER_CORE} per core; before the first run it was {quiet_load:.2f} per core: "
        + (
            "quiet"
            if was_quiet
            else "**not quiet**: this comparison does not show what a "
            "quiet machine gives; run it again on one"
        ),
        "",
        "## How busy each run was",
        "",
        "| run | load before | load after | cores | the copy's interval | median interval "
        "| unstable medians (> +-10%) | re-timed while the budget lasted |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
        noise_row("quiet" if was_quiet else "first (not quiet)", quiet),
        noise_row(f"beside {BUSY_PROCESSES} busy processes", busy_run),
        "",
        "## Do the winners hold?",
        "",
        f"{len(rows)} verdicts (point and group): {same} name the same winner in both runs, "
        f"{len(flips)} flipped (both runs decided, different winners), {len(undecided)} the "
        "busy run could not decide (a tie or nothing else measured) where the quiet run did.",
        "",
    ]
    lines += _listed("Winners that flipped:", flips) or ["No named winner flipped.", ""]
    lines += _listed("Where the busy run could not decide, it says so (a tie):", undecided)
    lines += [
        "## Every verdict, side by side",
        "",
        "| sweep | size | group | quiet | busy | |",
        "|---|---:|---|---|---|---|",
    ]
    lines += [
        f"| {r['sweep']} | {r['size']} | {r['group']} | {verdict_text(r['quiet'])} | "
        f"{verdict_text(r['busy'])} | {r['relation']} |"
        for r in rows
    ]
    for name, results in (("quiet", quiet), ("busy", busy_run)):
        lines += ["", f"## The {name} run's recommendations", ""]
        lines += [f"- {r['text']}" for r in results.get("recommendations", [])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=3.0, help="embench report --budget")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(tempfile.gettempdir()) / "noise-demo",
        help="the two runs go into OUT/quiet and OUT/busy",
    )
    parser.add_argument("--doc", type=Path, default=DOC, help="the Markdown to write")
    parser.add_argument(
        "--anyway",
        action="store_true",
        help="run even where the load is above 0.5 per core (the doc then says "
        "the first run was not quiet)",
    )
    parser.add_argument("extra", nargs="*", help="after --: more embench report options")
    arguments = parser.parse_args(argv)
    quiet_load = load_per_core()
    if quiet_load > QUIET_LOAD_PER_CORE and not arguments.anyway:
        print(
            f"noise_demo: the 1-minute load is {quiet_load:.2f} per core, above "
            f"{QUIET_LOAD_PER_CORE}: not a quiet machine; wait, or --anyway",
            file=sys.stderr,
        )
        return 2
    started = time.perf_counter()
    quiet = report(arguments.out / "quiet", arguments.budget, arguments.extra)
    with busy():
        busy_run = report(arguments.out / "busy", arguments.budget, arguments.extra)
    arguments.doc.parent.mkdir(parents=True, exist_ok=True)
    text = render(
        quiet, busy_run, budget=arguments.budget, quiet_load=quiet_load, extra=arguments.extra
    )
    arguments.doc.write_text(text)
    minutes = (time.perf_counter() - started) / 60
    print(f"noise_demo: wrote {arguments.doc} ({minutes:.1f} min)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
