"""One call of a SavedModel signature with tensors the server has already checked.

A loaded signature called as ``function(**tensors)`` binds and checks its keyword arguments against the
structured signature on every call: about 60 µs of Python a batch (a quarter of a one-row call of the demo
tabular model), spent again on inputs that ``validate_inputs`` has already matched to the signature's names,
dtypes and shapes. ``ConcreteFunction._call_flat`` is the step that call ends in: the tensors in the
function's argument order, then its captured inputs. It is TensorFlow's private method, so it is used only
where the function has what it needs (``_call_flat``, ``_arg_keywords`` naming exactly the signature's inputs,
``captured_inputs``), and a call that finds it changed (a TypeError or AttributeError raised before the graph
runs) goes back to the public call for good, with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)


class SignatureCall:
    """``function`` (a loaded signature) called with a tensor per input name; returns its outputs by name."""

    def __init__(self, function: Any, input_names: list[str]) -> None:
        self._function = function
        keywords = [str(k) for k in getattr(function, "_arg_keywords", None) or ()]
        flat = hasattr(function, "_call_flat") and hasattr(function, "captured_inputs")
        self._order: list[str] | None = keywords if flat and sorted(keywords) == sorted(input_names) else None

    @property
    def flat(self) -> bool:
        """Whether calls skip the structured binding (TensorFlow has the private method it needs)."""
        return self._order is not None

    def __call__(self, tensors: Mapping[str, Any]) -> Mapping[str, Any]:
        order = self._order
        if order is not None:
            function = self._function
            try:
                flat = [tensors[name] for name in order]
                return function._call_flat(flat, function.captured_inputs)  # type: ignore[no-any-return]
            except (TypeError, AttributeError) as error:
                self._order = None
                log.warning("TensorFlow's ConcreteFunction._call_flat is not what this server expects (%r); "
                            "signatures are called through the public API from now on", error)
        return self._function(**tensors)  # type: ignore[no-any-return]
