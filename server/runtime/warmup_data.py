"""What a version runs at warm-up, and how a failure there is judged.

For each served signature, in order of preference:

1. the requests of TF Serving's warm-up records (``assets.extra/tf_serving_warmup_requests``) that name it;
2. the examples model.yaml's ``warmup_examples`` names for it (``.npz``: arrays by input name, for the default
   signature; ``.json``: a TF Serving predict body, ``instances`` or ``inputs`` with an optional
   ``signature_name``, or a list of such bodies);
3. generated inputs (zeros, empty strings, every dynamic dimension 1), only when neither has any.

Every request is replayed at every warm-up batch size: its rows are repeated in order to fill the size (row i of
the batch is row i mod n of the request; a request with more rows than the size gives its first rows), as a
batch of copies of one request would arrive. A failure on real data (records or examples) fails the load with
the model's message; generated inputs are a guess, so a batch of them that the model rejects (a JPEG decoder
given an empty string) is left out with a warning, and the version serves with its warm-up incomplete.
"""

from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from server.codecs import CodecError, dumps
from server.codecs.tfserving import decode_predict
from server.core.vocabulary import InvalidInput, Signature, example_inputs, validate_inputs
from server.runtime.backend import WorkerCrashed
from server.runtime.spec import WarmupSource
from server.runtime.warmup_records import WarmupDataError, WarmupRequest, read_warmup_records
from server.runtime.worker_messages import WarmupRecord

log = logging.getLogger(__name__)

EXAMPLE_SUFFIXES = (".npz", ".json")


@dataclass(frozen=True)
class WarmupBatch:
    """One warm-up batch: ``size`` rows of ``inputs`` for the signature named ``signature``."""

    signature: str
    size: int
    inputs: dict[str, np.ndarray] = field(repr=False)
    generated: bool
    origin: str = "generated inputs"


@dataclass(frozen=True)
class WarmupResult:
    """The batches that ran, and the generated ones the model rejected (the warm-up is then incomplete)."""

    ran: list[WarmupBatch]
    rejected: list[WarmupBatch]

    @property
    def complete(self) -> bool:
        return not self.rejected

    def record(self, slowest_s: float | None) -> WarmupRecord:
        """This warm-up as a worker keeps it for the next engine that adopts it (server/runtime/worker_home.py)."""
        return WarmupRecord(frozenset(map(warmup_key, self.ran)), frozenset(map(warmup_key, self.rejected)),
                            slowest_s)

    @classmethod
    def kept(cls, record: WarmupRecord | None, batches: Sequence[WarmupBatch]) -> WarmupResult | None:
        """The warm-up an adopted worker's ``record`` says it ran, when it tried each of ``batches`` (else None:
        warm it up)."""
        if record is None or not all(warmup_key(b) in record.ran or warmup_key(b) in record.rejected
                                     for b in batches):
            return None
        return cls([b for b in batches if warmup_key(b) in record.ran],
                   [b for b in batches if warmup_key(b) in record.rejected])


def warmup_key(batch: WarmupBatch) -> tuple[object, ...]:
    """A warm-up batch as a ``WarmupRecord`` names it."""
    return batch.signature, batch.size, batch.generated, batch.origin


class WarmupFailed(RuntimeError):
    """The model failed on real warm-up data: the version does not load."""


def read_examples(path: Path, default: str) -> list[WarmupRequest]:
    """The requests of a ``warmup_examples`` file; WarmupDataError says what is wrong with it."""
    if path.suffix not in EXAMPLE_SUFFIXES:
        raise WarmupDataError(f"warmup_examples {path}: must be a .npz or .json file")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as arrays:
                inputs = {name: _strings_as_bytes(arrays[name]) for name in arrays.files}
            if not inputs:
                raise WarmupDataError(f"warmup_examples {path} holds no arrays")
            return [WarmupRequest(default, inputs, str(path))]
        document = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise WarmupDataError(f"warmup_examples {path}: no such file (it is looked for in the version's folder, "
                              "then in the model's)") from None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        if "allow_pickle" in str(exc):
            raise WarmupDataError(f"warmup_examples {path} holds an object array, which only pickle can load: store "
                                  "strings as a bytes array (np.array([b'...']), or .astype(bytes))") from None
        raise WarmupDataError(f"warmup_examples {path} cannot be read: {exc}") from None
    bodies = document if isinstance(document, list) else [document]
    if not bodies or not all(isinstance(body, dict) for body in bodies):
        raise WarmupDataError(f"warmup_examples {path}: must hold a TF Serving predict body (an object with "
                              "'instances' or 'inputs') or a non-empty list of them")
    return [WarmupRequest(str(body.get("signature_name") or ""), {}, f"{path} body {index}", body)
            for index, body in enumerate(bodies)]


def _strings_as_bytes(arr: np.ndarray) -> np.ndarray:
    """numpy's fixed-width strings (how np.savez stores str and bytes arrays) as the object arrays of bytes
    the models take."""
    if arr.dtype.kind == "U":
        return np.vectorize(str.encode, otypes=[object])(arr) if arr.size else arr.astype(object)
    if arr.dtype.kind == "S":
        return arr.astype(object)
    return arr


