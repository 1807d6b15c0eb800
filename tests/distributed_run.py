"""Two CPU processes (gloo) train a tiny BERT masked-LM under DDP and FSDP2, with and without
the drop-in; rank 0 saves the parameters after two SGD steps (tests/test_distributed.py).

    python tests/distributed_run.py OUT_DIR

Each rank takes half of the batch; every token is labelled, so the mean of the two halves'
losses is the whole batch's loss and the averaged gradients are the one-process ones.
"""

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import transformers
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel

from bert_embedding_kernels.nn import patch

WORLD = 2
STEPS = 2
# (engine, tied decoder): FSDP2 keeps a tied Parameter in one unit, so the embeddings
# sharded as a unit of their own are trained untied (the decoder sits in the root unit).
RUNS = [("ddp", True), ("fsdp-model", True), ("fsdp-embeddings", False)]


def config(tied: bool):
    return transformers.BertConfig(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
        type_vocab_size=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        tie_word_embeddings=tied,
    )


def model(tied: bool, drop_in: bool):
    torch.manual_seed(0)
    built = transformers.BertForMaskedLM(config(tied)).train()
    if drop_in:
        patch(built)
    return built


def batch(step: int):
    generator = torch.Generator().manual_seed(step)
    ids = torch.randint(3, 99, (4, 12), generator=generator)
    types = torch.randint(0, 2, (4, 12), generator=generator)
    return {"input_ids": ids, "token_type_ids": types, "labels": ids.flip(1)}


def train(module, rows=slice(None)):
    optimizer = torch.optim.SGD(module.parameters(), lr=0.5)
    for step in range(STEPS):
        optimizer.zero_grad()
        module(**{k: v[rows] for k, v in batch(step).items()}).loss.backward()
        optimizer.step()


def full_state(module) -> dict:
    state = {}
    for name, value in module.named_parameters():
        value = value.detach()
        state[name] = value.full_tensor() if hasattr(value, "full_tensor") else value
    return {name.removeprefix("module."): value.clone() for name, value in state.items()}


def worker(rank: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{out}/store", rank=rank, world_size=WORLD)
    rows = slice(rank * 2, rank * 2 + 2)
    for engine, tied in RUNS:
        for drop_in in (False, True):
            built = model(tied, drop_in)
            if engine == "ddp":
                wrapped = DistributedDataParallel(built)
            else:
                if engine == "fsdp-embeddings":
                    fully_shard(built.bert.embeddings)
                wrapped = fully_shard(built)
            train(wrapped, rows)
            state = full_state(wrapped)
            if rank == 0:
                torch.save(state, Path(out) / f"{engine}-{'drop-in' if drop_in else 'plain'}.pt")
            dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(worker, args=(sys.argv[1],), nprocs=WORLD, join=True)
