"""embench scaling end to end: every contender at every thread count, checked and timed.

One short run at BERT-base: a row per thread count, every cell a median (and past
the first row a speedup with its interval), the plot beside the Markdown. The
check that refuses to time a result that depends on the thread count is tested
on its own. Timings are not checked (tests check behaviour).
"""

import re

import numba
import numpy as np
import pytest

from bert_embedding_kernels.bench import cli
from bert_embedding_kernels.bench.perf import scaling


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    path = tmp_path_factory.mktemp("scaling") / "scaling.md"
    assert cli.main(["scaling", "--budget", "0.3", "--write", str(path)]) == 0
    return path


def test_a_row_per_thread_count_with_medians_and_speedups(written):
    rows = [line for line in written.read_text().splitlines() if re.match(r"\| \d+ \|", line)]
    threads = scaling.default_threads()
    assert [int(row.split("|")[1]) for row in rows] == list(threads)
    number = r"\d+(\.\d+)?(e[+-]?\d+)?"
    speedup = rf"{number} \({number}x \[{number}, {number}\]\)"
    for index, row in enumerate(rows):
        cells = [cell.strip() for cell in row.strip("|").split("|")][1:]
        assert len(cells) == len(scaling.CONTENDERS) + 1
        for cell in cells[:-1]:
            assert re.fullmatch(number if index == 0 else speedup, cell), cell
        assert re.fullmatch(rf"{number} \[{number}, {number}\]", cells[-1]), cells[-1]


def test_the_plot_is_written_beside_the_table(written):
    pytest.importorskip("matplotlib")
    picture = written.with_suffix(".png")
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_thread_counts_outside_the_pool_are_refused(capsys):
    too_many = numba.config.NUMBA_NUM_THREADS + 1
    assert cli.main(["scaling", "--threads", f"1,{too_many}"]) == 2
    assert "threads must be between 1 and NUMBA_NUM_THREADS" in capsys.readouterr().err
    with pytest.raises(ValueError, match="threads must be between 1"):
        scaling.check_threads([0, 1])


def test_a_result_that_depends_on_the_thread_count_is_not_timed():
    expected = {"fused (out=)": np.arange(6, dtype=np.float32)}
    calls = {"fused (out=) @2": lambda: np.arange(6, dtype=np.float32) + 1}
    with pytest.raises(AssertionError, match="at 2 threads differs"):
        scaling._check(2, calls, expected, into=None)


def test_a_median_of_three_digits_prints_without_a_bare_point():
    """Found by CI: a median of 100 us printed as "100." (a cell that depends on the
    measured value): every value prints as a number."""
    from bert_embedding_kernels.bench.engine.timing import Timings

    timings = Timings(samples={scaling._name("fused", 1): [100e-6] * 5})
    assert scaling._cell(timings, "fused", 1, 1e6, 1) == "100"
