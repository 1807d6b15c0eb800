"""Argument checks: the device range check raises the CPU's IndexError message."""

import numpy as np
import pytest
from cuda_naive import tables

kc = pytest.importorskip("bert_embedding_kernels.cuda")
cuda = kc.cuda


@pytest.fixture(scope="module")
def device():
    token, segment, position, _, _ = tables(vocab=50, hidden=3, positions=16)
    return kc.DeviceTables(token, segment, position)


@pytest.mark.parametrize("value", [-1, 50, 2**40])
def test_out_of_range_input_id_names_array_place_value_and_range(device, value):
    input_ids = np.zeros((3, 4), np.int64)
    input_ids[1, 2] = value
    message = (
        f"input_ids[1, 2] (batch 1, position 2) is {value}, out of range: "
        "valid ids satisfy 0 <= id < 50 (vocab_size)."
    )
    with pytest.raises(IndexError) as error:
        kc.embed(device, input_ids)
    assert str(error.value) == message


def test_the_first_bad_id_in_row_major_order_is_reported(device):
    input_ids = np.zeros((3, 4), np.int32)
    input_ids[2, 0], input_ids[1, 3], input_ids[1, 1] = 99, -5, 77
    with pytest.raises(IndexError, match=r"^input_ids\[1, 1\] \(batch 1, position 1\) is 77,"):
        kc.embed(device, cuda.to_device(input_ids))


def test_bad_token_type_is_named(device):
    types = np.zeros((2, 3), np.int64)
    types[0, 2] = 2
    with pytest.raises(IndexError) as error:
        kc.embed(device, np.zeros((2, 3), np.int64), types)
    assert str(error.value) == (
        "token_type_ids[0, 2] (batch 0, position 2) is 2, out of range: "
        "valid ids satisfy 0 <= id < 2 (type_vocab_size)."
    )


@pytest.mark.parametrize(
    ("positions", "location"),
    [
        (np.array([0, 1, 16]), "position_ids[2] (position 2)"),
        (np.array([[0, 1, 16]]), "position_ids[0, 2] (batch 0, position 2)"),
        (np.array([[0, 1, 2], [3, 16, 5]]), "position_ids[1, 1] (batch 1, position 1)"),
    ],
    ids=["1-D", "(1, seq)", "(batch, seq)"],
)
def test_bad_position_is_named_as_the_caller_shaped_it(device, positions, location):
    with pytest.raises(IndexError) as error:
        kc.embed(device, np.zeros((2, 3), np.int64), None, cuda.to_device(positions))
    assert str(error.value) == (
        f"{location} is 16, out of range: valid ids satisfy 0 <= id < 16 (max_positions)."
    )


def test_input_ids_are_checked_before_token_types(device):
    input_ids, types = np.zeros((1, 3), np.int64), np.zeros((1, 3), np.int64)
    input_ids[0, 2], types[0, 0] = 50, 9
    with pytest.raises(IndexError, match=r"^input_ids\[0, 2\]"):
        kc.embed(device, input_ids, types)


def test_default_positions_past_the_table(device):
    with pytest.raises(IndexError) as error:
        kc.embed(device, np.zeros((1, 4), np.int64), past_length=13)
    assert str(error.value) == (
        "position_ids (default, past_length=13) run to position 16, out of range: "
        "valid ids satisfy 0 <= id < 16 (max_positions)."
    )


def test_backward_checks_ids_too(device):
    with pytest.raises(IndexError, match=r"^input_ids\[0, 0\] \(batch 0, position 0\) is -1"):
        kc.embed_backward(device, np.zeros((1, 2, 3), np.float32), np.array([[-1, 0]]))


def test_ids_of_wrong_type_or_shape(device):
    with pytest.raises(TypeError, match="input_ids has dtype float64; ids must be integers"):
        kc.embed(device, np.zeros((1, 2)))
    with pytest.raises(TypeError, match="token_type_ids has dtype bool"):
        kc.embed(device, np.zeros((1, 2), np.int64), cuda.to_device(np.zeros((1, 2), bool)))
    with pytest.raises(ValueError, match=r"input_ids has shape \(3,\); it must be 2-D"):
        kc.embed(device, np.zeros(3, np.int64))
    with pytest.raises(ValueError, match=r"token_type_ids has shape \(1, 2\); it must match"):
        kc.embed(device, np.zeros((2, 2), np.int64), np.zeros((1, 2), np.int64))
    with pytest.raises(ValueError, match=r"position_ids has shape \(3,\); with input_ids"):
        kc.embed(device, np.zeros((2, 2), np.int64), None, np.arange(3))
    with pytest.raises(ValueError, match="past_length is -1"):
        kc.embed(device, np.zeros((2, 2), np.int64), past_length=-1)


def test_prepare_normal_form(device):
    batch = kc.prepare(device, [[1, 2, 3]], position_ids=np.array([0, 1, 2], np.int32))
    assert batch.shape == (1, 3) and batch.num_tokens == 3
    assert tuple(batch.token_type_ids.shape) == (1, 3) and tuple(batch.position_ids.shape) == (1, 3)
    assert (
        kc.prepare(device, [[1, 2]]).token_type_ids is kc.prepare(device, [[3, 4]]).token_type_ids
    )
