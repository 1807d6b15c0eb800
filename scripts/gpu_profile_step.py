"""Where the drop-in's training step spends host time on a GPU (cProfile, and the range check).

    NUMBA_ENABLE_CUDASIM=0 python scripts/gpu_profile_step.py

BERT-base tables, batch 1 x 128 (host-bound: its kernels take tens of
microseconds). Prints us/step with and without the id range check (whose
read-back makes the host wait for the GPU), and the functions that take the
host's time, by cumulative and own time.
"""

import copy
import cProfile
import pstats
import time

import torch
import transformers

import bert_embedding_kernels.cuda.validate as device_validate
from bert_embedding_kernels.nn import BertEmbeddings

STEPS = 50


def main():
    config = transformers.BertConfig(hidden_dropout_prob=0.0)
    reference = transformers.models.bert.modeling_bert.BertEmbeddings(config).cuda().eval()
    drop_in = BertEmbeddings.from_hf(copy.deepcopy(reference)).cuda()
    ids = torch.randint(0, config.vocab_size, (1, 128), device="cuda")
    types = torch.zeros_like(ids)
    weights = torch.randn(1, 128, config.hidden_size, device="cuda")

    def step(module):
        module.zero_grad(set_to_none=False)
        (module(input_ids=ids, token_type_ids=types) * weights).sum().backward()

    def per_step(module) -> float:
        for _ in range(5):
            step(module)
        torch.cuda.synchronize()
        began = time.perf_counter()
        for _ in range(STEPS):
            step(module)
        torch.cuda.synchronize()
        return (time.perf_counter() - began) * 1e6 / STEPS

    print(f"transformers eager: {per_step(reference):.0f} us/step")
    print(f"bert_embedding_kernels.nn: {per_step(drop_in):.0f} us/step")
    check_range = device_validate.check_range
    device_validate.check_range = lambda *args, **kwargs: None
    print(f"bert_embedding_kernels.nn without the range check: {per_step(drop_in):.0f} us/step")
    device_validate.check_range = check_range

    profile = cProfile.Profile()
    profile.enable()
    for _ in range(STEPS):
        step(drop_in)
    torch.cuda.synchronize()
    profile.disable()
    stats = pstats.Stats(profile)
    stats.sort_stats("cumulative").print_stats(30)
    stats.sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
