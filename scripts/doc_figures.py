"""The README's measured figures, rendered from the generated results they come from.

Every figure the README quotes lives in a generated block between
``<!-- figures: SOURCE ... -->`` and ``<!-- end of figures -->``, rendered here from
SOURCE (``docs/PERFORMANCE.json``, written by ``embench perf --write``, or
``docs/report/results.json``, written by ``embench report``). A figure therefore
exists once, in its run's data, and the README cannot drift from it:
``tests/test_doc_figures.py`` fails when a block differs from what this script renders.

    python scripts/doc_figures.py          # rewrite the blocks from the sources
    python scripts/doc_figures.py --check  # exit 1 when a block is stale
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from bert_embedding_kernels.bench.perf import markdown as perf_markdown
from bert_embedding_kernels.bench.report import render

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TOOL = "scripts/doc_figures.py"
BLOCK = re.compile(
    r"(<!-- figures: (?P<source>\S+) \(" + re.escape(TOOL) + r"\); do not edit -->\n)"
    r".*?(<!-- end of figures -->)",
    re.S,
)
# At the report's base point: the contenders a reader compares first.
BASE_POINT_NAMES = (
    "fused",
    "fused (allocating)",
    "gather",
    "numpy-indexing",
    "torch-compile",
    "onnxruntime",
    "onehot",
    "fused+LN",
    "onnxruntime-embedlayernorm",
    "copy",
)


def _machine(machine: dict) -> str:
    words = f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores"
    if "commit" in machine:
        words += f", commit {machine['commit'][:7]}"
        if machine.get("dirty") == "True":
            words += " with uncommitted changes"
    return words


def report_block(results: dict) -> list[str]:
    settings, base = results["settings"], results["settings"]["base"]
    lines = [
        f"From `{results['command']}` ({_machine(results['machine'])}); batch "
        f"{base['batch']}, hidden {base['hidden']}, {base['dtype']}; every ratio with its 95% "
        "interval in the report:",
        "",
        *[f"- {r['text']}" for r in results["recommendations"]],
    ]
    auto = render.auto_lines(results)
    if auto:
        lines += ["", auto[0]]
    point = next(
        (p for p in results["points"] if p["sweep"] == "vocab" and p["size"] == base["vocab"]),
        None,
    )
    if point is not None:
        measured = point["contenders"]
        cells = [
            f"`{name}` {render.format_time(measured[name]['median_s'])}"
            for name in BASE_POINT_NAMES
            if measured.get(name, {}).get("status") == "measured"
        ]
        lines += [
            "",
            f"Median time per call at seq {base['seq']}, vocab {base['vocab']} (same run): "
            + ", ".join(cells)
            + f". Sweeps: vocab {list(settings['vocab_sizes'])}, seq "
            f"{list(settings['seq_lens'])}, batch 1 at seq {list(settings['small_seq_lens'])}.",
        ]
    return lines


def perf_block(run: dict) -> list[str]:
    before, after = run["load"]
    lines = [
        f"From `{run['command']}` ({run['machine'].split(';')[0]}, {run['cores']} cores; "
        f"1-minute load {before:.2f} before and {after:.2f} after):",
        "",
        "| figure | measured [95% CI] | target |",
        "|---|---:|---|",
    ]
    for row in run["figures"]:
        verdict = perf_markdown.verdict_cell(row)
        lines.append(f"| {row['figure']} | {perf_markdown.measured_cell(row)} | {verdict} |")
    lines += [
        f"| first call in a fresh process, s | {run['first_call_s']:.3f} | |",
        f"| `import bert_embedding_kernels`, s | {run['import_s']:.3f} | |",
    ]
    return lines


RENDERERS = {"docs/PERFORMANCE.json": perf_block, "docs/report/results.json": report_block}


def rendered(text: str, root: Path = ROOT) -> str:
    """``text`` with every figures block rendered from its source."""

    def fill(match: re.Match) -> str:
        source = match["source"]
        if source not in RENDERERS:
            raise SystemExit(f"README names an unknown figures source {source!r}")
        data = json.loads((root / source).read_text())
        body = "\n".join(RENDERERS[source](data))
        return f"{match[1]}{body}\n{match[3]}"

    return BLOCK.sub(fill, text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a block is stale")
    arguments = parser.parse_args(argv)
    text = README.read_text()
    new = rendered(text)
    if arguments.check:
        if new != text:
            print(
                "README.md's figures are stale: run python scripts/doc_figures.py", file=sys.stderr
            )
            return 1
        return 0
    README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
