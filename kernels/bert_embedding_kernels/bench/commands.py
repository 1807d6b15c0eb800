"""What each ``embench`` command does, given its parsed arguments (the parser: cli.py)."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

from .. import auto
from ..dtypes import parse
from ..registry import METHODS
from .engine.cases import PERF_BUDGET, Shape
from .engine.timing import format_time


def check(arguments) -> int:
    """Every method's agreement with the reference and its median time with its CI, within
    ``--budget`` (bench/report/at_shape.py, which ``embench mine`` shares)."""
    from .report import at_shape

    return at_shape.run(arguments, "check")


# embench mine's default --budget: seconds of timing for a dozen contenders at one shape.
MINE_BUDGET = 10.0


def mine(arguments) -> int:
    """Our methods and every installed peer at the user's shape or checkpoint: checked,
    timed within ``--budget``, and which to use (bench/report/at_shape.py, shared with check)."""
    from .engine import peers
    from .report import at_shape

    inputs = None
    if arguments.tables:  # the checkpoint's sizes and real ids: a bad path is one line
        from .engine import realdata

        try:
            inputs = realdata.real_inputs(
                arguments.tables, arguments.batch_size, arguments.seq_len, arguments.dtype
            )
        except (OSError, KeyError, ValueError, TypeError, ImportError) as error:
            print(f"embench mine: --tables {arguments.tables}: {error}", file=sys.stderr)
            return 2
        tables = inputs[0]
        arguments.shape = Shape(
            batch=arguments.batch_size, seq=arguments.seq_len, hidden=tables.hidden_size,
            vocab=tables.vocab_size, max_positions=tables.max_positions,
            type_vocab=tables.type_vocab_size, dtype=tables.dtype.name,
        )  # fmt: skip
    arguments.dtype = arguments.dtype or "float32"
    if arguments.peers is None:
        named = peers.available_peers() + peers.available_peers(layer_norm=True)
    else:  # no names: ours only; each name checked by the parser
        named = list(dict.fromkeys(arguments.peers))
    peer_reason = ""
    if arguments.family:
        inputs, peer_reason = _family_inputs(arguments)
    return at_shape.run(
        arguments, "mine", peer_names=named, layer_norm=not arguments.no_layer_norm,
        inputs=inputs, peer_reason=peer_reason,
    )  # fmt: skip


def _family_inputs(arguments):
    """``mine --family``: the family's tables and ids at the user's shape (its shape set on
    ``arguments``), and why the peers are skipped ('' where they compute its layout)."""
    from ..families import family_of_model_type
    from .engine.cases import family_shape, make_family_inputs, position_rule
    from .report.at_shape import shape_of

    family = family_of_model_type(arguments.family, "--family")  # checked by the parser
    arguments.shape = family_shape(shape_of(arguments), family)
    tables = ["token"] + ["segment"] * family.segment + ["position"] * bool(family.positions)
    name, padded = position_rule(family)
    positions = "none" if name is None else f"{name!r}" + " (padding id 1)" * padded
    print(
        f"embench mine: --family {arguments.family}: {family.name}'s layout: "
        f"{', '.join(tables)} tables; positions {positions}; "
        f"{'LayerNorm' if family.layer_norm else 'no LayerNorm'}",
        file=sys.stderr,
        flush=True,
    )
    peer_reason = ""
    if not family.segment or name != "absolute":
        peer_reason = (
            f"computes BERT's layout (token types, positions 0 .. seq-1), not {family.name}'s"
        )
    return make_family_inputs(arguments.shape, family), peer_reason


def bench_table(arguments) -> int:
    """Print the Markdown table of a pytest-benchmark JSON file."""
    from .report.benchtable import render_file

    try:
        table = render_file(arguments.json)
    except (OSError, ValueError, KeyError) as error:
        print(f"embench bench-table: cannot read {arguments.json}: {error}", file=sys.stderr)
        return 2
    print(table)  # outside the try: a closed stdout is not a file that cannot be read
    return 0


def perf(arguments) -> int:
    """Measure the fused kernel against the roofline and the peers; print or write Markdown."""
    if arguments.device == "cuda":
        from .perf import gpu  # imports numba.cuda: only when asked for

        return gpu.run(use_compile=not arguments.no_compile, write=arguments.write)
    from .perf import figures as performance
    from .perf import markdown as perf_markdown

    budget = PERF_BUDGET if arguments.budget is None else arguments.budget
    print(
        f"embench perf: at BERT-base, checking every contender, then {budget:g} s of forward "
        f"rounds, {budget / 2:g} s each of backward, training-step and whole-model rounds "
        f"and {performance.SMALL_CALL_BUDGET:g} s of small calls (--budget; about "
        f"{2.5 * budget + performance.SMALL_CALL_BUDGET:.0f} s "
        "of timing, plus the checks, torch.compile's compile and a fresh process's first call)",
        file=sys.stderr,
    )
    *measured, whole = performance.measure(
        budget,
        include_compile=not arguments.no_compile,
        include_whole_model=not arguments.no_whole_model,
    )
    command = "embench " + " ".join(arguments.argv)
    run = performance.summary(*measured, command, whole=whole)
    text = perf_markdown.render(run)
    if arguments.write:
        Path(arguments.write).write_text(text)
        Path(arguments.write).with_suffix(".json").write_text(json.dumps(run, indent=1) + "\n")
    print(text)
    return 0


def scaling(arguments) -> int:
    """Time the CPU kernels at several thread counts; print or write Markdown (and a plot)."""
    import os

    from .perf import scaling as scaling_module

    try:
        threads = scaling_module.check_threads(
            arguments.threads or scaling_module.default_threads()
        )
    except ValueError as error:
        print(f"embench scaling: --threads: {error}", file=sys.stderr)
        return 2
    print(f"embench scaling: threads {list(threads)} at BERT-base", file=sys.stderr)
    load = [os.getloadavg()[0]]

    def progress(rounds: int) -> None:  # the number of rounds is not known in advance
        if sys.stderr.isatty():
            print(f"embench scaling: round {rounds}", end="\r", file=sys.stderr, flush=True)

    timings = scaling_module.measure(threads, arguments.budget, progress=progress)
    load.append(os.getloadavg()[0])
    text = scaling_module.render(timings, threads, "embench " + " ".join(arguments.argv), load)
    if arguments.write:
        with open(arguments.write, "w") as handle:
            handle.write(text)
        picture = arguments.write.rsplit(".", 1)[0] + ".png"
        if scaling_module.plot(timings, threads, picture):
            print(f"embench scaling: plot in {picture}", file=sys.stderr)
    print(text)
    return 0


def report(arguments) -> int:
    """Sweep, check, time and write report.md, results.json, calibration.json and plots."""
    from pathlib import Path

    from .report import measure as report_module

    if arguments.tables:  # read the checkpoint now: a bad path is one line, not a traceback
        from .engine import realdata

        try:
            realdata.load_tables(arguments.tables)
        except (OSError, KeyError, ValueError, TypeError, ImportError) as error:
            print(f"embench report: --tables {arguments.tables}: {error}", file=sys.stderr)
            return 2
    overrides = {}
    if arguments.vocab_sizes is not None:
        overrides["vocab_sizes"] = arguments.vocab_sizes
    if arguments.seq_lens:
        overrides["seq_lens"] = arguments.seq_lens
    if arguments.family_vocab_sizes is not None:
        overrides["family_vocab_sizes"] = arguments.family_vocab_sizes
    if arguments.small_seq_lens is not None:
        overrides["small_seq_lens"] = arguments.small_seq_lens
    if arguments.peers is not None:  # no names: no peers at all; each name checked by the parser
        overrides["peers"] = tuple(dict.fromkeys(arguments.peers))
    if arguments.methods:
        overrides["methods"] = tuple(arguments.methods)
    if arguments.tables:  # without --vocab-sizes and --hidden-size (cli.py refuses them)
        overrides["tables"] = arguments.tables
    settings = report_module.Settings.defaults(arguments.quick, **overrides)
    base = settings.base
    base = dataclasses.replace(
        base,
        batch=base.batch if arguments.batch_size is None else arguments.batch_size,
        hidden=base.hidden if arguments.hidden_size is None else arguments.hidden_size,
        dtype=arguments.dtype,
    )
    settings = dataclasses.replace(settings, base=base)
    if arguments.budget is not None:
        settings = dataclasses.replace(settings, budget=arguments.budget)
    results = report_module.run(settings)
    command = "embench " + " ".join(arguments.argv)
    directory = Path(arguments.out)
    written = report_module.write(results, directory, command)
    print(f"embench report: wrote {', '.join(str(directory / w) for w in written)}")
    summary = json.loads((directory / "results.json").read_text())
    print("\n".join(f"  {r['text']}" for r in summary["recommendations"]))
    failed = [
        f"{name} at {p['sweep']} {p['size']}"
        for p in summary["points"]
        for name, c in p["contenders"].items()
        if c["status"] == "failed"
    ]
    if failed:
        print(
            f"embench report: {len(failed)} contender(s) FAILED their check against the "
            f"reference and were not timed ({'; '.join(failed[:5])}); "
            f"see {directory / 'report.md'}",
            file=sys.stderr,
        )
        return 1
    return 0


def choose(arguments) -> int:
    """Print the method the calibrated cost model picks for one shape, and why."""

    from .report.at_shape import shape_of

    shape = shape_of(arguments)
    shape_args = (
        shape.tokens,
        shape.hidden,
        parse(shape.dtype).itemsize,
        shape.vocab,
        shape.type_vocab,
        shape.max_positions,
    )
    try:
        calibration = auto.calibration()
    except RuntimeError as error:
        print(f"embench choose: {error}", file=sys.stderr)
        return 2
    predictions = {
        m: auto.predict(m, *shape_args) for m in calibration["coefficients"] if m in METHODS
    }
    best = auto.choose(*shape_args)
    others = ", ".join(
        f"{m} {format_time(predictions[m])}"
        for m in sorted(predictions, key=predictions.get)
        if m != best
    )
    source = calibration.get("machine", {}).get("cpu", "?")
    own = os.environ.get("EMBENCH_CALIBRATION")
    where = (
        f"your calibration {own}"
        if own
        else "the shipped calibration; set EMBENCH_CALIBRATION=DIR/calibration.json "
        "(written by embench report --out DIR) to use your own machine's"
    )
    print(best)
    print(
        f"why: predicted {format_time(predictions[best])} per call vs {others} "
        f"(cost model fitted by embench report on {source}; {where})"
    )
    return 0


def compare(arguments) -> int:
    """Compare two results.json runs point by point, normalised by each run's copy."""
    from .engine import noise
    from .report import compare as comparing

    try:
        a, b = comparing.load(arguments.a), comparing.load(arguments.b)
    except comparing.ResultsError as error:
        print(f"embench compare: {error}", file=sys.stderr)
        return 2
    for name, run in (("A", a), ("B", b)):
        source = run.get("machine", {})
        print(
            f"embench compare: {name} = {getattr(arguments, name.lower())}: "
            f"{run.get('command', '?')} ({source.get('package', source.get('kernels', '?'))}, "
            f"commit {source.get('commit', 'not recorded')}); "
            f"{noise.describe(noise.of_results(run))}"
        )
    unlike_noise = noise.mismatch(noise.of_results(a), noise.of_results(b))
    if unlike_noise and arguments.fail_above is not None and not arguments.allow_noisy:
        print(
            f"embench compare: the runs' noise differs beyond what their copy-normalised "
            f"ratios absorb ({unlike_noise}): no gate on them; rerun both on a quiet machine, "
            "or pass --allow-noisy to judge anyway",
            file=sys.stderr,
        )
        return 2
    try:
        rows = comparing.compare(a, b, allow_different=arguments.allow_different)
    except comparing.UnlikeRuns as error:
        print(f"embench compare: {error}", file=sys.stderr)
        return 2
    print(comparing.render(rows, arguments.a, arguments.b))
    if unlike_noise:
        print(
            f"embench compare: NOISY: the runs' noise differs ({unlike_noise}); under load the "
            "one-hot (BLAS) paths slow down far more than the copy, so read their changes as "
            "the machine's, not the code's",
            file=sys.stderr,
        )
    if arguments.fail_above is not None:
        failing = comparing.failures(rows, arguments.fail_above)
        if failing:
            names = ", ".join(
                f"{r['contender']} ({r['change']:.2f}x over {r['points']} points)" for r in failing
            )
            print(
                f"embench compare: {len(failing)} got slower by more than "
                f"{arguments.fail_above:.0%} (95% CI excluding 1): {names}",
                file=sys.stderr,
            )
            return 1
    return 0