def _inputs(request: WarmupRequest, signature: Signature) -> dict[str, np.ndarray]:
    """The request's inputs in the signature's types (a JSON body is read as the TF Serving REST API reads it)."""
    try:
        inputs = request.inputs
        if request.body is not None:
            inputs = decode_predict(dumps(request.body), lambda name: signature).inputs
        return validate_inputs(signature, inputs)
    except (CodecError, InvalidInput) as exc:
        raise WarmupDataError(f"{request.origin} does not fit signature {signature.name!r}: {exc}") from None


def fill_rows(inputs: Mapping[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """``size`` rows: the inputs' rows repeated in order (or the first ``size`` of them)."""
    rows = next(iter(inputs.values())).shape[0]
    if rows == size:
        return dict(inputs)
    index = np.arange(size) % rows
    return {name: arr[index] for name, arr in inputs.items()}


def warmup_batches(source: WarmupSource, signatures: Mapping[str, Signature], sizes: Sequence[int],
                   default: str = "serving_default") -> list[WarmupBatch]:
    """Every warm-up batch of a version serving ``signatures`` (``default`` answers a request naming none),
    real data first (see the module's docstring). Records for a signature not served are skipped with a
    warning; WarmupDataError for data that cannot be read or does not fit its signature."""
    real: dict[str, list[WarmupRequest]] = {}
    if source.records is not None:
        _add(real, read_warmup_records(source.records), signatures, default, f"records {source.records}")
    if source.examples is not None and set(signatures) - set(real):
        examples = read_examples(source.examples, default)
        _add(real, [e for e in examples if (e.signature or default) not in real], signatures, default,
             f"warmup_examples {source.examples}")
    batches: list[WarmupBatch] = []
    for name, signature in signatures.items():
        requests = real.get(name)
        if not requests:
            batches += [WarmupBatch(name, size, example_inputs(signature, size), True) for size in sizes]
        for request in requests or ():
            inputs = _inputs(request, signature)
            batches += [WarmupBatch(name, size, fill_rows(inputs, size), False, request.origin) for size in sizes]
    return batches


def _add(real: dict[str, list[WarmupRequest]], requests: list[WarmupRequest], signatures: Mapping[str, Signature],
         default: str, where: str) -> None:
    """Sort ``requests`` by the signature they name into ``real``; those naming one not served are skipped."""
    skipped: set[str] = set()
    for request in requests:
        name = request.signature or default
        if name in signatures:
            real.setdefault(name, []).append(request)
        elif name not in skipped:
            skipped.add(name)
            log.warning("warm-up %s: requests for signature %r, which is not served (served: %s), are skipped",
                        where, name, sorted(signatures))


async def replay(batches: Sequence[WarmupBatch], run: Callable[[WarmupBatch], Awaitable[Any]],
                 model: str) -> WarmupResult:
    """Run each batch with ``run``. Generated batches with string inputs the model rejects (empty strings are
    no JPEG, no token) are left out, with one warning a signature; any other batch's failure (real data, or
    generated numbers, which a working model takes) raises WarmupFailed with the model's message; a worker
    that dies fails the warm-up."""
    ran: list[WarmupBatch] = []
    rejected: dict[str, list[WarmupBatch]] = {}
    first_error: dict[str, str] = {}
    for batch in batches:
        try:
            await run(batch)
        except WorkerCrashed:
            raise
        except Exception as exc:
            message = model_message(exc)
            if not batch.generated or not any(arr.dtype == object for arr in batch.inputs.values()):
                raise WarmupFailed(f"warm-up of {model or 'a model'} failed on {batch.origin} (signature "
                                   f"{batch.signature!r}, batch size {batch.size}): {message}") from exc
            rejected.setdefault(batch.signature, []).append(batch)
            first_error.setdefault(batch.signature, message)
            continue
        ran.append(batch)
    for signature, failed in rejected.items():
        log.warning("warm-up of model %s is incomplete: the model rejected generated inputs (zeros, empty strings, "
                    "dynamic dimensions 1) for signature %r at batch sizes %s: %s. It serves, and its first "
                    "requests pay what warm-up did not run; give it real inputs "
                    "(assets.extra/tf_serving_warmup_requests, or warmup_examples in model.yaml: docs/warmup.md)",
                    model or "?", signature, [b.size for b in failed], first_error[signature])
    return WarmupResult(ran, [b for failed in rejected.values() for b in failed])


def model_message(exc: BaseException) -> str:
    """The model's own words on one line: TensorFlow's error text without the trace of where the graph was
    built ("Graph execution error: Detected at node ... defined at (most recent call last): ..."), which a
    process worker's error carries too, prefixed with its type."""
    kept = []
    for line in str(exc).splitlines():
        line = line.replace("Graph execution error:", "").rstrip()
        if not line.strip() or line.startswith(_TRACE) or (line[:1].isspace() and "[[" not in line):
            continue
        kept.append(line.strip())
    return " ".join(kept) or type(exc).__name__


_TRACE = ("Detected at node", "<stack traces unavailable>")
