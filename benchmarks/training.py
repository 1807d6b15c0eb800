"""The drop-in's training step, by the kernels it runs, torch-free (asv's environment has
no torch): the fused sum + LayerNorm keeping the pre-norm sums, LayerNorm's backward, the
fused scatter-add into new gradients. What ``bert_embedding_kernels.nn.BertEmbeddings``
runs per step, less torch's own work (``embench perf`` times the whole step with torch).

Zipf(1.1) ids (the backward's cost depends on how often rows repeat), token types half 0
and half 1, at the sweeps' base shape and at BERT-base. A commit without
``embed(..., return_sum=True)`` or LayerNorm's backward is skipped (asv: n/a).
"""

import numpy as np

from .common import SWEEP_BASE, bek, package_module

SHAPES = {"8x128": (8, 128), "32x512": (32, 512)}


class TrainingStep:
    params = (tuple(SHAPES),)
    param_names = ("shape",)
    warmup_time = 0
    number = 1
    repeat = (2, 20, 2.0)
    timeout = 120

    def setup(self, shape):
        norm = package_module("methods.fused.norm_backward", "methods.layernorm_backward")
        if norm is None or not hasattr(bek, "embed_backward"):
            raise NotImplementedError("this commit has no LayerNorm backward")
        batch, seq = SHAPES[shape]
        rng = np.random.default_rng(0)
        self.tables = bek.EmbeddingTables(
            *(
                rng.standard_normal((rows, SWEEP_BASE.hidden)).astype(np.float32)
                for rows in (SWEEP_BASE.vocab, 2, 512)
            ),
            norm_weight=np.ones(SWEEP_BASE.hidden, np.float32),
            norm_bias=np.zeros(SWEEP_BASE.hidden, np.float32),
        )
        self.ids = np.minimum(rng.zipf(1.1, (batch, seq)), SWEEP_BASE.vocab) - 1
        self.types = np.zeros((batch, seq), np.int64)
        self.types[:, seq // 2 :] = 1
        self.grad = rng.standard_normal((batch, seq, SWEEP_BASE.hidden)).astype(np.float32)
        self.norm_backward = norm.layer_norm_backward
        gradients = self.time_step(shape)  # the warm-up, checked
        expected = np.zeros_like(self.tables.token)
        np.add.at(expected, self.ids.reshape(-1), self._grad_sums.reshape(-1, SWEEP_BASE.hidden))
        if not np.allclose(gradients.token, expected, rtol=1e-5, atol=1e-5):
            raise AssertionError("the step's word-table gradient differs from np.add.at")

    def time_step(self, shape):
        tables, ids, types = self.tables, self.ids, self.types
        _, sums = bek.embed(tables, ids, types, layer_norm=True, return_sum=True, method="fused")
        self._grad_sums, *_ = self.norm_backward(
            sums, self.grad, tables.norm_weight, tables.norm_eps
        )
        return bek.embed_backward(tables, self._grad_sums, ids, types, method="fused")
