"""Load one instance of a model version on one device: synthetic, TF-TRT when asked for and usable, else TensorFlow."""

from __future__ import annotations

import logging
from pathlib import Path

from server.runtime.backend import DEFAULT_SIGNATURE, Model, ModelLoadError
from server.runtime.spec import ModelSpec, TensorRTSpec

log = logging.getLogger(__name__)


def load_model(spec: ModelSpec, device: str) -> Model:
    if spec.synthetic is not None:
        from server.runtime.synthetic import SyntheticModel

        return SyntheticModel(spec.synthetic, device, spec.signature_name, spec.signatures)
    from server.runtime.tensorflow_model import TensorFlowModel
    from server.runtime.tensorrt import read_manifest

    path, signature = spec.path, spec.signature_name
    if spec.tensorrt is not None:  # TF-TRT converts one signature: the default, then the only one served
        signature = signature or DEFAULT_SIGNATURE
        if set(spec.signatures) - {signature}:
            raise ModelLoadError(f"optimization: tensorrt serves one signature ({signature!r}); signatures "
                                 f"{list(spec.signatures)} cannot all be served from the converted model")
        path = _converted_path(spec.path, spec.tensorrt, signature)
    manifest = read_manifest(path)  # a model TF-TRT converted (here, or by `batchserve convert`) names its sizes
    sizes = tuple(manifest["batch_sizes"]) if manifest else None
    return TensorFlowModel(path, signature, device, batch_sizes=sizes, signature_names=spec.signatures)


def _converted_path(path: Path, options: TensorRTSpec, signature_name: str) -> Path:
    """The TF-TRT version of ``path`` (converted once into a cache beside the repository), or ``path``
    itself, served unconverted, when TensorRT cannot be used here."""
    from server.runtime.tensorrt import cache_key, convert_tensorrt, read_manifest, tensorrt_status

    status = tensorrt_status()
    if not status.available:
        log.warning("model %s asks for TensorRT but %s; serving the unconverted SavedModel (backend=tensorflow)",
                    path, status.reason)
        return path
    key = cache_key(path, status, options.precision, options.batch_sizes)
    target = path.parent.parent / ".trt_cache" / f"{path.parent.name}-{path.name}-{key}"
    if read_manifest(target) is None:
        log.info("converting %s with TF-TRT (%s, batch sizes %s) into %s", path, options.precision,
                 options.batch_sizes, target)
        convert_tensorrt(path, target, options.precision, list(options.batch_sizes), signature_name=signature_name)
    return target
