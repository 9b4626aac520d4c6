"""The Python API: the functions users call are at the top level and stay callable."""

import snugtune


def test_top_level_functions_survive_submodule_imports() -> None:
    import snugtune.planner.search  # noqa: F401
    import snugtune.recipe.cache  # noqa: F401
    import snugtune.recipe.finetune  # noqa: F401

    for name in ("train", "resume", "plan", "evaluate", "predict", "estimate_memory", "export_run"):
        assert callable(getattr(snugtune, name)), name
    assert set(snugtune.__all__) >= {"train", "plan", "TrainConfig", "SnugtuneError"}


def test_estimate_memory_returns_a_report() -> None:
    rep = snugtune.estimate_memory("timm:resnet18", batch=2, res=32, classes=10, device="cpu")
    assert isinstance(rep, snugtune.MemoryReport)
    assert rep.tensor_peak_bytes > 0 and rep.predicted_peak_bytes >= rep.tensor_peak_bytes
