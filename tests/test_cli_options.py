"""Every ``embench`` option is checked before any work starts (issue 37).

A value outside its option's rule ends the command as argparse ends it: exit status 2
and one error line that names the option and the rule, never a silent substitute
(``report --batch-size 0`` ran at batch 4), a traceback (``--batch-size -3``) or nonsense
(``check --budget -1``). Nothing here measures: every command line runs through
``cli.main`` in this process with each command's work replaced by a stub that fails the
test if it is reached, so a check that came after the work started would show.
"""

import json
import os
import subprocess
import sys

import pytest

from bert_embedding_kernels.bench import cli
from bert_embedding_kernels.bench.engine import peers
from bert_embedding_kernels.bench.report import measure as report

COMMANDS = ("check", "mine", "bench_table", "perf", "scaling", "report", "choose", "compare")
SIZE = "must be an integer >= 1"
SECONDS = "must be a number of seconds > 0"
SIZES = "must be comma-separated integers >= 1"


class WorkStarted(Exception):
    """A command's work ran: the options it was given were not all checked first."""


@pytest.fixture
def no_work(monkeypatch):
    """Every command's body replaced by a stub that records its arguments and stops."""

    def stub(arguments):
        raise WorkStarted(arguments)

    for name in COMMANDS:
        monkeypatch.setattr(cli, name, stub)


def _refused(argv: list[str], capsys) -> str:
    """The error line of a command line that must be refused with exit status 2."""
    with pytest.raises(SystemExit) as stopped:
        cli.main(argv)
    assert stopped.value.code == 2, argv
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


BAD = [
    # (command line, option named, the rule's words)
    *(
        ([command, option, value], option, SIZE)
        for command in ("check", "mine", "choose", "report")
        for option in ("--batch-size", "--hidden-size")
        for value in ("0", "-3", "2.5", "many")
    ),
    *(
        ([command, option, "0"], option, SIZE)
        for command in ("check", "mine", "choose")
        for option in ("--seq-len", "--vocab-size")
    ),
    *(
        ([command, "--budget", value], "--budget", SECONDS)
        for command in ("check", "mine", "perf", "scaling", "report")
        for value in ("0", "-1", "nan", "inf", "soon")
    ),
    (["report", "--vocab-sizes", "0,5"], "--vocab-sizes", SIZES),
    (["report", "--vocab-sizes", ""], "--vocab-sizes", SIZES),
    (["report", "--seq-lens", "32,x"], "--seq-lens", SIZES),
    (["report", "--seq-lens", "none"], "--seq-lens", SIZES),  # the seq-len sweep is always run
    (["report", "--family-vocab-sizes", "-1"], "--family-vocab-sizes", SIZES),
    (["report", "--small-seq-lens", "8,0"], "--small-seq-lens", SIZES),
    (["report", "--peers", "foo"], "--peers", "unknown peer 'foo'; known: numpy-indexing"),
    (["report", "--dtype", "int8"], "--dtype", "invalid choice: 'int8'"),
    (["mine", "--peers", "foo"], "--peers", "unknown peer 'foo'; known: numpy-indexing"),
    (["mine", "--tables", "minilm", "--vocab-size", "1000"], "--tables", "drop --vocab-size"),
    (["mine", "--tables", "minilm", "--hidden-size", "8"], "--tables", "drop --hidden-size"),
    (["report", "--methods", "magic"], "--methods", "invalid choice: 'magic'"),
    (["check", "--methods", "magic"], "--methods", "invalid choice: 'magic'"),
    (["check", "--dtype", "float8"], "--dtype", "invalid choice: 'float8'"),
    (["report", "--tables", "minilm", "--vocab-sizes", "1000"], "--tables", "drop --vocab-sizes"),
    (["report", "--tables", "minilm", "--hidden-size", "64"], "--tables", "drop --vocab-sizes"),
    (["perf", "--device", "tpu"], "--device", "invalid choice: 'tpu'"),
    (["perf", "--device", "cuda", "--budget", "5"], "--budget", "times the CPU run only"),
    (["perf", "--write", "my-perf.json"], "--write", "must be a Markdown file name"),
    (["scaling", "--write", "plot.png"], "--write", "must be a Markdown file name"),
    (["scaling", "--threads", "0,1"], "--threads", SIZES),
    (["scaling", "--threads", "two"], "--threads", SIZES),
    *(
        (["compare", "a.json", "b.json", "--fail-above", value], "--fail-above", ">= 0")
        for value in ("-0.1", "nan", "inf", "a lot")
    ),
]


