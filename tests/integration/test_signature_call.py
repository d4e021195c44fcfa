"""Signatures called with the server's checked tensors (server/runtime/tf_call.py): every zoo model's every
signature takes the flat call, and its answer is the public call's, bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ..reference import call_signature
from ..zoo import ZOO

CASES = [pytest.param(name, signature, id=f"{name}-{signature}") for name, model in ZOO.items()
         for signature in model.signatures]


@pytest.mark.parametrize(("name", "signature"), CASES)
def test_the_flat_call_answers_as_the_public_call(zoo_repository: Path, name: str, signature: str) -> None:
    from server.runtime.tensorflow_model import TensorFlowModel

    path = zoo_repository / name / "1"
    model = TensorFlowModel(path)
    assert model.flat_signatures == set(model.signatures)  # TensorFlow has what the flat call needs
    for inputs in ZOO[name].requests(signature):
        got = model.run(inputs, signature)
        want = call_signature(path, signature, inputs)
        assert sorted(got) == sorted(want)
        for key in want:
            assert got[key].dtype == want[key].dtype and np.array_equal(got[key], want[key]), key
