"""The method families, one module each, forward and backward side by side.

``onehot`` (the one-hot and the concatenated one-hot products), ``gather``
(numpy fancy indexing), ``fused`` (the numba forward kernels, sum and
sum+LayerNorm) with ``fused_backward``, and ``layernorm`` (numpy LayerNorm for
the methods that do not fuse it). :mod:`bert_embedding_kernels.registry` names them.
"""
