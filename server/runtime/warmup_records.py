"""TF Serving's warm-up records, read without TensorFlow: ``assets.extra/tf_serving_warmup_requests`` in a
version's folder is a TFRecord file of ``tensorflow.serving.PredictionLog`` messages.

The TFRecord framing is read here: each record is a little-endian uint64 length, the masked CRC-32C of those
8 bytes, the data, and the masked CRC-32C of the data. Both checksums are verified (as TensorFlow's reader
does), so a truncated or damaged file fails the load with the offset of the damage, never replays garbage.
The messages are decoded with the embedded descriptors (server/grpc/protos) and their tensors with the gRPC
codec's ``tf_tensor``. Only ``predict_log`` records are replayed: batchserve serves predict signatures, so a
classify, regress, multi-inference or session-run record is skipped with a warning.
"""

from __future__ import annotations

import functools
import logging
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf.message import DecodeError

from server.codecs import CodecError
from server.grpc import protos
from server.grpc.tensors import tf_tensor

log = logging.getLogger(__name__)

RECORDS_PATH = Path("assets.extra") / "tf_serving_warmup_requests"
"""Where TF Serving looks for warm-up records, relative to the version's folder."""
MAX_RECORDS = 1000
"""TF Serving refuses a warm-up file with more records than this; so does batchserve."""
_CASTAGNOLI = 0x82F63B78  # CRC-32C's polynomial, reflected
_MASK_DELTA = 0xA282EAD8
_SCALAR_BELOW = 4096  # shorter data is checksummed byte by byte


class WarmupDataError(ValueError):
    """Warm-up data (records or examples) is unreadable or does not fit the model; the message says where."""


@dataclass(frozen=True)
class WarmupRequest:
    """One request to replay at warm-up: the signature it names ("" is the default) and its inputs, or a JSON
    predict body that is read with that signature's input types once it is known."""

    signature: str
    inputs: dict[str, np.ndarray]
    origin: str  # where it came from, for messages: "FILE record N"
    body: dict[str, Any] | None = None


@functools.cache
def _table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ _CASTAGNOLI, table >> 1).astype(np.uint32)
    return table


@functools.cache
def _entries() -> list[int]:
    return [int(v) for v in _table()]


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of ``data``, with numpy: the data is cut into about sqrt(n) chunks that advance
    together one byte a step, then the chunks' CRCs are combined with the operator of "one chunk of zero bytes",
    which the same loop computes from the 32 unit states. (CRC is linear: the initial all-ones state equals
    xoring the first 4 data bytes with 0xFF, and leading zero bytes leave a zero state at zero.)"""
    table = _table()
    if len(data) < _SCALAR_BELOW:
        entries = _entries()
        crc = 0xFFFFFFFF
        for byte in data:
            crc = entries[(crc ^ byte) & 0xFF] ^ (crc >> 8)
        return crc ^ 0xFFFFFFFF
    size = len(data)
    width = math.isqrt(size) + 1
    rows = -(-size // width)
    grid = np.zeros((rows + 32, width), dtype=np.uint8)
    flat = grid[:rows].reshape(-1)
    flat[flat.size - size:] = np.frombuffer(data, dtype=np.uint8)
    flat[flat.size - size:flat.size - size + 4] ^= 0xFF
    state = np.zeros(rows + 32, dtype=np.uint32)
    state[rows:] = np.uint32(1) << np.arange(32, dtype=np.uint32)  # the unit states, over zero bytes
    for column in grid.T:
        state = table[(state ^ column) & 0xFF] ^ (state >> 8)
    columns = [int(c) for c in state[rows:]]
    by_byte = [[0] * 256 for _ in range(4)]  # the zero-chunk operator, looked up a byte of the state at a time
    for part in range(4):
        for value in range(1, 256):
            low = value & -value
            by_byte[part][value] = by_byte[part][value ^ low] ^ columns[8 * part + low.bit_length() - 1]
    crc = 0
    for chunk in state[:rows].tolist():
        crc = (by_byte[0][crc & 0xFF] ^ by_byte[1][(crc >> 8) & 0xFF] ^ by_byte[2][(crc >> 16) & 0xFF]
               ^ by_byte[3][crc >> 24] ^ chunk)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The checksum TFRecord stores: the CRC rotated right by 15 bits plus a constant."""
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def read_tfrecords(path: Path, limit: int = MAX_RECORDS) -> list[bytes]:
    """The records of an uncompressed TFRecord file, checksums verified; WarmupDataError names the damage."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise WarmupDataError(f"cannot read warm-up records {path}: {exc.strerror or exc}") from None
    if data[:2] == b"\x1f\x8b":
        raise WarmupDataError(f"warm-up records {path} are GZIP-compressed: TF Serving reads (and batchserve "
                              "reads) an uncompressed TFRecord file")
    records: list[bytes] = []
    offset = 0
    while offset < len(data):
        header = data[offset:offset + 12]
        if len(header) < 12:
            raise WarmupDataError(f"warm-up records {path}: truncated record header at byte {offset}")
        length, length_crc = struct.unpack("<QI", header)
        if masked_crc32c(header[:8]) != length_crc:
            raise WarmupDataError(f"warm-up records {path}: corrupt record length at byte {offset} (checksum "
                                  "mismatch): not a TFRecord file, or damaged")
        end = offset + 12 + length
        if end + 4 > len(data):
            raise WarmupDataError(f"warm-up records {path}: record {len(records)} at byte {offset} is truncated "
                                  f"({length} bytes and a checksum announced, {len(data) - offset - 12} present)")
        body = data[offset + 12:end]
        if masked_crc32c(body) != struct.unpack("<I", data[end:end + 4])[0]:
            raise WarmupDataError(f"warm-up records {path}: record {len(records)} at byte {offset} is corrupt "
                                  "(data checksum mismatch)")
        records.append(body)
        if len(records) > limit:
            raise WarmupDataError(f"warm-up records {path}: more than {limit} records (TF Serving's limit too)")
        offset = end + 4
    return records


def read_warmup_records(path: Path) -> list[WarmupRequest]:
    """The predict requests of a warm-up records file, in file order; other kinds of log are skipped with a
    warning. WarmupDataError for a damaged file, a record that is not a PredictionLog, or a tensor that
    cannot be read."""
    message = protos.message("tensorflow.serving.PredictionLog")
    requests: list[WarmupRequest] = []
    for index, record in enumerate(read_tfrecords(path)):
        origin = f"{path} record {index}"
        try:
            entry = message.FromString(record)
        except DecodeError as exc:
            raise WarmupDataError(f"{origin} is not a tensorflow.serving.PredictionLog: {exc}") from None
        kind = entry.WhichOneof("log_type")
        if kind != "predict_log":
            log.warning("%s is a %s: only predict_log records are replayed at warm-up (batchserve serves predict "
                        "signatures); skipped", origin, kind or "PredictionLog without a request")
            continue
        request = entry.predict_log.request
        try:
            inputs = {name: tf_tensor(name, tensor) for name, tensor in request.inputs.items()}
        except CodecError as exc:
            raise WarmupDataError(f"{origin}: {exc}") from None
        if not inputs:
            raise WarmupDataError(f"{origin}: the PredictRequest has no inputs")
        requests.append(WarmupRequest(request.model_spec.signature_name, inputs, origin))
    return requests
