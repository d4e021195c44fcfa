"""SignatureCall's choice between TensorFlow's flat call and the public one, with stand-in functions."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from server.runtime.tf_call import SignatureCall


class Signature:
    """A loaded signature's surface: the public keyword call, and the flat one it ends in."""

    def __init__(self, keywords: list[str], flat_error: BaseException | None = None) -> None:
        self._arg_keywords = keywords
        self.captured_inputs = ["captured"]
        self.flat_error = flat_error
        self.calls: list[tuple[str, Any]] = []

    def _call_flat(self, tensors: list[Any], captured: list[Any]) -> dict[str, Any]:
        self.calls.append(("flat", tensors + captured))
        if self.flat_error is not None:
            raise self.flat_error
        return {"y": tensors}

    def __call__(self, **tensors: Any) -> dict[str, Any]:
        self.calls.append(("public", tensors))
        return {"y": [tensors[k] for k in sorted(tensors)]}


def test_tensors_go_in_the_functions_argument_order_with_its_captures() -> None:
    function = Signature(["b", "a"])
    call = SignatureCall(function, ["a", "b"])
    assert call.flat
    assert call({"a": 1, "b": 2}) == {"y": [2, 1]}
    assert function.calls == [("flat", [2, 1, "captured"])]


@pytest.mark.parametrize("keywords", [["a"], ["a", "b", "c"], ["a", "b_"], []])
def test_keywords_that_are_not_the_inputs_names_take_the_public_call(keywords: list[str]) -> None:
    function = Signature(keywords)
    call = SignatureCall(function, ["a", "b"])
    assert not call.flat
    assert call({"a": 1, "b": 2}) == {"y": [1, 2]}
    assert function.calls == [("public", {"a": 1, "b": 2})]


def test_a_function_without_the_flat_method_takes_the_public_call() -> None:
    def public(**tensors: Any) -> dict[str, Any]:
        return {"y": tensors["a"]}

    call = SignatureCall(public, ["a"])
    assert not call.flat and call({"a": 3}) == {"y": 3}


def test_a_changed_flat_method_falls_back_for_good_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    function = Signature(["a"], flat_error=TypeError("_call_flat() takes 2 positional arguments"))
    call = SignatureCall(function, ["a"])
    with caplog.at_level(logging.WARNING, "server.runtime.tf_call"):
        assert call({"a": 1}) == {"y": [1]}
        assert call({"a": 2}) == {"y": [2]}
    assert [kind for kind, _ in function.calls] == ["flat", "public", "public"]
    assert not call.flat
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        "TensorFlow's ConcreteFunction._call_flat is not what this server expects"]


def test_the_models_own_error_is_raised_not_retried() -> None:
    function = Signature(["a"], flat_error=ValueError("Input is empty"))  # what a graph's op raises
    call = SignatureCall(function, ["a"])
    with pytest.raises(ValueError, match="Input is empty"):
        call({"a": 1})
    assert call.flat and [kind for kind, _ in function.calls] == ["flat"]
