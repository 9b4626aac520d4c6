"""Inference on a run's model with test-time augmentation: under a memory budget (the CPU's
virtual device) the views are evaluated in halved micro-batches and give the same result, and
the model is left in the mode it was in."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from snugtune.data import Sample, make_image_folder, scan_folder
from snugtune.infer import VIEWS, predict_samples, predict_views
from snugtune.memory.guard import VirtualDeviceBudget
from snugtune.models import Classifier, build_classifier

SIZE = 32


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> list[Sample]:
    root = tmp_path_factory.mktemp("infer_run") / "data"
    make_image_folder(root, classes=3, per_class=12, size=SIZE, seed=0)
    return list(scan_folder(root).samples)  # 36 images


@pytest.fixture(scope="module")
def model() -> Classifier:
    torch.manual_seed(0)
    # activations outweigh the weights at 32 px: the budget binds on the micro-batch
    return build_classifier("timm:test_efficientnet", 3, weights="none").eval()


def _pre(model: Classifier) -> dict[str, object]:
    return {**model.preprocessing.to_dict(), "size": SIZE}


def test_tta_under_a_budget_halves_micro_batches_and_gives_the_same_probabilities(
    model: Classifier, samples: list[Sample], caplog: pytest.LogCaptureFixture
) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the 2 shared cores
    try:
        free, labels = predict_views(model, samples, _pre(model), batch_size=64, workers=0)
        with VirtualDeviceBudget(None) as held:
            pass
        weights = sum(p.numel() * p.element_size() for p in model.state_dict().values())
        # the whole 36-image batch loads at once (two inputs per image, 885 KB); the forward
        # passes of 16 images (the CPU's first micro-batch) do not fit beside it
        budget = held.entry_bytes + weights + 1_500_000
        caplog.set_level(logging.INFO, logger="snugtune.infer.run")
        tight, tight_labels = predict_views(model, samples, _pre(model), batch_size=64, workers=0,
                                            gpu_memory=budget)
        assert "at most" in caplog.text and "at most 16" not in caplog.text
        assert tight.shape == (len(VIEWS), len(samples), 3)
        assert torch.equal(tight_labels, labels)
        assert torch.allclose(tight, free, atol=1e-5)
        tta, _ = predict_samples(model, samples, _pre(model), batch_size=64, workers=0,
                                 gpu_memory=budget, tta=True)
        assert torch.allclose(tta, free.mean(0), atol=1e-5)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("training", [False, True])
def test_tta_leaves_the_model_in_its_mode(model: Classifier, samples: list[Sample],
                                          training: bool) -> None:
    model.train(training)
    modes = [m.training for m in model.modules()]  # (the Classifier may keep some in eval)
    try:
        predict_views(model, samples[:3], _pre(model), workers=0)
        assert model.training is training
        assert [m.training for m in model.modules()] == modes
    finally:
        model.eval()


def test_tta_on_no_images(model: Classifier, tmp_path: Path) -> None:
    views, labels = predict_views(model, [], _pre(model), workers=0)
    assert views.shape == (len(VIEWS), 0, 3) and labels.shape == (0,)


def test_inference_on_cuda_counts_the_kernels_in_its_context_as_training_does(fake_card) -> None:
    """CUDA mocked: the cap of ``--gpu-memory`` on inference leaves room for the measured
    context and the convolution kernels a network loads, the context a training plan counts
    (``Plan.context_bytes``); a caller that knows the plan's context passes it."""
    from snugtune.infer.run import _guard
    from snugtune.memory import probe

    cuda = torch.device("cuda", 0)
    measured = probe(cuda).profile()
    guard = _guard(cuda, 4 << 30, None)
    assert guard.context_bytes == measured.context_bytes + measured.conv_kernels_bytes
    assert guard.context_bytes > measured.context_bytes
    assert _guard(cuda, 4 << 30, 123).context_bytes == 123
    assert _guard(cuda, None, None).context_bytes == 0  # no budget: nothing is capped


@pytest.mark.parametrize("entry", ["evaluate_run", "predict"])
def test_inference_keeps_freed_memory_on_its_device_before_loading_the_model(
    entry: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from snugtune.infer import run

    seen: list[str] = []

    class Loaded(Exception):
        """Far enough: the model would be loaded here."""

    def loaded(run_dir: object, device: torch.device) -> None:
        seen.append(f"load on {device.type}")
        raise Loaded

    monkeypatch.setattr(run, "keep_freed_memory", lambda d: seen.append(f"keep on {d.type}"))
    monkeypatch.setattr(run, "load_run", loaded)
    call = (lambda: run.evaluate_run(tmp_path, device="cpu")) if entry == "evaluate_run" else (
        lambda: run.predict(tmp_path, [tmp_path], device="cpu"))
    with pytest.raises(Loaded):
        call()
    assert seen == ["keep on cpu", "load on cpu"]
