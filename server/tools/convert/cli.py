"""The ``batchserve convert`` subcommands."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def _tensorrt(args: argparse.Namespace) -> int:
    from server.runtime import TensorRTUnavailable, convert_tensorrt

    try:
        manifest = convert_tensorrt(args.source, args.target, args.precision,
                                    [int(s) for s in _names(args.batch_sizes)], args.calibration_data,
                                    args.signature_name)
    except TensorRTUnavailable as exc:
        print(f"batchserve convert tensorrt: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.target}: {manifest['precision']}, engines for batch sizes {manifest['batch_sizes']}")
    return 0


def _savedmodel(args: argparse.Namespace) -> int:
    from server.tools.convert import savedmodel

    if args.from_graphdef or args.from_meta:
        if not (args.inputs and args.outputs):
            print("batchserve convert savedmodel: --inputs and --outputs name the graph's tensors, e.g. x:0",
                  file=sys.stderr)
            return 2
        convert = savedmodel.from_graphdef if args.from_graphdef else savedmodel.from_meta_checkpoint
        target = convert(args.from_graphdef or args.from_meta, _names(args.inputs), _names(args.outputs), args.target)
    else:
        if not args.model_fn:
            print("batchserve convert savedmodel: --from-checkpoint needs --model-fn module:function",
                  file=sys.stderr)
            return 2
        target = savedmodel.from_checkpoint(args.from_checkpoint, args.model_fn, args.target, args.checkpoint_key)
    print(f"wrote SavedModel {target} (signature serving_default, dynamic batch dimension)")
    return 0


def add_convert_commands(commands: Any) -> None:
    convert = commands.add_parser("convert", help="convert models: TF-TRT, or other TensorFlow formats")
    kinds = convert.add_subparsers(dest="kind", required=True)

    trt = kinds.add_parser("tensorrt", help="optimise a SavedModel with TF-TRT, engines pre-built per batch size")
    trt.add_argument("source")
    trt.add_argument("target")
    trt.add_argument("--precision", default="FP16", choices=["FP32", "FP16", "INT8"])
    trt.add_argument("--batch-sizes", default="1,2,4,8,16,32", help="the sizes the batcher will send")
    trt.add_argument("--calibration-data", help="INT8: .npz with one array per input name")
    trt.add_argument("--signature-name", default="serving_default")
    trt.set_defaults(run=_tensorrt)

    saved = kinds.add_parser("savedmodel", help="a frozen GraphDef or a checkpoint to a serving SavedModel")
    source = saved.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-graphdef", metavar="FROZEN.pb")
    source.add_argument("--from-meta", metavar="MODEL.ckpt.meta", help="a TF1 checkpoint's .meta file")
    source.add_argument("--from-checkpoint", metavar="PREFIX", help="a TF2 checkpoint (tf.train.Checkpoint)")
    saved.add_argument("--inputs", help="graph inputs, e.g. x:0,mask:0 (GraphDef and .meta)")
    saved.add_argument("--outputs", help="graph outputs, e.g. probs:0 (GraphDef and .meta)")
    saved.add_argument("--model-fn", help="module:function returning the Keras model (TF2 checkpoint)")
    saved.add_argument("--checkpoint-key", default="model", help="the name the model has in the checkpoint")
    saved.add_argument("target")
    saved.set_defaults(run=_savedmodel)
    logging.getLogger("server").setLevel(logging.INFO)
