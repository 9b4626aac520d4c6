"""``snugtune predict RUN|MODEL.onnx FILES... [--top-k K] [--json] [--gpu-memory SIZE]``."""

from __future__ import annotations

import argparse
import json

from snugtune.cli._args import add_inference_args, budget_bytes

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify image files with a trained run or an exported "
                                       "ONNX model")
    p.add_argument("run", help="a finished run folder, or an exported .onnx file (run by "
                               "onnxruntime; its card FILE.onnx.json must be beside it)")
    p.add_argument("files", nargs="+", help="image files, or folders of them (searched recursively)")
    p.add_argument("--top-k", type=int, default=1)
    add_inference_args(p)
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from snugtune.train import predict

    preds = predict(a.run, a.files, top_k=a.top_k, device=a.device, batch_size=a.batch_size,
                    gpu_memory=budget_bytes(a.gpu_memory))
    if a.json:
        print(json.dumps([p.to_dict() for p in preds], indent=2))
        return 0
    for p in preds:
        tops = ", ".join(f"{lab} {prob:.3f}" for lab, prob in zip(p.labels, p.probabilities, strict=True))
        print(f"{p.path}: {tops}")
    return 0
