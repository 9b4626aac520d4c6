"""``snugtune export RUN --format onnx|torchscript|safetensors [--out FILE] [--json]``."""

from __future__ import annotations

import argparse
import json

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="write a trained run as ONNX, TorchScript or safetensors, checked",
        description="Export RUN's model plus a model card FILE.json beside it. The exported "
                    "file is loaded back and compared with PyTorch on the run's validation "
                    "images (max |logit difference| <= 1e-4) before it is written.")
    p.add_argument("run", help="a finished run folder")
    p.add_argument("--format", "-f", required=True, choices=["onnx", "torchscript", "safetensors"])
    p.add_argument("--out", "-o", metavar="FILE",
                   help="file to write (default RUN/export/model.onnx, model.torchscript.pt "
                        "or model.safetensors)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from snugtune.export import TOLERANCE, export_run

    result = export_run(a.run, a.format, a.out)
    if a.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    print(f"{result.path} ({result.format})")
    print(f"model card: {result.card_path}")
    print(f"checked on {result.checked_on} {result.inputs_source} images: max |logit difference| "
          f"{result.max_abs_diff:.2g} (tolerance {TOLERANCE:g})")
    return 0
