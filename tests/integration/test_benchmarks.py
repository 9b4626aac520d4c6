"""The GPU truth kit runs where no GPU is: ``--dry-run`` simulates its whole matrix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_truth_dry_run_predicts_the_matrix(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "CUDA_VISIBLE_DEVICES": ""}
    p = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_truth.py"), "--dry-run", "--models",
         "mobilenet_v2", "--out", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=300, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_truth_dry_run.json").read_text())
    assert report["dry_run"] and report["models"] == ["mobilenet_v2"]
    rows = {(r["precision"], r["trainable"], r["batch"], r["checkpointing"]): r
            for r in report["matrix"]}
    assert len(rows) == 14  # fp32 and bf16 x (head, top:2, all) x (16, 64), + checkpointed all
    context = report["gpu"]["context_bytes"]
    for (precision, trainable, batch, ckpt), r in rows.items():
        assert r["predicted_context_bytes"] >= context
        assert r["predicted_bytes"] > r["predicted_tensor_bytes"] > 0
        if batch == 16:
            assert rows[(precision, trainable, 64, ckpt)]["predicted_bytes"] > r["predicted_bytes"]
    full = rows[("fp32", "all", 64, False)]["predicted_bytes"]
    assert rows[("fp32", "all", 64, True)]["predicted_bytes"] < full  # checkpointing saves
    assert rows[("bf16", "all", 64, False)]["predicted_bytes"] < full  # so does autocast
    assert rows[("fp32", "head", 64, False)]["predicted_bytes"] < full
