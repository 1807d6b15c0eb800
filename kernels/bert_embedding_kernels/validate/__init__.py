"""Every argument check, forward and backward, run before any dispatch.

:func:`bert_embedding_kernels.embed` and :func:`bert_embedding_kernels.embed_backward`
hand their arguments to :mod:`.calls` once (``check_forward`` / ``check_backward``) and
get back everything the method needs, so a bad input gets the same exception and message
whichever method was asked for, and no kernel ever sees an id outside its table.

- :mod:`.calls`: the one entry (ForwardCall, BackwardCall);
- :mod:`.options`: the method's name, the tables, dtypes, LayerNorm's flags;
- :mod:`.prepare`: the ids checked and in normal form (:mod:`.batch`'s Batch), through
  :mod:`.ids` (integers, ranges, defaults) and :mod:`.positions` (RoBERTa's rule);
- :mod:`.outputs`: ``out``, ``attention_mask``, overlaps; :mod:`.backward`: the backward's.
"""
