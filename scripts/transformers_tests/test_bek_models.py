"""transformers' common model tests (``ModelTesterMixin``, from its source distribution) on
BERT, RoBERTa and DistilBERT with their heads: the model testers are ours, the tests theirs.

Copied next to transformers' ``tests/`` package by scripts/transformers_model_tests.py and
run there twice: as it is, and with ``-p bek_patch`` (the drop-in patched into every model
the tests build).
"""

import os
import unittest

import transformers
from transformers.testing_utils import torch_device

from .test_modeling_common import ModelTesterMixin, ids_tensor, random_attention_mask

# Every head of the three families that takes (batch, seq) ids and a (batch,) label.
HEADS = {
    "bert": [
        "BertModel",
        "BertForMaskedLM",
        "BertLMHeadModel",
        "BertForPreTraining",
        "BertForSequenceClassification",
        "BertForTokenClassification",
        "BertForQuestionAnswering",
        "BertForMultipleChoice",
        "BertForNextSentencePrediction",
    ],
    "roberta": [
        "RobertaModel",
        "RobertaForMaskedLM",
        "RobertaForCausalLM",
        "RobertaForSequenceClassification",
        "RobertaForTokenClassification",
        "RobertaForQuestionAnswering",
        "RobertaForMultipleChoice",
    ],
    "distilbert": [
        "DistilBertModel",
        "DistilBertForMaskedLM",
        "DistilBertForSequenceClassification",
        "DistilBertForTokenClassification",
        "DistilBertForQuestionAnswering",
        "DistilBertForMultipleChoice",
    ],
}


class ModelSizes:
    """The sizes and inputs ModelTesterMixin asks its model tester for."""

    batch_size, seq_length, vocab_size, hidden_size = 3, 7, 99, 32
    num_hidden_layers, num_attention_heads, intermediate_size = 2, 4, 37
    num_choices, num_labels, type_vocab_size, is_training = 4, 3, 2, True

    def __init__(self, parent, model_type: str):
        self.parent, self.model_type = parent, model_type

    def get_config(self):
        sizes = {
            "vocab_size": self.vocab_size,
            "max_position_embeddings": 64,
            "pad_token_id": 1,
            "num_labels": self.num_labels,
        }
        if self.model_type == "distilbert":
            sizes.update(
                dim=self.hidden_size,
                n_layers=self.num_hidden_layers,
                n_heads=self.num_attention_heads,
                hidden_dim=self.intermediate_size,
            )
        else:
            sizes.update(
                hidden_size=self.hidden_size,
                num_hidden_layers=self.num_hidden_layers,
                num_attention_heads=self.num_attention_heads,
                intermediate_size=self.intermediate_size,
                type_vocab_size=self.type_vocab_size,
            )
        return transformers.AutoConfig.for_model(self.model_type, **sizes)

    def prepare_config_and_inputs_for_common(self):
        shape = [self.batch_size, self.seq_length]
        inputs = {
            "input_ids": ids_tensor(shape, self.vocab_size).to(torch_device),
            "attention_mask": random_attention_mask(shape).to(torch_device),
        }
        if self.model_type != "distilbert":
            inputs["token_type_ids"] = ids_tensor(shape, self.type_vocab_size).to(torch_device)
        return self.get_config(), inputs


def _case(model_type: str):
    class Case(ModelTesterMixin, unittest.TestCase):
        all_model_classes = tuple(getattr(transformers, name) for name in HEADS[model_type])

        def setUp(self):
            self.model_tester = ModelSizes(self, model_type)

    Case.__name__ = Case.__qualname__ = f"{model_type.title().replace('-', '')}Test"
    return Case


BertTest = _case("bert")
RobertaTest = _case("roberta")
DistilbertTest = _case("distilbert")


class DropInTest(unittest.TestCase):
    """The run with ``-p bek_patch`` (BEK_PATCHED=1) builds the drop-in; the other does not."""

    def test_the_models_have_the_drop_in_exactly_when_patched(self):
        from bert_embedding_kernels.nn import BertEmbeddings

        for model_type, head in (("bert", "BertForMaskedLM"), ("distilbert", "DistilBertModel")):
            model = getattr(transformers, head)(ModelSizes(self, model_type).get_config())
            patched = any(isinstance(m, BertEmbeddings) for m in model.modules())
            self.assertEqual(patched, os.environ.get("BEK_PATCHED") == "1", head)
