"""One entry per registered method (:mod:`bert_embedding_kernels.registry` names them).

``onehot`` (one-hot products), ``concat`` (the concatenated one-hot code times the
stacked table), ``gather`` (numpy fancy indexing) and ``fused`` (the numba kernels: a
package whose modules mirror :mod:`bert_embedding_kernels.cuda`'s names: ``forward``,
``half``, ``backward``, ``norm_backward``, ``halfbits``, ``vectors``). The numpy
LayerNorm that the unfused methods apply after their sum is
:mod:`bert_embedding_kernels.layernorm`.
"""
