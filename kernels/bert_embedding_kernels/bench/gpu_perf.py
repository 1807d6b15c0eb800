"""Time the CUDA kernels on a GPU against a device-to-device copy and torch; print Markdown.

    embench perf --device cuda                                   # < 4 minutes on an H100
    embench perf --device cuda --no-compile                      # without torch.compile
    NUMBA_ENABLE_CUDASIM=1 python -m bert_embedding_kernels.bench.gpu_perf --smoke   # the simulator

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
import math
import sys
import time

import numpy as np

import bert_embedding_kernels.cuda as kc

from .options import markdown_path, positive_int

cuda = kc.cuda
ROUNDS = 25
INNER = 10
SPIN_SECONDS = 0.005  # covers the host's queueing of INNER calls (backward: ~6 launches each)
BUDGET_SECONDS = 150  # no torch.compile for a case that starts later than this (each compiles
# three graphs, ~10-30 s each), so that the whole run stays under 4 minutes
OPERATIONS = ("sum", "sum+LayerNorm", "backward", "LayerNorm backward")


def zipf_ids(vocab: int, shape, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    weights = np.arange(1, vocab + 1, dtype=np.float64) ** -1.0
    ranks = rng.choice(vocab, size=shape, p=weights / weights.sum())
    return rng.permutation(vocab)[ranks].astype(np.int64)


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
        """(GPU us per call, host-inclusive us per call) of INNER calls."""
        start, end = cuda.event(), cuda.event()
        _spin[1, 1, self.stream](self.iterations, self.sink)
        start.record(self.stream)
        for _ in range(INNER):
            function()
        end.record(self.stream)
        end.synchronize()
        gpu = 0.0 if self.smoke else cuda.event_elapsed_time(start, end) * 1e3 / INNER
        began = time.perf_counter()
        for _ in range(INNER):
            function()
        end.record(self.stream)
        end.synchronize()
        return gpu, (time.perf_counter() - began) * 1e6 / INNER


def median_ci(values) -> tuple[float, float, float]:
    """Median and a 95% confidence interval from order statistics (distribution-free)."""
    ordered = sorted(values)
    n = len(ordered)
    half = 1.96 * math.sqrt(n) / 2
    low = max(0, math.floor(n / 2 - half))
    high = min(n - 1, math.ceil(n / 2 + half))
    return float(np.median(ordered)), ordered[low], ordered[high]


def measure(timer, contenders: dict, rounds: int) -> dict:
    for function in contenders.values():  # warm-up: compile, allocate, fill caches
        function()
        function()
    samples = {name: [] for name in contenders}
    names = list(contenders)
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(timer.sample(contenders[name]))
    return samples


def fmt(median, low, high, digits=1) -> str:
    return f"{median:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


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


def check_results(device, batch, grad_device, host, ids, grad):
    """The GPU's results against numpy on the host: (name, verdict) pairs."""
    token, segment, position, weight, bias = host
    input_ids, types, positions = ids
    expected = (token[input_ids] + segment[types]) + position[positions]
    got = kc.fused_sum(device, batch).copy_to_host()
    verdicts = [("sum == numpy, bitwise", bool(np.array_equal(got, expected)))]
    x = expected.astype(np.float64)
    centred = x - x.mean(-1, keepdims=True)
    inverse_std = 1.0 / np.sqrt((centred**2).mean(-1, keepdims=True) + 1e-12)
    xhat = centred * inverse_std
    reference = xhat * weight + bias
    normed, sums = kc.fused_sum_norm(device, batch, keep_sum=True)
    error = float(np.abs(normed.copy_to_host() - reference).max())
    verdicts.append(("sum+LayerNorm max |error| vs float64", f"{error:.2e}"))
    verdicts.append(("kept sum == sum, bitwise", bool(np.array_equal(sums.copy_to_host(), got))))
    flat = grad.reshape(-1, grad.shape[-1])
    gradients = kc.fused_backward(device, batch, grad_device)
    for name, table, table_ids in zip(
        ("token", "segment", "position"), (token, segment, position), ids, strict=True
    ):
        reference = np.zeros_like(table)
        np.add.at(reference, np.broadcast_to(table_ids, input_ids.shape).reshape(-1), flat)
        same = np.array_equal(getattr(gradients, name).copy_to_host(), reference)
        verdicts.append((f"backward {name} == np.add.at (token order), bitwise", bool(same)))
    # LayerNorm's backward against float64 formulas on the host (to rounding).
    g = grad.astype(np.float64) * weight
    d_sums = inverse_std * (
        g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True)
    )
    hidden = grad.shape[-1]
    got = kc.layer_norm_backward(
        sums.reshape(-1, hidden), grad_device.reshape(-1, hidden), device.norm_weight, 1e-12
    )
    expected = (d_sums, (grad * xhat).reshape(-1, hidden).sum(0), flat.sum(0, dtype=np.float64))
    for name, array, want in zip(("sum", "weight", "bias"), got, expected, strict=True):
        error = np.abs(array.copy_to_host().reshape(want.shape) - want).max() / np.abs(want).max()
        verdicts.append(
            (f"LayerNorm backward d{name} max |error| / max vs float64", f"{error:.1e}")
        )
    return verdicts


