"""The fused CPU method: numba kernels that read three rows and write their sum once.

- :mod:`.forward`: the sum and sum+LayerNorm, float32 and float64;
- :mod:`.half`: the same for float16 and bfloat16 tables (float32 inside, rounded once);
- :mod:`.backward`: the scatter-add of the gradient into the tables, deterministic;
- :mod:`.norm_backward`: LayerNorm's backward, which the drop-in runs before the scatter;
- :mod:`.halfbits`: 16-bit floats as bits (widen, round); :mod:`.vectors`: LLVM vector stores.

The GPU's kernels (:mod:`bert_embedding_kernels.cuda`) use the same module names.
"""
