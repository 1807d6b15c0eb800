"""Compile every CUDA kernel to PTX for an H100 (sm_90) without a GPU, and check the PTX.

The simulator never compiles anything, so it cannot catch a typing error in
code that only a GPU runs (the shuffle reduction, the streaming stores). libNVVM
can, with no GPU: this script compiles each kernel for each dtype and variant,
and checks what the PTX must (not) contain. Needs libNVVM (a CUDA toolkit:
``numba-cuda[cu12]`` brings one from pip; numba also finds /usr/local/cuda);
the streaming stores need numba-cuda. Run it in a process of its own, without
NUMBA_ENABLE_CUDASIM:

    NUMBA_ENABLE_CUDASIM=0 python tests/cuda/ptx_check.py

Exit status: 0 all compiled and checked, 1 a failure, 2 nothing to compile with
(the simulator, or no libNVVM).
"""

import sys
import types as pytypes

import numpy as np
from numba import cuda, types

if cuda.is_available.__module__.endswith("simulator_init"):
    print("SKIP: the simulator is enabled; run with NUMBA_ENABLE_CUDASIM=0")
    sys.exit(2)
try:
    import numba.cuda.dispatcher as dispatcher
    from numba.cuda.cudadrv.error import NvvmSupportError
except ImportError as error:
    print(f"SKIP: {error}")
    sys.exit(2)
if not hasattr(dispatcher, "get_current_device"):
    print("SKIP: this numba.cuda compiles device functions differently; cannot fake a device")
    sys.exit(2)

# numba-cuda 0.30.4 with numpy >= 2.5 fails at its first compile without np.row_stack;
# bert_embedding_kernels.cuda restores it at import (its _patch_numpy), which is too late here.
if not hasattr(np, "row_stack"):
    setattr(np, "row_stack", np.vstack)  # noqa: B010  (ruff would rewrite a plain assignment)

# Compile only: pretend a device exists. Device functions ask the current device
# for its compute capability; answer the H100's.
cuda.is_available = lambda: True
dispatcher.get_current_device = lambda: pytypes.SimpleNamespace(compute_capability=(9, 0))
try:
    cuda.compile_ptx(lambda a: None, types.void(types.float32[:]), cc=(9, 0))
except NvvmSupportError as error:
    print(f"SKIP: no libNVVM ({str(error).strip()}); install numba-cuda[cu12]")
    sys.exit(2)

import bert_embedding_kernels.cuda._runtime as runtime  # noqa: E402

streaming = callable(getattr(cuda, "stcs", None))  # numba-cuda only
runtime.HAS_SHUFFLE, runtime.HAS_STREAMING_STORE = True, streaming
from bert_embedding_kernels.cuda import _parts, backward, forward, norm, norm_backward, validate  # noqa: E402

C = "C"
ids = (types.Array(types.int64, 2, C),) * 3
i32_1d, i32_2d, i64_1d = (
    types.Array(types.int32, 1, C),
    types.Array(types.int32, 2, C),
    types.Array(types.int64, 1, C),
)
failures = []


def check(name, kernel, signature, present=(), absent=()):
    try:
        ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=(9, 0))
    except Exception as error:
        failures.append(name)
        print(f"FAIL {name}: {type(error).__name__}: {error}")
        return
    missing = [s for s in present if s not in ptx] + [f"no {s}" for s in absent if s in ptx]
    if missing:
        failures.append(name)
    print(f"{'FAIL' if missing else 'ok  '} {name} {missing or ''}")


