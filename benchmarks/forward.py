"""Forward time of every method, beside the memory roofline, over vocabulary and length.

The method classes time ``method="copy"`` too: a parallel copy of the output's
bytes (``bench.engine.roofline.CopyReference``), the least any forward pass must move,
so each graph carries its own roofline. ``LayerNorm`` times every method with
``layer_norm=True`` (BERT's embedding layer) and ``Peers`` the outside libraries
people use instead, at the same shapes.
"""

from dataclasses import replace

from .common import (
    DTYPES,
    FORWARD_METHODS,
    PEER_NAMES,
    SEQ_LENS,
    SWEEP_BASE,
    VOCAB_SIZES,
    forward_call,
    peer_call,
)

# LayerNorm and Peers run at two lengths of the sequence sweep, not all seven: the
# short sequence BERT is usually fed and its longest.
FEW_SEQ_LENS = (128, 512)


class _Forward:
    # setup's call is the warm-up (compilation, page faults), so asv's own warm-up
    # would only repeat it. One call per sample, at least two samples per round and
    # at most 2 s of samples: the slowest one-hot combination (about 4.5 s a call)
    # then takes about 15 s per round, well within the timeout.
    warmup_time = 0
    number = 1
    repeat = (2, 20, 2.0)
    timeout = 120


class VocabSweep(_Forward):
    """Time over vocabulary size at batch 8 x seq 128 x hidden 768, float32.

    The one-hot paths grow linearly with the vocabulary; the gathers stay flat at
    the copy's level (the vocabulary only changes which rows are read).
    Skipped: onehot and concat at vocab 250k (about 10 s a call).
    """

    params = (FORWARD_METHODS, VOCAB_SIZES)
    param_names = ("method", "vocab")

    def setup(self, method, vocab):
        self.call = forward_call(method, SWEEP_BASE.with_vocab(vocab))

    def time_forward(self, method, vocab):
        self.call()


class SeqSweep(_Forward):
    """Time over sequence length at batch 8 x hidden 768 x vocab 30522, float32.

    Every method grows linearly with the tokens; the position table grows with the
    sequence (``Shape.with_seq``). Skipped: onehot and concat at seq 1024 and 2048
    (about 4 and 9 s a call).
    """

    params = (FORWARD_METHODS, SEQ_LENS)
    param_names = ("method", "seq")

    def setup(self, method, seq):
        self.call = forward_call(method, SWEEP_BASE.with_seq(seq))

    def time_forward(self, method, seq):
        self.call()


class LayerNorm(_Forward):
    """``embed(..., layer_norm=True, out=out)`` per method at batch 8 x hidden 768 x vocab 30522.

    fused normalises each row in the kernel; the others sum, then normalise in
    numpy. The copy row is the same roofline as in SeqSweep. Skipped: before
    db46217 (no ``layer_norm``), and onehot and concat where SeqSweep skips them.
    """

    params = (FORWARD_METHODS, FEW_SEQ_LENS)
    param_names = ("method", "seq")

    def setup(self, method, seq):
        self.call = forward_call(method, SWEEP_BASE.with_seq(seq), layer_norm=True)

    def time_forward(self, method, seq):
        self.call()


class Peers(_Forward):
    """Outside implementations at the same shapes (``bench.engine.peers``), where installed.

    numpy-indexing and torch-eager compute the plain sum (compare them with
    SeqSweep); torch-eager-layernorm and onnxruntime-embedlayernorm normalise too
    (compare them with LayerNorm). Each allocates its output. torch-compile is left
    out (about 20 s of compilation per shape). Skipped: a peer whose libraries are
    not installed (asv's own environments install neither torch nor onnxruntime),
    and peers a commit lacks (all before 19a1fc4, the layer-norm ones before ec2a385).
    """

    params = (PEER_NAMES, FEW_SEQ_LENS)
    param_names = ("peer", "seq")

    def setup(self, peer, seq):
        self.call = peer_call(peer, SWEEP_BASE.with_seq(seq))

    def time_forward(self, peer, seq):
        self.call()


class Dtypes(_Forward):
    """Every method and the copy per table dtype (float32, bfloat16) at batch 8 x seq 512.

    16-bit tables halve the bytes read and written; every method widens them to
    float32, adds there and rounds once, checked bit for bit before timing.
    Skipped: bfloat16 before the dtype axis arrived; onehot and concat where
    SeqSweep skips them.
    """

    params = (FORWARD_METHODS, DTYPES)
    param_names = ("method", "dtype")

    def setup(self, method, dtype):
        self.call = forward_call(method, replace(SWEEP_BASE.with_seq(512), dtype=dtype))

    def time_forward(self, method, dtype):
        self.call()
