"""Warm-up data without TensorFlow: TF Serving's TFRecord + PredictionLog records, warmup_examples files, the
preference between them and generated inputs, rows repeated to each size, and how a failed batch is judged."""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import struct

import numpy as np
import pytest

from server.core.vocabulary import Signature, TensorSpec
from server.grpc import protos
from server.models.config import ModelConfig, ModelConfigError, load_model_config
from server.runtime.backend import WorkerCrashed
from server.runtime.spec import WarmupSource
from server.runtime.warmup_data import WarmupBatch, WarmupFailed, model_message, replay, warmup_batches
from server.runtime.warmup_records import (
    RECORDS_PATH,
    WarmupDataError,
    crc32c,
    read_tfrecords,
    read_warmup_records,
)

from ..warmup_files import classify_log, predict_log

OBJ = np.dtype(object)
IMAGES = Signature("serving_default", {"image_bytes": TensorSpec("image_bytes", OBJ, (-1,))},
                   {"mean": TensorSpec("mean", np.dtype(np.float32), (-1,))})
TOKENS = Signature("embed", {"tokens": TensorSpec("tokens", np.dtype(np.int32), (-1, -1))},
                   {"vector": TensorSpec("vector", np.dtype(np.float32), (-1, 8))})


def bitwise_crc32c(data: bytes) -> int:
    """CRC-32C bit by bit, straight from the definition (reflected 0x1EDC6F41, all-ones in and out)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def masked(data: bytes) -> int:
    crc = bitwise_crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(*records: bytes) -> bytes:
    """TFRecord framing as TensorFlow writes it (tensorflow/core/lib/io/record_writer.cc)."""
    out = b""
    for record in records:
        length = struct.pack("<Q", len(record))
        out += length + struct.pack("<I", masked(length)) + record + struct.pack("<I", masked(record))
    return out


def test_crc32c_is_castagnolis_for_every_length():
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value
    assert crc32c(b"") == 0
    data = os.urandom(20_011)
    for size in (1, 3, 4, 4095, 4096, 4097, 10_000, 20_011):  # byte-by-byte below 4096, chunked from there
        assert crc32c(data[:size]) == bitwise_crc32c(data[:size]), size


def test_tfrecords_are_read_with_their_checksums_verified(tmp_path):
    path = tmp_path / "records"
    path.write_bytes(tfrecord(b"first", b"", os.urandom(5000)))
    assert [len(r) for r in read_tfrecords(path)] == [5, 0, 5000]
    good = tfrecord(b"first", b"second")
    damaged = {
        "truncated record header at byte 21": good[:25],
        "record 0 at byte 0 is truncated (5 bytes and a checksum announced, 8 present)": good[:20],
        "record 1 at byte 21 is truncated (6 bytes and a checksum announced, 3 present)": good[:-7],
        "corrupt record length at byte 0": b"\x09" + good[1:],
        "record 0 at byte 0 is corrupt (data checksum mismatch)": good[:12] + b"F" + good[13:],
        "GZIP-compressed": b"\x1f\x8b\x08" + good,
    }
    for fragment, data in damaged.items():
        path.write_bytes(data)
        with pytest.raises(WarmupDataError, match=re.escape(fragment)):
            read_tfrecords(path)
    path.write_bytes(tfrecord(*[b"x"] * 4))
    with pytest.raises(WarmupDataError, match="more than 3 records"):
        read_tfrecords(path, limit=3)
    with pytest.raises(WarmupDataError, match="cannot read warm-up records"):
        read_tfrecords(tmp_path / "absent")


def test_prediction_logs_give_their_predict_requests(tmp_path, caplog):
    path = tmp_path / "tf_serving_warmup_requests"
    images = np.array([b"\xff\xd8jpeg", b"\xff\xd8other"], dtype=object)
    tokens = np.array([[1, 2, 3]], dtype=np.int32)
    path.write_bytes(tfrecord(predict_log({"image_bytes": images}), classify_log(),
                              predict_log({"tokens": tokens}, "embed")))
    with caplog.at_level(logging.WARNING):
        first, second = read_warmup_records(path)
    assert (first.signature, first.inputs["image_bytes"].tolist()) == ("", images.tolist())
    assert (second.signature, second.inputs["tokens"].dtype, second.inputs["tokens"].tolist()) == (
        "embed", np.int32, [[1, 2, 3]])
    assert second.origin == f"{path} record 2"
    assert f"{path} record 1 is a classify_log: only predict_log records are replayed" in caplog.text

    path.write_bytes(tfrecord(b"\xff\xff\xff"))
    with pytest.raises(WarmupDataError, match=r"record 0 is not a tensorflow\.serving\.PredictionLog"):
        read_warmup_records(path)
    entry = protos.message("tensorflow.serving.PredictionLog")()
    entry.predict_log.request.inputs["x"].dtype = 18  # DT_COMPLEX128
    path.write_bytes(tfrecord(entry.SerializeToString()))
    with pytest.raises(WarmupDataError, match="record 0: input 'x': dtype DT_COMPLEX128 is not supported"):
        read_warmup_records(path)


def test_records_are_replayed_at_every_size_with_rows_repeated(tmp_path, caplog):
    path = tmp_path / "records"
    three = np.array([b"a", b"b", b"c"], dtype=object)
    path.write_bytes(tfrecord(predict_log({"image_bytes": three}), predict_log({"tokens": np.array([[7, 8]], np.int32)}, "embed"),
                              predict_log({"x": [1.0]}, "not_served")))
    signatures = {"serving_default": IMAGES, "embed": TOKENS}
    with caplog.at_level(logging.WARNING):
        batches = warmup_batches(WarmupSource(records=path), signatures, [1, 2, 5])
    assert [(b.signature, b.size, b.generated) for b in batches] == [
        ("serving_default", 1, False), ("serving_default", 2, False), ("serving_default", 5, False),
        ("embed", 1, False), ("embed", 2, False), ("embed", 5, False)]
    assert [b.inputs["image_bytes"].tolist() for b in batches[:3]] == [
        [b"a"], [b"a", b"b"], [b"a", b"b", b"c", b"a", b"b"]]
    assert batches[5].inputs["tokens"].tolist() == [[7, 8]] * 5 and batches[5].inputs["tokens"].dtype == np.int32
    assert batches[0].origin == f"{path} record 0"
    assert "requests for signature 'not_served', which is not served (served: ['embed', 'serving_default'])" \
        in caplog.text


def test_records_that_do_not_fit_the_signature_are_refused(tmp_path):
    path = tmp_path / "records"
    path.write_bytes(tfrecord(predict_log({"tokens": np.array([1.5], np.float32)}, "embed")))
    with pytest.raises(WarmupDataError, match=r"record 0 does not fit signature 'embed': input 'tokens' expects "
                                              r"shape \[-1, -1\] \(rank 2\)"):
        warmup_batches(WarmupSource(records=path), {"embed": TOKENS}, [1])


def test_generated_inputs_only_where_no_real_data_names_the_signature(tmp_path):
    path = tmp_path / "records"
    path.write_bytes(tfrecord(predict_log({"tokens": np.array([[4]], np.int32)}, "embed")))
    batches = warmup_batches(WarmupSource(records=path), {"serving_default": IMAGES, "embed": TOKENS}, [2])
    assert [(b.signature, b.generated, b.origin) for b in batches] == [
        ("serving_default", True, "generated inputs"), ("embed", False, f"{path} record 0")]
    assert batches[0].inputs["image_bytes"].tolist() == [b"", b""]


def test_npz_examples_hold_arrays_by_input_name(tmp_path):
    path = tmp_path / "examples.npz"
    np.savez(path, image_bytes=np.array([b"\xff\xd8one", b"\xff\xd8two"]))  # stored as fixed-width bytes
    batches = warmup_batches(WarmupSource(examples=path), {"serving_default": IMAGES}, [3])
    assert [(b.size, b.generated) for b in batches] == [(3, False)]
    assert batches[0].inputs["image_bytes"].dtype == OBJ
    assert batches[0].inputs["image_bytes"].tolist() == [b"\xff\xd8one", b"\xff\xd8two", b"\xff\xd8one"]
    np.savez(path, image_bytes=np.array([b"x"], dtype=object))
    with pytest.raises(WarmupDataError, match="holds an object array, which only pickle can load"):
        warmup_batches(WarmupSource(examples=path), {"serving_default": IMAGES}, [1])
    np.savez(path, text=np.array(["héllo"]))  # str arrays become UTF-8 bytes
    with pytest.raises(WarmupDataError, match=r"examples.npz does not fit signature 'serving_default': missing "
                                              "input 'image_bytes'"):
        warmup_batches(WarmupSource(examples=path), {"serving_default": IMAGES}, [1])


def test_json_examples_are_tf_serving_predict_bodies(tmp_path):
    path = tmp_path / "examples.json"
    jpeg = base64.b64encode(b"\xff\xd8jpeg").decode()
    path.write_text(json.dumps([{"instances": [{"b64": jpeg}]},
                                {"signature_name": "embed", "inputs": {"tokens": [[1, 2, 3], [4, 5, 6]]}}]))
    batches = warmup_batches(WarmupSource(examples=path), {"serving_default": IMAGES, "embed": TOKENS}, [2])
    assert [(b.signature, b.origin) for b in batches] == [("serving_default", f"{path} body 0"),
                                                          ("embed", f"{path} body 1")]
    assert batches[0].inputs["image_bytes"].tolist() == [b"\xff\xd8jpeg"] * 2
    assert batches[1].inputs["tokens"].dtype == np.int32 and batches[1].inputs["tokens"].shape == (2, 3)
    path.write_text(json.dumps({"instances": [{"b64": "not base64!"}]}))
    with pytest.raises(WarmupDataError, match=r"body 0 does not fit signature 'serving_default': .*not valid base64"):
        warmup_batches(WarmupSource(examples=path), {"serving_default": IMAGES}, [1])
    path.write_text("[1, 2]")
    with pytest.raises(WarmupDataError, match="must hold a TF Serving predict body"):
        warmup_batches(WarmupSource(examples=path), {"serving_default": IMAGES}, [1])
    with pytest.raises(WarmupDataError, match="no such file"):
        warmup_batches(WarmupSource(examples=tmp_path / "absent.json"), {"serving_default": IMAGES}, [1])


def test_records_come_before_examples(tmp_path):
    records, examples = tmp_path / "records", tmp_path / "examples.npz"
    records.write_bytes(tfrecord(predict_log({"image_bytes": np.array([b"record"], dtype=object)})))
    np.savez(examples, image_bytes=np.array([b"example"]), tokens=np.array([[1]], np.int32))
    batches = warmup_batches(WarmupSource(records, examples), {"serving_default": IMAGES}, [1])
    assert [b.inputs["image_bytes"].tolist() for b in batches] == [[b"record"]]


def test_warmup_examples_in_model_yaml(tmp_path):
    version = tmp_path / "model" / "1"
    (version / RECORDS_PATH).parent.mkdir(parents=True)
    (tmp_path / "model" / "model.yaml").write_text("warmup_examples: examples.npz\n")
    config = load_model_config(tmp_path / "model")
    assert config.warmup_source(version) == WarmupSource(None, version / "examples.npz")  # absent: fails at load
    (tmp_path / "model" / "examples.npz").write_bytes(b"")
    assert config.warmup_source(version) == WarmupSource(None, tmp_path / "model" / "examples.npz")
    (version / "examples.npz").write_bytes(b"")
    (version / RECORDS_PATH).write_bytes(b"")
    assert config.warmup_source(version) == WarmupSource(version / RECORDS_PATH, version / "examples.npz")
    assert ModelConfig().warmup_source(tmp_path) == WarmupSource()
    for bad in ("../examples.npz", "/abs/examples.npz", "examples.csv"):
        (tmp_path / "model" / "model.yaml").write_text(f"warmup_examples: {bad}\n")
        with pytest.raises(ModelConfigError, match=r"warmup_examples: Value error, must name a \.npz or \.json file"):
            load_model_config(tmp_path / "model")


class Rejects(Exception):
    """What a model raises on inputs it cannot take."""


async def test_a_rejected_generated_batch_is_left_out_with_one_warning(caplog):
    def batch(size: int, generated: bool) -> WarmupBatch:
        inputs = {"image_bytes": np.full(size, b"", dtype=object)}
        return WarmupBatch("serving_default", size, inputs, generated, "generated inputs" if generated else "f record 0")

    async def run(b: WarmupBatch) -> None:
        if b.generated:
            raise Rejects("Graph execution error:\n\nDetected at node DecodeJpeg defined at (most recent call "
                          "last):\n<stack traces unavailable>\nInput is empty.\n\t [[{{node DecodeJpeg}}]]")

    with caplog.at_level(logging.WARNING):
        result = await replay([batch(1, True), batch(2, True)], run, "jpeg")
    assert (result.ran, [b.size for b in result.rejected], result.complete) == ([], [1, 2], False)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith("warm-up of model jpeg is incomplete: the model rejected generated inputs")
    assert "for signature 'serving_default' at batch sizes [1, 2]: Input is empty. [[{{node DecodeJpeg}}]]." \
        in warning
    result = await replay([batch(1, False)], run, "jpeg")
    assert result.complete and len(result.ran) == 1

    async def rejects_all(b: WarmupBatch) -> None:
        raise Rejects("InvalidArgumentError: Unknown image file format")

    with pytest.raises(WarmupFailed, match=r"warm-up of jpeg failed on f record 0 \(signature 'serving_default', "
                                           r"batch size 4\): InvalidArgumentError: Unknown image file format"):
        await replay([batch(4, False)], rejects_all, "jpeg")
    numbers = WarmupBatch("serving_default", 2, {"x": np.zeros((2, 4), np.float32)}, True, "generated inputs")
    with pytest.raises(WarmupFailed, match=r"warm-up of tabular failed on generated inputs .*Unknown image"):
        await replay([numbers], rejects_all, "tabular")  # zeros a working numeric model takes: its failure counts

    async def dies(b: WarmupBatch) -> None:
        raise WorkerCrashed("worker died")

    with pytest.raises(WorkerCrashed):  # a dead worker is no verdict on the inputs
        await replay([batch(1, True)], dies, "jpeg")


def test_model_message_keeps_the_models_words():
    trace = ("Graph execution error:\n\nDetected at node x defined at (most recent call last):\n  File \"m.py\", "
             "line 3, in serve\nboom\n\t [[{{node x}}]] [Op:__inference_serve_9]")
    assert model_message(RuntimeError(trace)) == "boom [[{{node x}}]] [Op:__inference_serve_9]"
    assert model_message(RuntimeError("InvalidArgumentError: " + trace)).startswith("InvalidArgumentError: boom")
    assert model_message(ValueError()) == "ValueError"
