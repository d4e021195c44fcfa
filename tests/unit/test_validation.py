"""Signature validation: every message names the input, the expected and the received."""

import numpy as np
import pytest

from server.core.vocabulary import InvalidInput, Signature, TensorSpec, validate_inputs

SIG = Signature("serving_default", {
    "image": TensorSpec("image", np.dtype(np.float32), (-1, 4, 4, 3)),
    "text": TensorSpec("text", np.dtype(object), (-1,)),
}, {})


def ok(rows=2):
    return {"image": np.zeros((rows, 4, 4, 3), np.float32), "text": np.array([b"a"] * rows, dtype=object)}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image": None}, "missing input 'image'; the signature expects inputs ['image', 'text']"),
        ({"extra": np.zeros(2)}, "unknown input 'extra'"),
        ({"image": np.zeros((2, 4, 4), np.float32)}, "input 'image' expects shape [-1, 4, 4, 3] (rank 4), got shape [2, 4, 4] (rank 3)"),
        ({"image": np.zeros((2, 4, 5, 3), np.float32)}, "dimension 2 must be 4"),
        ({"image": np.zeros((2, 4, 4, 3), np.float64)}, "input 'image' expects FP32 (float32), got float64"),
        ({"image": np.zeros((0, 4, 4, 3), np.float32), "text": np.array([], dtype=object)}, "empty batch"),
        ({"text": np.zeros(2, np.int32)}, "input 'text' expects strings (BYTES), got int32"),
        ({"text": np.array([b"a"] * 3, dtype=object)}, "input 'text' has 3 rows, other inputs have 2"),
        ({"image": np.array([["x"] * 3] * 2)}, "input 'image' expects shape"),
    ],
)
def test_invalid_inputs_are_named_precisely(change, message):
    inputs = ok()
    for key, value in change.items():
        if value is None:
            del inputs[key]
        else:
            inputs[key] = value
    with pytest.raises(InvalidInput) as caught:
        validate_inputs(SIG, inputs)
    assert message in str(caught.value)


def test_valid_inputs_pass_and_unicode_strings_become_objects():
    inputs = ok()
    inputs["text"] = np.array(["héllo", "b"])
    checked = validate_inputs(SIG, inputs)
    assert checked["text"].dtype == object and checked["image"] is inputs["image"]