def run_case(label, batch_size, seq, vocab, hidden, positions, timer, args, budget_left):
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
    stream = timer.stream
    device = kc.DeviceTables(*host[:3], norm_weight=host[3], norm_bias=host[4])
    batch = kc.prepare(device, *(cuda.to_device(a) for a in ids), stream=stream)
    grad_device = cuda.to_device(grad)
    out = cuda.device_array((batch_size, seq, hidden), np.float32)
    copy = cuda.device_array_like(out)
    checks = check_results(device, batch, grad_device, host, ids, grad)

    def copy_output():
        copy.copy_to_device(out, stream=stream)

    contenders = {("sum", "D2D copy of the output"): copy_output}
    contenders[("sum", "bert_embedding_kernels.cuda, plain stores")] = lambda: kc.fused_sum(
        device, batch, out, store="plain", stream=stream
    )
    if kc.HAS_STREAMING_STORE:
        contenders[("sum", "bert_embedding_kernels.cuda, streaming stores")] = lambda: kc.fused_sum(
            device, batch, out, store="streaming", stream=stream
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
    contenders[("backward", "bert_embedding_kernels.cuda, allocating")] = lambda: kc.fused_backward(
        device, batch, grad_device, stream=stream
    )
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
    torch_ones, note = torch_contenders(host, ids, not args.no_compile, budget_left)
    contenders.update(torch_ones)

    samples = measure(timer, contenders, args.rounds)
    copy_gpu = [gpu for gpu, _ in samples[("sum", "D2D copy of the output")]]
    rows = []
    for (operation, name), values in sorted(
        samples.items(), key=lambda kv: OPERATIONS.index(kv[0][0])
    ):
        gpu = [g for g, _ in values]
        host_time = median_ci([h for _, h in values])[0]
        share = [c / g if g else float("nan") for c, g in zip(copy_gpu, gpu, strict=True)]
        rows.append(
            f"| {label} | {operation} | {name} | {fmt(*median_ci(gpu))} | "
            f"{fmt(*median_ci(share), digits=2)} | {host_time:.1f} |"
        )
    return rows, checks, note


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile out")
    parser.add_argument("--rounds", type=positive_int, default=ROUNDS)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, 2 rounds (simulator)")
    parser.add_argument(
        "--write", metavar="PATH", type=markdown_path, help="also write the Markdown to PATH"
    )
    args = parser.parse_args(argv)
    began = time.perf_counter()

    def budget_left():
        return BUDGET_SECONDS - (time.perf_counter() - began)

    if args.smoke:
        args.rounds = 2
        cases = [("smoke 2x5", 2, 5, 50, 33, 16)]
    else:
        cases = [("BERT-base 32x512", 32, 512, 30522, 768, 512), ("1x128", 1, 128, 30522, 768, 512)]
    # The legacy default stream, which torch uses too: the spin kernel holds back
    # every contender's work. (The built-in simulator has no default_stream; its streams
    # are no-ops anyway.)
    timer = Timer(getattr(cuda, "default_stream", cuda.stream)(), args.smoke)
    device_name = "simulator" if kc.SIMULATOR else cuda.get_current_device().name
    if isinstance(device_name, bytes):
        device_name = device_name.decode()
    lines = [
        f"# bert_embedding_kernels.cuda on {device_name}\n",
        f"numba {__import__('numba').__version__}, numba.cuda {cuda.implementation}, "
        f"{args.rounds} rounds x {INNER} calls, float32, Zipf ids\n",
        "| case | operation | implementation | GPU us/call, median [95% CI] "
        "| copy / this [95% CI] | us/call incl. launch |",
        "|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    notes = []
    for case in cases:
        rows, checks, note = run_case(*case, timer, args, budget_left)
        print("\n".join(rows), flush=True)
        lines += rows
        notes.append((case[0], checks, note))
    tail = [""]
    for label, checks, note in notes:
        tail += [f"- {label}: {name}: {verdict}" for name, verdict in checks]
        if note:
            tail.append(f"- {label}: {note.strip()}")
    tail.append(f"\nwall time {time.perf_counter() - began:.0f} s")
    print("\n".join(tail))
    text = "\n".join(lines + tail) + "\n"
    if args.write:
        with open(args.write, "w") as handle:
            handle.write(text)
    failed = any(verdict is False for _, checks, _ in notes for _, verdict in checks)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
