"""Time the CUDA kernels on a GPU against a device-to-device copy and torch; print Markdown.

    embench perf --device cuda                                   # < 4 minutes on an H100
    embench perf --device cuda --no-compile                      # without torch.compile
    NUMBA_ENABLE_CUDASIM=1 python -m bert_embedding_kernels.bench.perf.gpu --smoke   # the simulator

Cases: BERT-base (batch 32 x seq 512, hidden 768, vocab 30522, float32) and a
single 1 x 128 sequence, token ids drawn from Zipf's law (exponent 1, ranks
shuffled over the vocabulary, seeded). Operations: the fused sum, sum +
LayerNorm, the backward pass (the three table gradients), and LayerNorm's
backward (gradients of the sum, the weight and the bias).

How it measures (docs/GPU.md):

- GPU time from CUDA events around ``INNER`` back-to-back calls. Before each
  timed group a spin kernel keeps the GPU busy while the host queues the
  calls, so the events see the kernels, not the host's launch overhead
  (numba's Python-side launch costs tens of microseconds, longer than a
  1 x 128 kernel). The host-inclusive time per call is reported beside it.
- Contenders interleaved round by round (the order rotates), ``ROUNDS`` rounds;
  medians with 95% confidence intervals from order statistics; the copy's
  share ("roofline": a D2D copy of the output's bytes / this) from paired rounds.
- Before timing, the results are checked against numpy on the host: the sum
  and the backward bit for bit, LayerNorm to rounding.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

import bert_embedding_kernels.cuda as kc

from ..engine.cases import zipf_ids
from ..engine.options import markdown_path, positive_int
from ..engine.timing import Timings, sample_rounds
from .gpu_checks import check_results

cuda = kc.cuda
ROUNDS = 25
INNER = 10
SPIN_SECONDS = 0.005  # covers the host's queueing of INNER calls (backward: ~6 launches each)
BUDGET_SECONDS = 150  # no torch.compile for a case that starts later than this (each compiles
# three graphs, ~10-30 s each), so that the whole run stays under 4 minutes
OPERATIONS = ("sum", "sum+LayerNorm", "backward", "LayerNorm backward")


@cuda.jit
def _spin(iterations, out):
    value = 0.0
    for _ in range(iterations):
        value = value * 0.999999 + 1.0
    out[0] = value


class Timer:
    def __init__(self, stream, smoke: bool):
        self.stream, self.smoke = stream, smoke
        self.sink = cuda.device_array(1, np.float64)
        self.iterations = 1 if smoke else self._calibrate()

    def _calibrate(self) -> int:
        start, end = cuda.event(), cuda.event()
        trial = 1 << 20
        _spin[1, 1, self.stream](trial, self.sink)  # compile
        start.record(self.stream)
        _spin[1, 1, self.stream](trial, self.sink)
        end.record(self.stream)
        end.synchronize()
        seconds = cuda.event_elapsed_time(start, end) / 1e3
        return max(1, int(trial * SPIN_SECONDS / max(seconds, 1e-9)))

    def sample(self, function) -> tuple[float, float]:
        """(GPU seconds per call, host-inclusive seconds per call) of INNER calls."""
        start, end = cuda.event(), cuda.event()
        _spin[1, 1, self.stream](self.iterations, self.sink)
        start.record(self.stream)
        for _ in range(INNER):
            function()
        end.record(self.stream)
        end.synchronize()
        gpu = 0.0 if self.smoke else cuda.event_elapsed_time(start, end) / 1e3 / INNER
        began = time.perf_counter()
        for _ in range(INNER):
            function()
        end.record(self.stream)
        end.synchronize()
        return gpu, (time.perf_counter() - began) / INNER


def torch_contenders(host, ids, use_compile, budget_left):
    """torch eager (and compiled) versions of the three operations, or {} without torch CUDA."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return {}, "torch not installed"
    if not torch.cuda.is_available():
        return {}, "torch has no CUDA"
    device = torch.device("cuda")
    token, segment, position, weight, bias = (torch.as_tensor(a, device=device) for a in host)
    input_ids, types, positions = (torch.as_tensor(a, device=device) for a in ids)
    vocab, rows_t, rows_p = token.shape[0], segment.shape[0], position.shape[0]
    grad = torch.randn((*input_ids.shape, token.shape[1]), device=device)

    def summed():
        return (F.embedding(input_ids, token) + F.embedding(types, segment)) + F.embedding(
            positions, position
        )

    def normed():
        return F.layer_norm(summed(), (token.shape[1],), weight, bias, 1e-12)

    def backward():
        dense = torch.ops.aten.embedding_dense_backward
        return (
            dense(grad, input_ids, vocab, -1, False),
            dense(grad, types, rows_t, -1, False),
            dense(grad, positions.expand_as(input_ids), rows_p, -1, False),
        )

    hidden = token.shape[1]
    x = summed()
    _, mean, rstd = torch.ops.aten.native_layer_norm(x, (hidden,), weight, bias, 1e-12)

    def norm_backward():
        return torch.ops.aten.native_layer_norm_backward(
            grad, x, (hidden,), mean, rstd, weight, bias, [True, True, True]
        )

    eager = {
        "sum": summed,
        "sum+LayerNorm": normed,
        "backward": backward,
        "LayerNorm backward": norm_backward,
    }
    result = {(op, "torch eager"): f for op, f in eager.items()}
    note = ""
    if use_compile and budget_left() > 0:
        for op, function in eager.items():
            try:
                result[(op, "torch.compile")] = torch.compile(function, dynamic=False)
            except Exception as error:  # report, do not stop the run
                note += f" torch.compile {op}: {type(error).__name__};"
    elif use_compile:
        note = "torch.compile left out: over the time budget"
    return result, note


