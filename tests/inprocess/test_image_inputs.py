"""Images as uint8 pixels and as JPEG bytes over binary V2 take FP32's path: the batcher gets the pixels as a
view of the request body (no copy, whatever the dtype), and each JPEG as one ``bytes`` element; through a
front end's arena, pixels and floats are laid out alike and strings ride in the message."""

from __future__ import annotations

import asyncio
import mmap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from server.codecs.v2_tensor import encode_bytes_tensor
from server.ipc.layout import read_tensors, write_rows, write_tensors

from ..harness import Client, Served, serving, synthetic_model
from ..payloads import binary_body, split_binary

PIXELS = {"inputs": {"image": {"datatype": "UINT8", "shape": [-1, 96, 96, 3]}},
          "outputs": {"probabilities": {"datatype": "FP32", "shape": [-1, 10]}}}
FLOATS = {"inputs": {"image": {"datatype": "FP32", "shape": [-1, 96, 96, 3]}},
          "outputs": {"probabilities": {"datatype": "FP32", "shape": [-1, 10]}}}
JPEG = {"inputs": {"image_bytes": {"datatype": "BYTES", "shape": [-1]}},
        "outputs": {"probabilities": {"datatype": "FP32", "shape": [-1, 10]}}}
A_JPEG = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 20 + b"\xff\xd9"  # stands in for an encoded image


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    root = tmp_path / "repo"
    for name, signature in (("pixels", PIXELS), ("floats", FLOATS), ("jpeg", JPEG)):
        synthetic_model(root, name, signature)
    async with serving(root) as server:
        yield server


def backing(arr: np.ndarray) -> Any:
    """The object that owns an array's memory, through views and memoryviews."""
    base: Any = arr
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    return base.obj if isinstance(base, memoryview) else base


def request(name: str, datatype: str, shape: list[int], raw: bytes) -> tuple[bytes, dict[str, str]]:
    return binary_body({"inputs": [{"name": name, "datatype": datatype, "shape": shape,
                                    "parameters": {"binary_data_size": len(raw)}}],
                        "parameters": {"binary_data_output": True}}, raw)


async def infer(served: Served, http: Client, model: str, body: bytes, headers: dict[str, str]
                ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Send ``body``; return what the batcher got and the answer's probabilities (the batcher's rows back)."""
    puppet = await served.puppet(model)
    answer = asyncio.ensure_future(http.post(f"/v2/models/{model}/infer", body, headers))
    [submitted] = await puppet.submitted(1)
    got = dict(submitted.inputs)
    submitted.resolve({"probabilities": np.arange(10, dtype=np.float32).reshape(1, 10)})
    response = await answer
    assert response.status == 200, response.body
    header, data = split_binary(response)
    assert header["outputs"][0]["shape"] == [1, 10]
    return got, np.frombuffer(data, np.float32)


@pytest.mark.parametrize("via", ["socket", "asgi"])
@pytest.mark.parametrize(("model", "dtype", "datatype"), [("pixels", np.uint8, "UINT8"), ("floats", np.float32, "FP32")])
async def test_binary_pixels_reach_the_batcher_as_a_view_of_the_body(served: Served, via: str, model: str, dtype: Any,
                                                                     datatype: str) -> None:
    image = (np.arange(96 * 96 * 3) % 251).astype(dtype).reshape(1, 96, 96, 3)
    body, headers = request("image", datatype, [1, 96, 96, 3], image.tobytes())
    got, probabilities = await infer(served, served.client(via), model, body, headers)
    arr = got["image"]
    assert arr.dtype == dtype and arr.shape == (1, 96, 96, 3) and np.array_equal(arr, image)
    owner = backing(arr)
    assert not arr.flags.owndata and isinstance(owner, bytes) and len(owner) == len(body)  # the body, not a copy
    assert probabilities.tolist() == list(range(10))


async def test_a_binary_jpeg_reaches_the_batcher_as_one_bytes_element(served: Served) -> None:
    body, headers = request("image_bytes", "BYTES", [1], encode_bytes_tensor(np.array([A_JPEG], dtype=object)))
    got, _ = await infer(served, served.client("socket"), "jpeg", body, headers)
    arr = got["image_bytes"]
    assert arr.dtype == object and arr.shape == (1,) and type(arr[0]) is bytes and arr[0] == A_JPEG


def test_the_arena_lays_out_pixels_as_floats_and_hands_strings_back() -> None:
    buffer = mmap.mmap(-1, 1 << 20)
    pixels = (np.arange(2 * 96 * 96 * 3) % 251).astype(np.uint8).reshape(2, 96, 96, 3)
    floats = pixels.astype(np.float32) / 255
    jpegs = np.array([A_JPEG, A_JPEG[:100]], dtype=object)
    layout, objects = write_tensors(buffer, 64, {"pixels": pixels, "floats": floats, "jpegs": jpegs})
    assert [(name, dtype, shape) for name, dtype, shape, _ in layout] == [
        ("pixels", "|u1", (2, 96, 96, 3)), ("floats", "<f4", (2, 96, 96, 3))]
    assert list(objects) == ["jpegs"] and objects["jpegs"] is jpegs  # strings travel in the message itself
    read = read_tensors(buffer, layout)
    assert read["pixels"].dtype == np.uint8 and np.array_equal(read["pixels"], pixels)
    assert np.array_equal(read["floats"], floats)
    assert all(backing(arr) is buffer for arr in read.values())  # read in place
    grouped = write_rows(buffer, 1 << 19, [{"image": pixels[:1]}, {"image": pixels[1:]}])
    [(name, dtype, shape, _)] = grouped
    assert (name, dtype, shape) == ("image", "|u1", (2, 96, 96, 3))
    assert np.array_equal(read_tensors(buffer, grouped)["image"], pixels)
