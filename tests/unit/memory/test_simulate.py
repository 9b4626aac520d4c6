"""simulate(): fake-tensor steps agree with the same steps on real CPU tensors."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from snugtune.memory.guard import VirtualDeviceBudget
from snugtune.memory.modules import configured
from snugtune.memory.simulator import StepConfig, run_steps, simulate
from snugtune.memory.trace import Category, at_batch
from snugtune.memory.tracker import MemoryTracker


def tiny_cnn(classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU()),
        nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU()),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.1), nn.Linear(16, classes),
    )


def real_trace(model: nn.Module, cfg: StepConfig):
    tr = MemoryTracker()
    with configured(model, cfg.trainable, cfg.checkpointing), tr:
        tr.track_existing(list(model.parameters()) + list(model.buffers()), Category.PARAMETERS)
        run_steps(model, cfg, tracker=tr, classes=5)
    return tr.trace()


CASES = [
    {},
    {"trainable": "head"},
    {"trainable": "top:1", "optimizer": "sgd"},
    {"precision": "bf16"},
    {"checkpointing": (1, 2)},
    {"channels_last": True, "optimizer": "adam"},
    {"accumulation": 2},
]


@pytest.mark.parametrize("kw", CASES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "default")
def test_fake_matches_real_tensors(kw):
    cfg = StepConfig(batch=4, res=24, device="cpu", **kw)
    model = tiny_cnn()
    fake = simulate(model, cfg, classes=5)
    real = real_trace(model, cfg)
    for span in (("train", "eval"), ("eval", None)):
        pf, pr = fake.peak(*span).bytes, real.peak(*span).bytes
        assert abs(pf - pr) <= 0.01 * pr, (span, pf, pr)


def test_parameters_are_put_back_untouched():
    model = tiny_cnn()
    model[0].requires_grad_(False)
    before = {n: (p, p.requires_grad, p.clone()) for n, p in model.named_parameters()}
    simulate(model, StepConfig(batch=2, res=16, device="cpu", trainable="all"), classes=5)
    for n, p in model.named_parameters():
        obj, flag, value = before[n]
        assert p is obj and p.requires_grad == flag and torch.equal(p, value)
    assert model.training


def test_meta_model_simulates_without_allocating():
    with torch.device("meta"):
        model = tiny_cnn()
    trace = simulate(model, StepConfig(batch=2, res=16, device="cuda"), classes=5)
    assert trace.peak().bytes > 0
    assert all(p.is_meta for p in model.parameters())


class DataDependent(nn.Module):
    """Uses .item() and unique() in forward, like timm's convnext/regnet bookkeeping."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = float(x.abs().amax().item()) or 1.0
        n_unique = int(torch.unique(torch.tensor([1, 2, 2])).numel())
        y = self.conv(x / scale).mean((2, 3)) * n_unique
        return self.fc(y)


def test_data_dependent_ops_are_simulated():
    """``.item()`` and ``unique()`` in forward run on fakes (on ones), and the simulated peak
    is the real step's."""
    cfg = StepConfig(batch=2, res=8, device="cpu")
    torch.manual_seed(0)
    fake = simulate(DataDependent(), cfg, classes=3).peak().bytes
    torch.manual_seed(0)
    real = real_trace(DataDependent(), cfg).peak().bytes
    assert abs(fake - real) <= 0.01 * real, (fake, real)


def test_batch_derivation_is_exact():
    model = tiny_cnn()
    cfg = StepConfig(batch=2, res=16, device="cpu", precision="bf16")
    t2, t3 = simulate(model, cfg, classes=5), simulate(model, replace(cfg, batch=3), classes=5)
    derived = at_batch(t2, t3, 2, 9)
    direct = simulate(model, replace(cfg, batch=9), classes=5)
    assert derived is not None
    assert derived.events == direct.events and derived.convs == direct.convs


def test_cuda_semantics_keep_layer_norm_in_fp32():
    class LN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.ln, self.out = nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.ln(self.fc(x.mean((2, 3), keepdim=False).repeat(1, 3)[:, :8])))

    model = LN()
    cuda = simulate(model, StepConfig(batch=64, res=4, precision="bf16", device="cuda"), classes=2)
    cpu = simulate(model, StepConfig(batch=64, res=4, precision="bf16", device="cpu"), classes=2)
    # CUDA autocast runs layer_norm in fp32 (bigger saved activations) where CPU keeps bf16
    assert cuda.peak("train", "eval").bytes > cpu.peak("train", "eval").bytes


