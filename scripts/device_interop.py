"""On a GPU: torch CUDA tensors and CuPy arrays through bek.embed / embed_backward.

    NUMBA_ENABLE_CUDASIM=0 python scripts/device_interop.py

Device tables from host tables, ids as torch CUDA tensors (int64 and int32) and
as CuPy arrays, ``out=`` a torch CUDA tensor; every result compared bit for bit
with the CPU ``fused`` method. Prints one line per check and exits non-zero on
the first disagreement. (Needs torch with CUDA; CuPy is optional.)
"""

import sys

import numpy as np
import torch

import bert_embedding_kernels as bek


def main() -> int:
    rng = np.random.default_rng(0)
    vocab, hidden, batch, seq = 1000, 96, 3, 17
    host = bek.EmbeddingTables(
        token=rng.standard_normal((vocab, hidden)).astype(np.float32),
        segment=rng.standard_normal((2, hidden)).astype(np.float32),
        position=rng.standard_normal((64, hidden)).astype(np.float32),
    )
    device = host.to_device()
    ids = rng.integers(0, vocab, (batch, seq))
    types = rng.integers(0, 2, (batch, seq))
    expected = bek.embed(host, ids, types, method="fused")
    failures = 0

    def check(label, got):
        nonlocal failures
        same = np.array_equal(np.asarray(got), expected)
        failures += not same
        print(f"{label}: {'bitwise equal' if same else 'DIFFERENT'}")

    for dtype in (torch.int64, torch.int32):
        t_ids = torch.as_tensor(ids, dtype=dtype, device="cuda")
        t_types = torch.as_tensor(types, dtype=dtype, device="cuda")
        check(f"torch {dtype} ids", bek.embed(device, t_ids, t_types).copy_to_host())
        out = torch.empty((batch, seq, hidden), dtype=torch.float32, device="cuda")
        bek.embed(device, t_ids, t_types, out=out)
        check(f"torch {dtype} ids, out= torch tensor", out.cpu().numpy())
    bad = torch.as_tensor(ids, device="cuda")
    bad[1, 2] = vocab
    try:
        bek.embed(device, bad, torch.as_tensor(types, device="cuda"))
        print("out-of-range id on the device: NOT raised")
        failures += 1
    except IndexError as error:
        print(f"out-of-range id on the device: IndexError: {error}")
    grad = rng.standard_normal((batch, seq, hidden)).astype(np.float32)
    want = bek.embed_backward(host, grad, ids, types, method="fused")
    got = bek.embed_backward(
        device,
        torch.as_tensor(grad, device="cuda"),
        torch.as_tensor(ids, device="cuda"),
        torch.as_tensor(types, device="cuda"),
    )
    for name in ("token", "segment", "position"):
        same = np.array_equal(getattr(got, name).copy_to_host(), getattr(want, name))
        failures += not same
        print(f"backward {name} from torch tensors: {'bitwise equal' if same else 'DIFFERENT'}")
    try:
        import cupy
    except ImportError:
        print("cupy: not installed")
    else:
        got = bek.embed(device, cupy.asarray(ids), cupy.asarray(types))
        check("cupy ids", got.copy_to_host())
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
