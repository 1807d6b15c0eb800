"""torch.compile with the drop-in: transformers' BertEmbeddings against
``bert_embedding_kernels.nn.BertEmbeddings``, both compiled (and both eager, for scale), at
BERT-base (batch 32 x seq 512, hidden 768, vocab 30522, float32, CPU), paired in
interleaved rounds of the project's timing engine: the forward in eval mode without grad,
and a training step (forward, then backward of the output's sum into every parameter).

    .venv/bin/python scripts/compile_cost.py [--budget 60]

Prints each median and the ratios transformers / drop-in (above 1: the drop-in is faster)
with their 95% intervals, and the machine.
"""

import argparse
import copy
import os

# as the report runs torch (bench/engine/peers.py)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
import transformers

from bert_embedding_kernels.bench.engine.machine import summary
from bert_embedding_kernels.bench.engine.timing import interleave
from bert_embedding_kernels.nn import BertEmbeddings

BATCH, SEQ = 32, 512


def modules():
    config = transformers.BertConfig()  # BERT-base: vocab 30522, hidden 768, 512 positions
    torch.manual_seed(0)
    theirs = transformers.models.bert.modeling_bert.BertEmbeddings(config).eval()
    ours = BertEmbeddings.from_hf(copy.deepcopy(theirs)).eval()
    return {"transformers": theirs, "drop-in": ours}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of rounds, each pass")
    budget = parser.parse_args().budget
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 30522, (BATCH, SEQ), generator=generator)
    types = torch.zeros_like(ids)
    types[:, SEQ // 2 :] = 1
    built = modules()

    def forward(module):
        def call():
            with torch.no_grad():
                return module(input_ids=ids, token_type_ids=types)

        return call

    def step(module):
        def call():
            module.zero_grad(set_to_none=False)
            module(input_ids=ids, token_type_ids=types).sum().backward()

        return call

    for label, make in (("forward (eval, no grad)", forward), ("training step", step)):
        calls = {}
        for name, module in built.items():
            calls[f"{name}, eager"] = make(module)
            calls[f"{name}, compiled"] = make(torch.compile(module, fullgraph=True))
        for call in calls.values():  # compile outside the timing
            call()
        expected = calls["transformers, eager"]
        if label.startswith("forward"):
            reference = expected()
            for name, call in calls.items():
                difference = (call() - reference).abs().max().item()
                assert difference < 1e-4, (name, difference)
        timings = interleave(calls, budget=budget)
        print(f"{label}: {timings.rounds} rounds in {timings.seconds:.0f} s")
        for name in calls:
            e = timings.estimate(name)
            print(f"  {name}: {e.median * 1e3:.2f} ms +-{e.half_width:.1%}")
        for mode in ("eager", "compiled"):
            r = timings.ratio(f"transformers, {mode}", f"drop-in, {mode}")
            print(f"  transformers / drop-in, {mode}: {r.median:.3f} [{r.low:.3f}, {r.high:.3f}]")
    print(summary())
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")


if __name__ == "__main__":
    main()