class Attention(nn.Module):
    """SDPA with an additive bias, as timm's relative-position ViTs call it."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(3, 3 * 16)
        self.bias = nn.Parameter(torch.zeros(1, 2, 64, 64))
        self.out = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        t = x.flatten(2).transpose(1, 2)[:, :64]  # (B, 64, 3) tokens
        q, k, v = self.qkv(t).reshape(b, 64, 3, 2, 8).permute(2, 0, 3, 1, 4)
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=self.bias)
        return self.out(y.transpose(1, 2).reshape(b, 64, 16).mean(1))


def test_cuda_semantics_use_the_fused_attention_kernel():
    model = Attention()
    cfg = StepConfig(batch=16, res=8, eval_step=False)
    cpu = simulate(model, replace(cfg, device="cpu"), classes=2)
    cuda = simulate(model, replace(cfg, device="cuda"), classes=2)
    n2 = 16 * 2 * 64 * 64 * 4  # one (B, heads, N, N) fp32 attention matrix
    # the CPU math kernel keeps the attention matrix for backward; CUDA's fused kernel does not
    assert cpu.peak("train", "eval").bytes - cuda.peak("train", "eval").bytes >= n2


def test_the_simulated_step_is_the_trainers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The simulator runs ``snugtune.step``'s own step (accumulation, loss, optimizer) on fakes."""
    import snugtune.step.loop as loop
    import snugtune.step.optim as optim

    calls = {"accumulate": 0, "optimizers": []}
    accumulate, build = loop._accumulate, optim.build_optimizer

    def counting(*a, **k):  # type: ignore[no-untyped-def]
        calls["accumulate"] += 1
        return accumulate(*a, **k)

    def recording(*a, **k):  # type: ignore[no-untyped-def]
        opt = build(*a, **k)
        calls["optimizers"].append(opt)
        return opt

    monkeypatch.setattr(loop, "_accumulate", counting)
    monkeypatch.setattr("snugtune.memory.simulator.build_optimizer", recording)
    simulate(tiny_cnn(), StepConfig(batch=2, res=16, device="cuda", accumulation=2), classes=5)
    assert calls["accumulate"] == 2  # two optimizer steps, each over its micro-batches
    (opt,) = calls["optimizers"]
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["fused"] is True


def test_run_steps_returns_the_micro_batch_it_ended_at():
    cfg = StepConfig(batch=16, res=24, device="cpu", eval_step=False)
    with VirtualDeviceBudget(None) as free:
        assert run_steps(tiny_cnn(), cfg, classes=5) == 16
    with VirtualDeviceBudget(None) as small:
        assert run_steps(tiny_cnn(), replace(cfg, batch=2), classes=5) == 2
    # room for micro-batch 2 but not 16: the step halves and says where it ended
    budget = (small.peak_bytes + free.peak_bytes) // 2
    with VirtualDeviceBudget(budget):
        ended = run_steps(tiny_cnn(), cfg, classes=5)
    assert 2 <= ended < 16


def wide_head(classes: int = 5) -> nn.Module:
    """Weights far larger than a micro-batch's activations: the gradient sum is the peak."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 512), nn.ReLU(), nn.Linear(512, 256),
                         nn.ReLU(), nn.Linear(256, classes))


DATA_PARALLEL = StepConfig(batch=2, res=16, device="cpu", world_size=2, eval_step=False)

# Two gloo processes (a file store): each measures its real data-parallel step on real tensors
# with the tracker the simulation uses, and writes its training peak.
MEASURE = r'''
import json, sys, torch
import torch.distributed as dist
sys.path.insert(0, sys.argv[4])
from test_simulate import DATA_PARALLEL, real_trace, wide_head
import snugtune.memory.simulator as simulator
from snugtune.recipe.distributed import World

rank, store, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
sync = World(rank=rank, world_size=2).step_sync()
run_steps = simulator.run_steps
simulator.run_steps = lambda *a, **k: run_steps(*a, **k, sync=sync)
peak = real_trace(wide_head(), DATA_PARALLEL).peak("train", None).bytes
json.dump({"peak": peak}, open(out, "w"))
dist.destroy_process_group()
'''


def test_a_data_parallel_step_plans_its_gradient_buckets_and_measures_so(tmp_path: Path) -> None:
    """The per-rank plan of a data-parallel step holds the gradient sum's packed buckets (one
    bucket here: every gradient, 0.55 MB), and two real processes measure that peak."""
    model = wide_head()
    one = simulate(model, replace(DATA_PARALLEL, world_size=1), classes=5).peak("train", None).bytes
    two = simulate(model, DATA_PARALLEL, classes=5).peak("train", None).bytes
    grads = sum(p.numel() * p.element_size() for p in model.parameters())
    # at the sum: weights, gradients, AdamW's two states and the packed bucket (5 x weights),
    # against 4 x weights plus a micro-batch's activations in one process's backward
    assert two == pytest.approx(5 * grads, rel=0.01) and two - one >= 0.9 * grads

    (tmp_path / "test_simulate.py").write_text(Path(__file__).read_text())
    (tmp_path / "measure.py").write_text(MEASURE)
    procs = [subprocess.Popen([sys.executable, str(tmp_path / "measure.py"), str(r),
                               str(tmp_path / "store"), str(tmp_path / f"out{r}.json"),
                               str(tmp_path)]) for r in range(2)]
    assert all(p.wait(timeout=300) == 0 for p in procs)
    for r in range(2):
        measured = json.loads((tmp_path / f"out{r}.json").read_text())["peak"]
        assert abs(two - measured) <= 0.01 * measured, (r, two, measured)
