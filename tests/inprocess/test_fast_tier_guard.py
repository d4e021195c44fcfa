"""The fast tier's rule holds: under ``make test-fast`` (tests/fast_tier.py) a subprocess or a TensorFlow
import is refused, and the harness itself needs neither."""

from __future__ import annotations

import asyncio
import importlib
import multiprocessing
import os
import subprocess
import sys

import pytest

from .. import fast_tier

pytestmark = pytest.mark.skipif(not fast_tier.active(), reason="only under make test-fast (-p tests.fast_tier)")


def test_a_subprocess_is_refused() -> None:
    with fast_tier.expected_attempts():
        with pytest.raises(RuntimeError, match="runs no subprocess"):
            subprocess.run(["true"], check=False)
        with pytest.raises(RuntimeError, match="runs no subprocess"):
            os.fork()
        with pytest.raises(RuntimeError, match="runs no subprocess"):
            multiprocessing.get_context("spawn").Process(target=print).start()


async def test_an_asyncio_subprocess_is_refused() -> None:
    with fast_tier.expected_attempts(), pytest.raises(RuntimeError, match="runs no subprocess"):
        await asyncio.create_subprocess_exec("true")


def test_importing_tensorflow_is_refused_and_finding_it_is_not() -> None:
    importlib.util.find_spec("tensorflow")  # server.grpc.protos finds TensorFlow's .proto modules this way
    with fast_tier.expected_attempts(), pytest.raises(ImportError, match="never imports TensorFlow"):
        importlib.import_module("tensorflow")
    assert "tensorflow" not in sys.modules