for dtype in (np.float32, np.float64):
    nb = types.float32 if dtype == np.float32 else types.float64
    tables = (types.Array(nb, 2, C),) * 3
    vector = types.Array(nb, 1, C)
    stores = {"plain": _parts.plain_store}
    if streaming:
        stores["streaming"] = _parts.streaming_store
    reductions = {"shared": _parts.warp_sum_shared, "shuffle": _parts.warp_sum_shuffle}
    for store_name, store in stores.items():
        hint = ("st.global.cs",) if store_name == "streaming" else ()
        # The sum is additions only: a fused multiply-add would change its bits.
        check(
            f"sum {nb} {store_name}",
            forward._sum_kernel(store),
            types.void(*tables, *ids, vector),
            present=hint,
            absent=("fma",),
        )
        if dtype == np.float32:  # float32 pairs as int64 words: 8-byte loads and stores
            words = types.Array(types.int64, 2, C)
            check(
                f"sum float32 pairs {store_name}",
                forward._pairs_kernel(store),
                types.void(words, words, words, *ids, types.Array(types.int64, 1, C)),
                present=hint,
                # No 4-byte element access left (numba-cuda's loads are ld.global.nc.u64,
                # the built-in's ld.global.u64: either is 8 bytes).
                absent=("fma", "ld.global.f32", "ld.global.nc.f32", "st.global.f32", ".cs.f32"),
            )
        for reduction_name, reduction in reductions.items():
            shuffle = ("shfl.sync.bfly",) if reduction_name == "shuffle" else ()
            signature = types.void(
                *tables, *ids, vector, vector, types.float64, vector, types.boolean, vector
            )
            variants = {
                "registers": norm._norm_kernel(reduction, store, np.dtype(dtype), 24),
                "reread": norm._norm_kernel_reread(reduction, store, np.dtype(dtype)),
            }
            for variant, kernel in variants.items():
                check(
                    f"sum+norm {nb} {store_name} {reduction_name} {variant}",
                    kernel,
                    signature,
                    present=hint + shuffle,
                    # registers: the row stays in registers (no local-memory traffic)
                    absent=("ld.local",) if variant == "registers" else (),
                )
    check(
        f"backward segment sums {nb}",
        backward._segment_sums_kernel(np.dtype(dtype), 16),
        types.void(types.Array(nb, 2, C), i32_1d, i32_1d, i32_1d, types.boolean, *tables),
        absent=("fma", "atom", "ld.local"),  # no atomics, and the loaded group in registers
    )
    check(
        f"backward compact {nb}",
        validate._compact,
        types.void(types.Array(nb, 3, "A"), types.Array(nb, 2, C)),
    )
    matrix, f64_2d = types.Array(nb, 2, C), types.Array(types.float64, 2, C)
    f64_1d = types.Array(types.float64, 1, C)
    for reduction_name, reduction in reductions.items():
        check(
            f"LayerNorm backward rows {nb} {reduction_name}",
            norm_backward._rows_kernel(reduction),
            types.void(matrix, matrix, vector, types.float64, matrix, f64_1d, f64_1d),
            # the products g = dy * w rounded apart (mul.rn), as on the CPU
            present=("mul.rn.f64",) + (("shfl.sync.bfly",) if reduction_name == "shuffle" else ()),
            absent=("atom",),
        )
    check(
        f"LayerNorm backward partials {nb}",
        norm_backward._partials,
        types.void(matrix, matrix, f64_1d, f64_1d, types.int64, f64_2d, f64_2d),
        absent=("atom",),
    )
    check(
        f"LayerNorm backward finish {nb}",
        norm_backward._finish,
        types.void(f64_2d, f64_2d, vector, vector),
    )

check("range check", validate._find_out_of_range, types.void(*ids, *(types.int64,) * 3, i64_1d))
check("zero", backward._zero, types.void(i32_1d))
check("reset range flags", validate._reset_flags, types.void(i64_1d))
scalars = (types.int64,) * 3
check("rank in chunk", backward._rank_in_chunk, types.void(*ids, *scalars, i32_1d, i32_2d))
check("chunk offsets", backward._chunk_offsets, types.void(i32_2d, i32_1d))
check("exclusive scan", backward._exclusive_scan, types.void(i32_1d, i32_1d))
check("place", backward._place, types.void(*ids, *scalars, i32_1d, i32_2d, i32_1d, i32_1d))
if not streaming:
    print("(streaming stores not compiled: this numba.cuda has no cuda.stcs)")
sys.exit(1 if failures else 0)