COPY = ("sum", "D2D copy of the output")  # the roofline: every share is copy / this


def _inputs(batch_size, seq, vocab, hidden, positions):
    """Host tables (token, segment, position, LayerNorm's weight and bias), ids and a gradient."""
    rng = np.random.default_rng(1)
    host = [
        (rng.standard_normal(shape) * 0.02).astype(np.float32)
        for shape in [(vocab, hidden), (2, hidden), (positions, hidden)]
    ]
    host += [np.ones(hidden, np.float32), np.zeros(hidden, np.float32)]
    ids = (
        zipf_ids(vocab, (batch_size, seq)),
        rng.integers(0, 2, (batch_size, seq)),
        np.arange(seq, dtype=np.int64)[None, :],
    )
    grad = rng.standard_normal((batch_size, seq, hidden)).astype(np.float32)
    return host, ids, grad


def _forward_contenders(device, batch, out, stream) -> dict:
    """The copy, the sum (each store), prepare and the sum + LayerNorm (each reduction)."""
    copy = cuda.device_array_like(out)
    contenders = {COPY: lambda: copy.copy_to_device(out, stream=stream)}
    stores = ["plain", "streaming"] if kc.HAS_STREAMING_STORE else ["plain"]
    for store in stores:
        contenders[("sum", f"bert_embedding_kernels.cuda, {store} stores")] = lambda s=store: (
            kc.fused_sum(device, batch, out, store=s, stream=stream)
        )
    contenders[("sum", "bert_embedding_kernels.cuda, prepare (range check, read-back)")] = lambda: (
        kc.prepare(device, *batch, stream=stream)
    )
    reductions = ["shuffle", "shared"] if kc.HAS_SHUFFLE else ["shared"]
    for reduction in reductions:
        name = f"bert_embedding_kernels.cuda, {reduction} reduction"
        contenders[("sum+LayerNorm", name)] = lambda r=reduction: kc.fused_sum_norm(
            device, batch, out, reduction=r, stream=stream
        )
    return contenders


def _backward_contenders(device, batch, grad_device, out, stream) -> dict:
    """The backward pass (allocating, and adding into a .grad) and LayerNorm's backward."""
    hidden = out.shape[2]  # (the simulator's shapes take no negative index)
    contenders = {
        ("backward", "bert_embedding_kernels.cuda, allocating"): lambda: kc.fused_backward(
            device, batch, grad_device, stream=stream
        )
    }
    into = kc.fused_backward(device, batch, grad_device, stream=stream)  # a .grad to add into
    contenders[("backward", "bert_embedding_kernels.cuda, accumulate_into")] = lambda: (
        kc.fused_backward(device, batch, grad_device, accumulate_into=into, stream=stream)
    )
    work = {}

    def reuse(shape, dtype):  # the work arrays, allocated once (as torch's cache would)
        if (shape, dtype) not in work:
            work[(shape, dtype)] = cuda.device_array(shape, dtype)
        return work[(shape, dtype)]

    sums, flat_grad = out.reshape(-1, hidden), grad_device.reshape(-1, hidden)
    norm_out = (
        cuda.device_array_like(sums),
        cuda.device_array(hidden, np.float32),
        cuda.device_array(hidden, np.float32),
    )
    contenders[("LayerNorm backward", "bert_embedding_kernels.cuda")] = lambda: (
        kc.layer_norm_backward(
            sums, flat_grad, device.norm_weight, 1e-12, out=norm_out, allocate=reuse, stream=stream
        )
    )
    return contenders


def _microseconds(estimate) -> list[float]:
    return [estimate.median * 1e6, estimate.low * 1e6, estimate.high * 1e6]


def _rows(gpu: Timings, host: Timings) -> list[dict]:
    """One row per contender: GPU time and the copy's share, both from the engine's
    intervals (the share from paired rounds), and the host-inclusive median."""
    rows = []
    for key in sorted(gpu.samples, key=lambda key: OPERATIONS.index(key[0])):
        share = None
        if all(gpu.samples[key]):  # the simulator reads no GPU clock: no share
            ratio = gpu.ratio(COPY, key)
            share = [ratio.median, ratio.low, ratio.high]
        rows.append(
            {
                "operation": key[0],
                "implementation": key[1],
                "gpu_us": _microseconds(gpu.estimate(key)),
                "copy_share": share,
                "host_us": host.estimate(key).median * 1e6,
            }
        )
    return rows


