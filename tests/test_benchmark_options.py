"""pytest-benchmark as its users run it (issue 32): `--benchmark-only` and `--benchmark-json`
time the benchmarks, a plain `pytest` runs each once untimed, and bench-table reads the JSON."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ONE = ["-k", "fused and 1000 and not backward"]  # one small benchmark of the forward suite


def _pytest(tmp_path, *options):
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(ROOT),
         "-c", str(ROOT / "pyproject.toml"), str(ROOT / "tests" / "benchmarks"), *ONE, *options],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_benchmark_only_and_json_time_the_benchmarks(tmp_path):
    out = tmp_path / "b.json"
    done = _pytest(tmp_path, "--benchmark-only", f"--benchmark-json={out}")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    timed = json.loads(out.read_text())["benchmarks"]
    assert timed and all(b["stats"]["rounds"] >= 1 and b["stats"]["median"] > 0 for b in timed)
    from bert_embedding_kernels.bench import cli

    assert cli.main(["bench-table", str(out)]) == 0


def test_a_plain_run_executes_each_benchmark_once_untimed(tmp_path):
    done = _pytest(tmp_path)
    assert done.returncode == 0, done.stdout[-2000:]
    assert "passed" in done.stdout and "benchmark:" not in done.stdout  # no timing table
