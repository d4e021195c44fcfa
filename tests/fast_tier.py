"""The fast tier's rule, enforced: no subprocess and no TensorFlow. A pytest plugin (``make test-fast``
loads it with ``-p tests.fast_tier``; the whole suite runs without it).

Importing ``tensorflow`` raises ImportError, and starting a process (``subprocess``, ``os.fork``,
``os.posix_spawn``, ``os.system``, multiprocessing's spawn) raises RuntimeError, both naming the rule.
Each attempt is also recorded, so an attempt that the code under test catches still fails the test
that made it (or, made outside any test, the run). Tests that need either belong in tests/integration.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.abc
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

RULE = "the fast tier (make test-fast) runs no subprocess and never imports TensorFlow"
_attempts: list[str] = []
_expected = 0  # >0 inside expected_attempts(): the guard's own test


def _attempt(what: str) -> str:
    if not _expected:
        _attempts.append(what)
    return f"{what}: {RULE}; move the test to tests/integration"


class _Refused(importlib.abc.Loader):
    """Loads nothing: running the module is the attempt (finding it is allowed: a library may probe for
    an optional package without importing it)."""

    def create_module(self, spec: Any) -> None:
        return None

    def exec_module(self, module: Any) -> None:
        raise ImportError(_attempt(f"import {module.__name__}"))


class _NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != "tensorflow" and not name.startswith("tensorflow."):
            return None
        for finder in sys.meta_path:
            if finder is not self and hasattr(finder, "find_spec"):
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    spec.loader = _Refused()
                    return spec
        raise ImportError(_attempt(f"import {name}"))  # not installed: still an attempt


def _refuse(what: str, original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def refused(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(_attempt(what))

    refused.__wrapped_original__ = original  # type: ignore[attr-defined]
    return refused


def _patches() -> list[tuple[Any, str]]:
    import _posixsubprocess

    targets: list[tuple[Any, str]] = [(subprocess.Popen, "_execute_child"), (_posixsubprocess, "fork_exec")]
    targets += [(os, name) for name in ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system")
                if hasattr(os, name)]
    return targets


_saved: list[tuple[Any, str, Any]] = []
_finder = _NoTensorFlow()


def pytest_configure(config: pytest.Config) -> None:
    loaded = sorted(name for name in sys.modules if name == "tensorflow" or name.startswith("tensorflow."))
    if loaded:
        raise pytest.UsageError(f"TensorFlow was imported before the fast tier started ({loaded[0]}): {RULE}")
    sys.meta_path.insert(0, _finder)
    for owner, name in _patches():
        original = getattr(owner, name)
        _saved.append((owner, name, original))
        label = f"{owner.__module__}.{owner.__qualname__}" if isinstance(owner, type) else owner.__name__
        setattr(owner, name, _refuse(f"{label}.{name}", original))


def pytest_unconfigure(config: pytest.Config) -> None:
    with contextlib.suppress(ValueError):
        sys.meta_path.remove(_finder)
    while _saved:
        owner, name, original = _saved.pop()
        setattr(owner, name, original)


@pytest.fixture(autouse=True)
def _fast_tier_rule() -> Iterator[None]:
    """Fails the test that tried to start a process or import TensorFlow, even if the attempt was caught."""
    before = len(_attempts)
    yield
    made = _attempts[before:]
    if made:
        pytest.fail(f"{RULE}; this test tried: {', '.join(made)}", pytrace=False)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Attempts made outside any test (collection, a module's imports) fail the run."""
    if _attempts and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _attempts:
        terminalreporter.write_line(f"{RULE}, yet these were attempted: {', '.join(_attempts)}", red=True)


@contextlib.contextmanager
def expected_attempts() -> Iterator[None]:
    """Attempts inside the block are the caller's own checks of this guard: not recorded."""
    global _expected
    _expected += 1
    try:
        yield
    finally:
        _expected -= 1


def active() -> bool:
    """Whether this plugin guards the running session."""
    return _finder in sys.meta_path
