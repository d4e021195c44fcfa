"""``batchserve convert savedmodel``: frozen GraphDefs and checkpoints to a serving SavedModel.

Every result has a ``serving_default`` signature whose batch dimension is dynamic,
named after the graph's tensors (``x:0`` becomes input ``x``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _tensor_name(name: str) -> str:
    return name if ":" in name else f"{name}:0"


def _signature_key(name: str) -> str:
    return name.split(":")[0].replace("/", "_")


def _save_graph(graph_def: Any, inputs: list[str], outputs: list[str], target: Path) -> Path:
    """Wrap a frozen graph in a tf.function with a dynamic batch dimension and save it."""
    import tensorflow as tf

    inputs, outputs = [_tensor_name(n) for n in inputs], [_tensor_name(n) for n in outputs]

    def import_graph() -> None:
        tf.compat.v1.import_graph_def(graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(import_graph, [])
    graph = wrapped.graph
    try:
        placeholders = [graph.get_tensor_by_name(n) for n in inputs]
        fetches = [graph.get_tensor_by_name(n) for n in outputs]
    except KeyError as exc:
        raise ValueError(f"tensor not found in the graph: {exc}") from None
    pruned = wrapped.prune(placeholders, fetches)
    specs = []
    for tensor, name in zip(placeholders, inputs):
        shape = tensor.shape.as_list() if tensor.shape.rank is not None else None
        if shape:
            shape[0] = None
        specs.append(tf.TensorSpec(shape, tensor.dtype, name=_signature_key(name)))

    module = tf.Module()
    module.pruned = pruned

    def serve(*args: Any) -> dict[str, Any]:
        results = module.pruned(*args)
        return {_signature_key(n): r for n, r in zip(outputs, results)}

    function = tf.function(serve, input_signature=specs)
    tf.saved_model.save(module, str(target), signatures={"serving_default": function.get_concrete_function()})
    return target


def from_graphdef(frozen: Path | str, inputs: list[str], outputs: list[str], target: Path | str) -> Path:
    """A frozen GraphDef (.pb, variables folded into constants)."""
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(Path(frozen).read_bytes())
    except Exception as exc:
        raise ValueError(f"{frozen} is not a binary GraphDef: {exc}") from None
    return _save_graph(graph_def, inputs, outputs, Path(target))


def from_meta_checkpoint(meta: Path | str, inputs: list[str], outputs: list[str], target: Path | str) -> Path:
    """A TF1 checkpoint (``model.ckpt.meta`` plus its data files): restore, freeze, then as a GraphDef."""
    import tensorflow as tf

    meta = Path(meta)
    prefix = str(meta).removesuffix(".meta")
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        saver = tf.compat.v1.train.import_meta_graph(str(meta), clear_devices=True)
        saver.restore(session, prefix)
        frozen = tf.compat.v1.graph_util.convert_variables_to_constants(
            session, graph.as_graph_def(), [_tensor_name(n).split(":")[0] for n in outputs])
    return _save_graph(frozen, inputs, outputs, Path(target))


def export_keras(target: Path | str, model: Any, serve: Callable[..., Any], specs: list[Any]) -> Path:
    """Save ``model`` as a SavedModel whose ``serving_default`` signature is ``serve`` over ``specs``."""
    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name="serving_default", fn=serve, input_signature=specs)
    archive.write_out(str(target), verbose=False)
    return Path(target)


def load_builder(spec: str) -> Any:
    """``module:function`` that returns a Keras model (its architecture; weights come from the checkpoint)."""
    module_name, _, function_name = spec.partition(":")
    if not function_name:
        raise ValueError(f"--model-fn must look like package.module:function, got {spec!r}")
    return getattr(importlib.import_module(module_name), function_name)


def from_checkpoint(checkpoint: Path | str, model_fn: str, target: Path | str, key: str = "model") -> Path:
    """A TF2 checkpoint written as ``tf.train.Checkpoint(<key>=model)``, plus the function that builds the model."""
    import tensorflow as tf

    model = load_builder(model_fn)()
    status = tf.train.Checkpoint(**{key: model}).read(str(checkpoint))
    status.assert_existing_objects_matched()
    specs = [tf.TensorSpec([None, *t.shape[1:]], t.dtype, name=_signature_key(t.name)) for t in model.inputs]

    def serve(*args: Any) -> dict[str, Any]:
        result = model(list(args) if len(args) > 1 else args[0], training=False)
        if isinstance(result, dict):
            return result
        results = result if isinstance(result, list | tuple) else [result]
        names = list(getattr(model, "output_names", None) or [_signature_key(t.name) for t in model.outputs])
        return dict(zip(names, results))

    return export_keras(target, model, serve, specs)
