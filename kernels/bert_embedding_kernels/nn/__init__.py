"""The PyTorch side: the drop-in embeddings module, the call that patches models with it,
the registered operators it runs on, and its CUDA path.

>>> from bert_embedding_kernels.nn import BertEmbeddings, patch          # doctest: +SKIP
>>> model.bert.embeddings = BertEmbeddings.from_hf(model.bert.embeddings)  # doctest: +SKIP
>>> patch(model)                  # the same, found by model_type, for any head  # doctest: +SKIP

- :mod:`.module`: :class:`BertEmbeddings`, the drop-in (adopts the replaced module's objects);
- :mod:`.patch`: :func:`patch`, by model or by family (before loading), and its undo;
- :mod:`.ops`: ``torch.ops.bert_embedding_kernels.embed`` / ``embed_backward`` on CPU tensors;
- :mod:`.cuda`: the numba-cuda path for CUDA tensors (imported on the first CUDA call);
- :mod:`.binding`: the replaced module's call signature.

torch is imported here and below only; ``import bert_embedding_kernels`` never needs it.
Which modules are accepted, and why, is :mod:`bert_embedding_kernels.families` (torch-free:
checkpoint loading reads it too).
"""

from .module import BertEmbeddings
from .patch import Patch, patch

__all__ = ["BertEmbeddings", "Patch", "patch"]
