"""One training step of BERT's embedding layer on a GPU: the drop-in against transformers'.

    python -m bert_embedding_kernels.bench.perf.gpu_train  # ~1 minute on an H100, torch.compile too
    python -m bert_embedding_kernels.bench.perf.gpu_train --no-compile

A step is what a training loop runs for this layer: ``zero_grad``, forward
(sum + LayerNorm; dropout off), a loss (a fixed random projection of the
output, so the gradient is not mostly cancellation), backward (the gradients of
all five parameters). Contenders: ``bert_embedding_kernels.nn.BertEmbeddings`` on CUDA tensors
(the numba-cuda kernels), transformers' ``BertEmbeddings`` eager and under
``torch.compile``. Before anything is timed, the drop-in's output and five
gradients are checked against transformers'.

Time per step is wall-clock over ``INNER`` steps between two
``torch.cuda.synchronize()`` calls: it includes the host's launch costs and the
drop-in's one synchronising read-back (the id range check), which is what a
training loop pays. Rounds interleave the contenders (rotating order); medians
with 95% confidence intervals, and each contender's ratio to transformers eager
from paired rounds. Needs torch with CUDA, transformers and a GPU.
"""

from __future__ import annotations

import argparse
import copy
import functools
import sys
import time

import numpy as np
import torch
import transformers

from ...nn import BertEmbeddings
from ..engine.cases import zipf_ids
from ..engine.options import markdown_path, positive_int
from ..engine.timing import sample_rounds

ROUNDS = 15
INNER = 10
CASES = [("BERT-base 32x512", 32, 512), ("1x128", 1, 128)]


def _reference(config):
    torch.manual_seed(0)
    module = transformers.models.bert.modeling_bert.BertEmbeddings(config)
    return module.to("cuda").eval()


def _step(module, ids, types, weights):
    module.zero_grad(set_to_none=False)
    out = module(input_ids=ids, token_type_ids=types)
    (out * weights).sum().backward()
    return out


def _check(reference, drop_in, ids, types, weights) -> list[str]:
    """Output and gradients of the drop-in against transformers', float32 tolerances."""
    want = _step(reference, ids, types, weights).detach()
    got = _step(drop_in, ids, types, weights).detach()
    lines = [f"output max |diff| {float((got - want).abs().max()):.2e}"]
    ours = dict(drop_in.named_parameters())
    for name, parameter in reference.named_parameters():
        scale = float(parameter.grad.abs().max())
        diff = float((ours[name].grad - parameter.grad).abs().max())
        ok = diff <= 1e-4 * scale + 1e-9
        lines.append(f"{name} grad max |diff| {diff:.2e} (max {scale:.2e}) {'ok' if ok else 'BAD'}")
        if not ok:
            raise AssertionError("; ".join(lines))
    return lines


def _sample(step) -> tuple[float]:
    """Wall-clock seconds per step over INNER steps between two synchronisations."""
    torch.cuda.synchronize()
    began = time.perf_counter()
    for _ in range(INNER):
        step()
    torch.cuda.synchronize()
    return ((time.perf_counter() - began) / INNER,)


def run_case(label, batch, seq, use_compile, rounds) -> tuple[list[str], list[str]]:
    config = transformers.BertConfig(hidden_dropout_prob=0.0)  # BERT-base sizes
    reference = _reference(config)
    drop_in = BertEmbeddings.from_hf(copy.deepcopy(reference)).to("cuda")
    rng = np.random.default_rng(1)
    ids = torch.as_tensor(zipf_ids(config.vocab_size, (batch, seq)), device="cuda")
    types = torch.as_tensor(rng.integers(0, 2, (batch, seq)), device="cuda")
    weights = torch.randn(batch, seq, config.hidden_size, device="cuda")
    checks = _check(reference, drop_in, ids, types, weights)
    contenders = {
        "transformers eager": reference,
        "bert_embedding_kernels.nn (numba-cuda)": drop_in,
    }
    if use_compile:
        contenders["transformers + torch.compile"] = torch.compile(copy.deepcopy(reference))
    steps = {
        name: functools.partial(_step, m, ids, types, weights) for name, m in contenders.items()
    }
    (timings,) = sample_rounds(steps, rounds, _sample, warmups=3)
    rows = []
    for name in steps:
        step, ratio = timings.estimate(name), timings.ratio("transformers eager", name)
        time_us = f"{step.median * 1e6:.1f} [{step.low * 1e6:.1f}, {step.high * 1e6:.1f}]"
        ratios = f"{ratio.median:.2f} [{ratio.low:.2f}, {ratio.high:.2f}]"
        rows.append(f"| {label} | {name} | {time_us} | {ratios} |")
    return rows, checks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-compile", action="store_true", help="leave torch.compile out")
    parser.add_argument("--rounds", type=positive_int, default=ROUNDS)
    parser.add_argument(
        "--write", metavar="PATH", type=markdown_path, help="also write the Markdown to PATH"
    )
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("torch has no CUDA device here; this benchmark needs a GPU.")
        return 2
    began = time.perf_counter()
    lines = [
        f"# One training step of the embedding layer on {torch.cuda.get_device_name()}\n",
        f"torch {torch.__version__}, transformers {transformers.__version__}, float32, "
        f"Zipf ids, {args.rounds} rounds x {INNER} steps\n",
        "| case | implementation | us/step, median [95% CI] | eager / this [95% CI] |",
        "|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    notes = []
    for case in CASES:
        rows, checks = run_case(*case, not args.no_compile, args.rounds)
        print("\n".join(rows), flush=True)
        lines += rows
        notes += [f"- {case[0]}: {line}" for line in checks]
    tail = ["", *notes, f"\nwall time {time.perf_counter() - began:.0f} s"]
    print("\n".join(tail))
    if args.write:
        with open(args.write, "w") as handle:
            handle.write("\n".join(lines + tail) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