def run_case(label, shape, timer, rounds, use_compile, budget_left) -> dict:
    """One case (``shape``: batch, seq, vocab, hidden, positions) checked, then timed."""
    host, ids, grad = _inputs(*shape)
    batch_size, seq, _, hidden, _ = shape
    stream = timer.stream
    device = kc.DeviceTables(*host[:3], norm_weight=host[3], norm_bias=host[4])
    batch = kc.prepare(device, *(cuda.to_device(a) for a in ids), stream=stream)
    grad_device = cuda.to_device(grad)
    out = cuda.device_array((batch_size, seq, hidden), np.float32)
    checks = check_results(device, batch, grad_device, host, ids, grad)
    contenders = _forward_contenders(device, batch, out, stream)
    contenders.update(_backward_contenders(device, batch, grad_device, out, stream))
    torch_ones, note = torch_contenders(host, ids, use_compile, budget_left)
    contenders.update(torch_ones)
    gpu, host_clock = sample_rounds(contenders, rounds, timer.sample)
    return {
        "case": label,
        "rows": _rows(gpu, host_clock),
        "checks": [[name, verdict] for name, verdict in checks],
        "note": note.strip(),
    }


CASES = (
    ("BERT-base 32x512", (32, 512, 30522, 768, 512)),
    ("1x128", (1, 128, 30522, 768, 512)),
)
SMOKE_CASES = (("smoke 2x5", (2, 5, 50, 33, 16)),)


def measure(use_compile: bool = True, rounds: int = ROUNDS, smoke: bool = False) -> dict:
    """Every case checked and timed, as plain data (what ``--write`` stores as JSON)."""
    began = time.perf_counter()

    def budget_left():
        return BUDGET_SECONDS - (time.perf_counter() - began)

    rounds = 2 if smoke else rounds
    # The legacy default stream, which torch uses too: the spin kernel holds back
    # every contender's work. (The built-in simulator has no default_stream; its streams
    # are no-ops anyway.)
    timer = Timer(getattr(cuda, "default_stream", cuda.stream)(), smoke)
    device_name = "simulator" if kc.SIMULATOR else cuda.get_current_device().name
    if isinstance(device_name, bytes):
        device_name = device_name.decode()
    cases = []
    for label, shape in SMOKE_CASES if smoke else CASES:
        print(f"embench perf --device cuda: {label}", file=sys.stderr, flush=True)
        cases.append(run_case(label, shape, timer, rounds, use_compile, budget_left))
    return {
        "device": device_name,
        "numba": __import__("numba").__version__,
        "cuda": cuda.implementation,
        "rounds": rounds,
        "inner": INNER,
        "cases": cases,
        "wall_s": time.perf_counter() - began,
    }


def _cell(values, digits: int) -> str:
    if values is None:
        return "-"
    median, low, high = values
    return f"{median:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def render(run: dict) -> str:
    """The Markdown of :func:`measure`'s data."""
    lines = [
        f"# bert_embedding_kernels.cuda on {run['device']}\n",
        f"numba {run['numba']}, numba.cuda {run['cuda']}, "
        f"{run['rounds']} rounds x {run['inner']} calls, float32, Zipf ids\n",
        "| case | operation | implementation | GPU us/call, median [95% CI] "
        "| copy / this [95% CI] | us/call incl. launch |",
        "|---|---|---|---|---|---|",
    ]
    for case in run["cases"]:
        lines += [
            f"| {case['case']} | {row['operation']} | {row['implementation']} | "
            f"{_cell(row['gpu_us'], 1)} | {_cell(row['copy_share'], 2)} | {row['host_us']:.1f} |"
            for row in case["rows"]
        ]
    lines.append("")
    for case in run["cases"]:
        lines += [f"- {case['case']}: {name}: {verdict}" for name, verdict in case["checks"]]
        if case["note"]:
            lines.append(f"- {case['case']}: {case['note']}")
    lines.append(f"\nwall time {run['wall_s']:.0f} s")
    return "\n".join(lines) + "\n"


def run(
    use_compile: bool = True, rounds: int = ROUNDS, smoke: bool = False, write: str | None = None
) -> int:
    """``embench perf --device cuda``: measure, print the Markdown, and with ``write`` store it
    and its data (``write`` with ``.json``); 1 where a check failed."""
    data = measure(use_compile, rounds, smoke)
    text = render(data)
    print(text, end="")
    if write:
        Path(write).write_text(text)
        Path(write).with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    failed = any(verdict is False for case in data["cases"] for _, verdict in case["checks"])
    return 1 if failed else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile out")
    parser.add_argument("--rounds", type=positive_int, default=ROUNDS)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, 2 rounds (simulator)")
    parser.add_argument(
        "--write", metavar="PATH", type=markdown_path, help="also write the Markdown to PATH"
    )
    args = parser.parse_args(argv)
    return run(not args.no_compile, args.rounds, args.smoke, args.write)


if __name__ == "__main__":
    sys.exit(main())