@pytest.mark.parametrize(("argv", "option", "rule"), BAD, ids=[" ".join(b[0]) for b in BAD])
def test_a_bad_value_is_refused_before_any_work(argv, option, rule, no_work, capsys):
    line = _refused(argv, capsys)
    assert line.startswith(f"embench {argv[0]}: error: argument {option}"), line
    assert rule in line, line


def test_files_to_write_are_checked_before_the_run(tmp_path, no_work, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    cases = [
        (["report", "--out", str(a_file)], "--out", "a directory this user can write into"),
        (["report", "--out", str(a_file / "below")], "--out", "is not a writable directory"),
        (["perf", "--write", str(tmp_path / "no" / "perf.md")], "--write", "existing directory"),
        (["scaling", "--write", str(tmp_path)], "--write", "not a directory"),
    ]
    for argv, option, rule in cases:
        line = _refused(argv, capsys)
        assert line.startswith(f"embench {argv[0]}: error: argument {option}"), line
        assert rule in line, line
    # a directory that does not exist yet is made by the report: accepted
    with pytest.raises(WorkStarted):
        cli.main(["report", "--out", str(tmp_path / "new" / "report")])


def test_a_peer_that_is_not_installed_is_named(monkeypatch, no_work, capsys):
    monkeypatch.setattr(peers, "available_peers", lambda layer_norm=False: [])
    line = _refused(["report", "--peers", "torch-eager"], capsys)
    assert "argument --peers: 'torch-eager' is not installed here; installed: none" in line


@pytest.mark.parametrize(
    "argv",
    [
        ["check", "--batch-size", "1", "--budget", "0.001"],
        ["choose", "--hidden-size", "1", "--vocab-size", "1"],
        ["perf", "--budget", "0.5"],
        ["perf", "--device", "cuda"],
        ["scaling", "--threads", "1", "--budget", "1e-3"],
        ["compare", "a.json", "b.json", "--fail-above", "0"],
        ["report", "--peers"],
        ["report", "--vocab-sizes", "none", "--small-seq-lens", "none"],
    ],
    ids=" ".join,
)
def test_the_smallest_good_values_reach_the_command(argv, no_work):
    with pytest.raises(WorkStarted):
        cli.main(argv)


def test_report_runs_what_it_was_given(monkeypatch):
    """--batch-size, --hidden-size and --budget reach the sweep as given: no default
    stands in for a value the user named (``if arguments.budget:`` once did)."""

    def run(settings):
        raise WorkStarted(settings)

    monkeypatch.setattr(report, "run", run)
    argv = ["report", "--quick", "--batch-size", "1", "--hidden-size", "3", "--budget", "0.01"]
    with pytest.raises(WorkStarted) as started:
        cli.main([*argv, "--peers", "numpy-indexing", "numpy-indexing"])
    settings = started.value.args[0]
    assert (settings.base.batch, settings.base.hidden, settings.budget) == (1, 3, 0.01)
    assert settings.peers == ("numpy-indexing",)


BENCHMARK_JSON = {
    "machine_info": {"cpu": {"brand_raw": "Test CPU"}, "python_version": "3.11"},
    "datetime": "2026-01-01",
    "benchmarks": [
        {"group": "b1-s2", "name": "t[fused]", "extra_info": {"method": m}, "stats": {"median": t}}
        for m, t in (("fused", 2e-3), ("copy", 1e-3))
    ],
}


def test_a_closed_pipe_ends_quietly(tmp_path):
    """``embench bench-table b.json | head``: the reader went away, not the file. The
    command stops without a word, with the status a shell gives a tool that SIGPIPE
    ended, as Unix tools do (it once said "cannot read b.json", exit 2)."""
    table = tmp_path / "b.json"
    table.write_text(json.dumps(BENCHMARK_JSON))
    reader, writer = os.pipe()
    os.close(reader)  # nobody will read: the first write fails with EPIPE
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bert_embedding_kernels.bench", "bench-table", str(table)],
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(writer)
    assert done.stderr == ""
    assert done.returncode == cli.BROKEN_PIPE_STATUS
