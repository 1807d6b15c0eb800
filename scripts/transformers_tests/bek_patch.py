"""A pytest plugin (``-p bek_patch``): every supported family's embeddings class is the
drop-in for the whole session (bert_embedding_kernels.nn.patch), so every model the tests
build has it."""

from bert_embedding_kernels.nn import patch

_PATCH = None


def pytest_configure(config):
    global _PATCH
    _PATCH = patch()


def pytest_unconfigure(config):
    if _PATCH is not None:
        _PATCH.undo()
