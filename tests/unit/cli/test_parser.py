"""The command line is generated from the settings: one flag, one help text and one default for a
setting in every command that takes it; phase flags reach the right phase."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from snugtune.cli.commands import DEMO_FINETUNE_EPOCHS, demo_config, run_config
from snugtune.cli.flags import field_help
from snugtune.cli.parser import build_parser
from snugtune.config import PhaseConfig, TrainConfig
from snugtune.errors import ConfigError


def _commands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.option_strings}


def test_a_setting_is_the_same_flag_with_the_same_help_in_every_command() -> None:
    seen: dict[str, tuple[Any, ...]] = {}
    shared = 0
    for name, parser in _commands().items():
        for dest, action in _options(parser).items():
            key = (tuple(action.option_strings), action.help, action.default, action.choices)
            if dest in seen:
                shared += 1
                assert seen[dest] == key, f"{name}: {dest} differs: {key} vs {seen[dest]}"
            seen[dest] = key
    assert shared > 50  # batch_size, device, gpu_memory, resolution... across the commands
    for dest in ("batch_size", "device", "gpu_memory", "precision", "trainable"):
        assert all(a.default is None for a in (_options(p).get(dest) for p in _commands().values()) if a)


def test_help_texts_are_the_field_docstrings() -> None:
    train = _options(_commands()["train"])
    assert train["batch_size"].help.startswith(field_help(TrainConfig)["batch_size"])
    assert "(default: 32)" in train["batch_size"].help
    assert train["patience"].help.startswith(field_help(PhaseConfig)["patience"])
    assert train["resolution"].option_strings == ["--resolution", "--res"]
    memory = _options(_commands()["memory"])
    assert memory["resolution"].option_strings == ["--resolution", "--res"]


def test_phase_flags_set_every_phase_or_one(tmp_path: Any) -> None:
    args = build_parser().parse_args(
        ["train", str(tmp_path), "--lr", "0.01", "--finetune-trainable", "top:4",
         "--head-epochs", "2", "--augment", "rotation_range=30", "--res", "64"])
    cfg = run_config(args, args.data)
    head, finetune = cfg.phases
    assert (head.lr, finetune.lr) == (0.01, 0.01)
    assert (head.epochs, finetune.epochs) == (2, None)  # None: scaled to the data
    assert (head.trainable, finetune.trainable) == ("head", "top:4")
    assert cfg.augment.rotation_range == 30 and cfg.resolution == 64


def test_flag_problems_are_reported_all_at_once(tmp_path: Any) -> None:
    args = build_parser().parse_args(
        ["train", str(tmp_path), "--val-split", "2", "--finetune-trainable", "top:x"])
    with pytest.raises(ConfigError) as e:
        run_config(args, args.data)
    assert any(p.startswith("--val-split") for p in e.value.problems)
    assert any(p.startswith("phases.finetune.trainable") for p in e.value.problems)


def test_the_labels_flags_reach_train_plan_and_doctor(tmp_path: Any) -> None:
    for command in ("train", "plan", "doctor"):
        args = build_parser().parse_args(
            [command, str(tmp_path), "--labels", "train.csv", "--path-column", "id",
             "--label-column", "breed"])
        assert (args.labels, args.path_column, args.label_column) == ("train.csv", "id", "breed")
    cfg = run_config(build_parser().parse_args(["train", str(tmp_path), "--labels", "l.tsv"]),
                     str(tmp_path))
    assert (cfg.labels, cfg.path_column, cfg.label_column) == ("l.tsv", "file_name", "label")
    help_text = _options(_commands()["train"])["labels"].help
    assert help_text.startswith(field_help(TrainConfig)["labels"]) and "metadata.csv" in help_text


def test_the_demo_fine_tunes_six_epochs_unless_told_otherwise(tmp_path: Any) -> None:
    def demo(*flags: str) -> TrainConfig:
        return demo_config(build_parser().parse_args(["demo", *flags]), str(tmp_path))

    cfg = demo()
    assert (cfg.out, cfg.time_budget) == ("runs/demo", None)
    assert [p.epochs for p in cfg.phases] == [None, DEMO_FINETUNE_EPOCHS]
    assert [p.epochs for p in demo("--finetune-epochs", "2").phases] == [None, 2]
    assert [p.epochs for p in demo("--epochs", "3").phases] == [3, 3]
    timed = demo("--time-budget", "90s", "--out", str(tmp_path / "r"))
    assert (timed.time_budget, timed.out) == (90.0, str(tmp_path / "r"))
    assert [p.epochs for p in timed.phases] == [None, None]  # fitted to the budget
    assert [p.epochs for p in run_config(build_parser().parse_args(["train", str(tmp_path)]),
                                         str(tmp_path)).phases] == [None, None]
