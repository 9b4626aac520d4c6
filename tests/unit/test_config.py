"""Config: defaults < YAML < flags; every problem reported at once, each naming the flag or
YAML key, the bad value and the fix; nothing but ``ConfigError`` escapes, and nothing in a
config is ever evaluated as code."""

from __future__ import annotations

import ast
import math
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml

import snugtune
from snugtune.cli import main
from snugtune.config import (
    AugmentConfig,
    PhaseConfig,
    TrainConfig,
    build_config,
    config_to_dict,
    default_phases,
)
from snugtune.config.checks import flag_name
from snugtune.errors import ConfigError


def problems_of(yaml_path: Path | None = None, **overrides: Any) -> list[str]:
    """The problems ``build_config`` reports ([] when the config is valid)."""
    overrides.setdefault("data", "images")
    try:
        build_config(yaml_path, overrides)
    except ConfigError as e:
        return e.problems
    return []


@pytest.fixture
def write_yaml(tmp_path: Path) -> Any:
    def write(text: str, name: str = "cfg.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


# --- sources and precedence -------------------------------------------------------------------


def test_defaults_need_only_the_data_folder() -> None:
    cfg = build_config(overrides={"data": "images"})
    assert cfg == TrainConfig(data="images")
    assert [p.name for p in cfg.phases] == ["head", "finetune"]
    assert cfg.phases == default_phases()


def test_flags_override_yaml_and_augment_merges_key_by_key(write_yaml: Any) -> None:
    path = write_yaml(
        "data: from_yaml\nbatch_size: 16\nseed: 3\n"
        "augment: {rotation_range: 30, horizontal_flip: false}\n"
    )
    cfg = build_config(
        path, {"data": "from_flag", "batch_size": 64, "seed": None, "augment": {"zoom_range": 0.2}}
    )
    assert (cfg.data, cfg.batch_size, cfg.seed) == ("from_flag", 64, 3)  # None: flag not given
    assert cfg.augment.rotation_range == 30 and cfg.augment.horizontal_flip is False
    assert cfg.augment.zoom_range == 0.2


def test_gpu_memory_sizes_and_brightness_range_lists_are_normalised(write_yaml: Any) -> None:
    cfg = build_config(
        write_yaml("data: d\ngpu_memory: 4GiB\naugment:\n  brightness_range: [0.8, 1.2]\n")
    )
    assert cfg.gpu_memory == 4 * 2**30
    assert cfg.augment.brightness_range == (0.8, 1.2)


def test_yaml_exponents_without_a_dot_are_numbers(write_yaml: Any) -> None:
    """YAML 1.1 reads ``1e-3`` as a string; a float setting takes it as the number."""
    cfg = build_config(write_yaml("data: d\nphases: {head: {lr: 1e-3, weight_decay: 5E-5}}\n"))
    assert cfg.phases[0].lr == 1e-3 and cfg.phases[0].weight_decay == 5e-5
    (msg,) = problems_of(write_yaml("phases: {head: {lr: 1e-3x}}\n"))
    assert msg.startswith("phases.head.lr: '1e-3x' must be in (0, 10)")


def test_the_saved_config_rebuilds_the_same_config(tmp_path: Path) -> None:
    """What ``--resume`` relies on: config.yaml -> build_config gives the identical config."""
    cfg = build_config(
        overrides={
            "data": "images",
            "out": "runs/x",
            "labels": "train.csv",
            "path_column": "id",
            "resolution": 64,
            "gpu_memory": "3GiB",
            "deterministic": True,
            "workers": 0,
            "head_hidden": 128,
            "augment": {"brightness_range": [0.9, 1.1], "mixup_alpha": 0.2, "fill_mode": "reflect"},
            "phase_overrides": {
                "*": {"epochs": 2},
                "finetune": {"trainable": "all", "patience": None},
            },
        }
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    assert build_config(path) == cfg


# --- each validation: names the flag or key, shows the value, says the fix ----------------------

FLAG_CASES = [
    # (override, flag, value as shown, fix)
    ({"batch_size": 0}, "--batch-size", "0", "integer in [1, 1048576]; use e.g. 32"),
    ({"batch_size": True}, "--batch-size", "True", "integer in [1, 1048576]"),
    ({"batch_size": 10**12}, "--batch-size", "1000000000000", "integer in [1, 1048576]"),
    ({"seed": -1}, "--seed", "-1", "integer in [0, 2**63 - 1]"),
    ({"time_budget": math.nan}, "--time-budget", "nan", "a duration up to a year; use e.g. 10m"),
    ({"time_budget": math.inf}, "--time-budget", "inf", "a duration up to a year"),
    ({"time_budget": 1e300}, "--time-budget", "1e+300", "a duration up to a year"),
    ({"gpu_memory": 1e300}, "--gpu-memory", "1e+300", "from 1 B to 1 PiB; use e.g. 4GiB"),
    ({"gpu_memory": True}, "--gpu-memory", "True", "use e.g. 4GiB"),
    ({"model": 1e300}, "--model", "1e+300", "must be text; give a backbone name"),
    ({"model": ""}, "--model", "''", "must be text; give a backbone name"),
    ({"data": True}, "--data", "True", "must be text; give the image folder's path"),
    ({"out": 3}, "--out", "3", "must be text; give the run folder's path"),
    ({"weights": False}, "--weights", "False", "must be text; give auto, none or a weights"),
    ({"gpu": 4}, "--gpu", "4", "must be text; give auto or a profile name"),
    ({"val_split": 1.5}, "--val-split", "1.5", "in [0, 1); use e.g. 0.2"),
    ({"val_split": math.nan}, "--val-split", "nan", "in [0, 1)"),
    ({"resolution": 8}, "--resolution", "8", "integer in [16, 2048]; use e.g. 224"),
    ({"seed": "abc"}, "--seed", "'abc'", "must be an integer"),
    ({"workers": -1}, "--workers", "-1", "integer in [0, 1024] or omitted"),
    ({"head_hidden": 0}, "--head-hidden", "0", "integer in [1, 1048576] or omitted"),
    ({"head_dropout": 1.0}, "--head-dropout", "1.0", "in [0, 1)"),
    ({"class_weights": "inverse"}, "--class-weights", "'inverse'", "one of auto, balanced, none"),
    ({"device": "tpu"}, "--device", "'tpu'", "one of auto, cpu, cuda"),
    ({"precision": "fp8"}, "--precision", "'fp8'", "one of auto, fp32, bf16, fp16"),
    ({"micro_batch": 0}, "--micro-batch", "0", "integer in [1, 1048576] or omitted"),
    ({"gpu_memory": "lots"}, "--gpu-memory", "'lots'", "use e.g. 4GiB"),
    ({"gpu_memory": -1}, "--gpu-memory", "-1", "positive size"),
    ({"deterministic": "no"}, "--deterministic", "'no'", "true or false"),
    ({"feature_cache": 1}, "--feature-cache", "1", "true or false"),
    ({"progress": "off"}, "--progress", "'off'", "true or false"),
    ({"labels": "labels.json"}, "--labels", "'labels.json'", "save it as CSV, TSV or JSONL"),
    ({"labels": "labels"}, "--labels", "'labels'", "format is read from the extension"),
    ({"labels": ""}, "--labels", "''", "a labels file's path (.csv, .tsv or .jsonl) or omitted"),
    ({"path_column": ""}, "--path-column", "''", "a column name of the labels file, e.g. file_name"),
    ({"label_column": 3}, "--label-column", "3", "a column name of the labels file, e.g. label"),
]

AUGMENT_CASES = [
    ("rescale", 0.5, "leave it unset (or 1/255)"),
    ("rotation_range", 200, "degrees in [0, 180]"),
    ("shear_range", -5, "degrees in [0, 180]"),
    ("width_shift_range", 1.0, "in [0, 1)"),
    ("height_shift_range", -0.1, "in [0, 1)"),
    ("zoom_range", 3, "in [0, 1)"),
    ("color_jitter", "lots", "in [0, 1)"),
    ("random_erasing", 1.5, "in [0, 1)"),
    ("mixup_alpha", -1, "in [0, 100] (0 turns it off)"),
    ("mixup_alpha", 1e300, "in [0, 100] (0 turns it off)"),
    ("cutmix_alpha", "x", "in [0, 100] (0 turns it off)"),
    ("brightness_range", [1.2, 0.8], "two numbers 0 < lo <= hi, e.g. [0.8, 1.2]"),
    ("brightness_range", 0.2, "two numbers 0 < lo <= hi"),
    ("fill_mode", "mirror", "one of constant, nearest, reflect, wrap"),
    ("cval", "black", "a pixel value in [0, 255]"),
    ("cval", 1e300, "a pixel value in [0, 255]"),
    ("horizontal_flip", "yes", "true or false"),
    ("vertical_flip", 2, "true or false"),
]

PHASE_CASES = [
    ("epochs", -1, "integer in [0, 100000] or null"),
    ("epochs", 2.5, "integer in [0, 100000] or null"),
    ("epochs", 10**9, "integer in [0, 100000] or null"),
    ("lr", 0, "in (0, 10); use e.g. 1e-3"),
    ("lr", "fast", "in (0, 10)"),
    ("trainable", "top:0", "head, all or top:N (N >= 1)"),
    ("trainable", "backbone", "head, all or top:N"),
    ("backbone_lr_ratio", 0, "in (0, 1]"),
    ("layer_decay", 2, "in (0, 1]"),
    ("weight_decay", -1e-4, "in [0, 1]; use e.g. 1e-4"),
    ("weight_decay", 1e300, "in [0, 1]"),
    ("label_smoothing", 1, "in [0, 1)"),
    ("warmup_epochs", -1, "in [0, 100000]; use e.g. 0.5"),
    ("warmup_epochs", 1e300, "in [0, 100000]"),
    ("warmup_epochs", math.inf, "in [0, 100000]"),
    ("optimizer", "lion", "one of adamw, adam, sgd"),
    ("momentum", "high", "a number"),
    ("schedule", "step", "one of cosine, onecycle, constant"),
    ("monitor", "accuracy", "one of val_loss, val_accuracy"),
    ("patience", 0, "integer in [1, 100000] or null (no early stopping)"),
    ("restore_best", "yes", "true or false"),
    ("train_bn", "no", "true or false"),
]


def assert_one_problem(problems: list[str], key: str, value: str, fix: str) -> None:
    assert len(problems) == 1, problems
    (msg,) = problems
    assert msg.startswith(f"{key}: "), msg
    assert value in msg, f"value {value} not shown in: {msg}"
    assert fix in msg, f"fix {fix!r} not in: {msg}"


@pytest.mark.parametrize(
    ("override", "flag", "value", "fix"), FLAG_CASES, ids=[f"{c[1]}={c[2]}" for c in FLAG_CASES]
)
def test_each_flag_error_names_the_flag_the_value_and_the_fix(
    override: dict[str, Any], flag: str, value: str, fix: str
) -> None:
    assert_one_problem(problems_of(**override), flag, value, fix)


@pytest.mark.parametrize(
    ("key", "bad", "fix"), AUGMENT_CASES, ids=[f"{c[0]}={c[1]}" for c in AUGMENT_CASES]
)
def test_each_augment_error_names_the_key_the_value_and_the_fix(
    key: str, bad: Any, fix: str
) -> None:
    assert_one_problem(
        problems_of(augment={key: bad}),
        f"augment.{key}",
        repr(tuple(bad) if isinstance(bad, list) else bad),
        fix,
    )


@pytest.mark.parametrize(
    ("key", "bad", "fix"), PHASE_CASES, ids=[f"{c[0]}={c[1]}" for c in PHASE_CASES]
)
def test_each_phase_error_names_the_yaml_key_the_value_and_the_fix(
    key: str, bad: Any, fix: str, write_yaml: Any
) -> None:
    path = write_yaml(yaml.safe_dump({"phases": {"finetune": {key: bad}}}))
    assert_one_problem(problems_of(path), f"phases.finetune.{key}", repr(bad), fix)


def test_a_bool_is_not_accepted_where_a_number_is_meant() -> None:
    # YAML `epochs: yes` is True, and True is an int in Python
    problems = problems_of(
        seed=True, workers=False, micro_batch=True, phase_overrides={"head": {"epochs": True}}
    )
    assert len(problems) == 4, problems
    for key in (
        "--seed: True",
        "--workers: False",
        "--micro-batch: True",
        "phases.head.epochs: True",
    ):
        assert any(p.startswith(key) for p in problems), (key, problems)


# --- all at once ------------------------------------------------------------------------------


def test_every_problem_from_yaml_and_flags_is_reported_at_once(write_yaml: Any) -> None:
    path = write_yaml(
        "batchsize: 8\n"  # unknown key
        "val_split: 2\n"  # bad value
        "augment: {zoom_range: 5, flip: true}\n"  # bad value + unknown key
        "phases:\n  head: {lr: -1}\n  finetune: {trainable: top:x}\n"
    )
    with pytest.raises(ConfigError) as e:
        build_config(path, {"data": "d", "device": "gpu", "gpu_memory": "many"})
    keys = [
        "batchsize",
        "--val-split",
        "augment.zoom_range",
        "augment.flip",
        "phases.head.lr",
        "phases.finetune.trainable",
        "--device",
        "--gpu-memory",
    ]
    assert len(e.value.problems) == len(keys), e.value.problems
    for key in keys:
        assert sum(p.startswith(f"{key}: ") for p in e.value.problems) == 1, key
    assert str(e.value).startswith(f"{len(keys)} config errors: ")
    assert "\n" not in str(e.value)


def test_config_errors_through_the_cli_exit_2_on_one_line(
    write_yaml: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_yaml("phases: {head: {epochs: -1}}\nrotation_range: 20\n")
    assert main(["train", "images", "--config", str(path), "--batch-size", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 3 config errors: ") and err.count("\n") == 1
    for key in ("phases.head.epochs", "rotation_range", "--batch-size"):
        assert key in err


# --- YAML files: unknown keys, bad files ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "suggestion"),
    [
        ("batchsize: 8", "batchsize", "batch_size"),
        ("val_spilt: 0.1", "val_spilt", "val_split"),
        ("augment: {rotation: 10}", "augment.rotation", "rotation_range"),
        ("augment: {horizontal_flips: true}", "augment.horizontal_flips", "horizontal_flip"),
        ("phases: {head: {epoch: 3}}", "phases.head.epoch", "epochs"),
        ("phases: [{name: head, learning_rate: 0.1}]", "phases[0].learning_rate", None),
    ],
)
def test_unknown_yaml_keys_are_named_with_a_suggestion(
    text: str, key: str, suggestion: str | None, write_yaml: Any
) -> None:
    (msg,) = problems_of(write_yaml(text))
    assert msg.startswith(f"{key}: unknown setting")
    if suggestion is None:
        assert "known: " in msg and "lr" in msg  # nothing close: list them all
    else:
        assert msg.endswith(f"did you mean {suggestion!r}?")


def test_suggestions_are_deterministic(write_yaml: Any) -> None:
    path = write_yaml("head_dropuot: 0.1\n")
    assert problems_of(path) == ["head_dropuot: unknown setting; did you mean 'head_dropout'?"]


def test_bad_yaml_syntax_names_the_file_and_the_line(write_yaml: Any) -> None:
    path = write_yaml("data: d\naugment: {rotation_range: 10\nseed: 1\n")
    (msg,) = problems_of(path)
    assert msg.startswith(f"--config: {str(path)!r} is not valid YAML")
    assert "line" in msg and "fix the syntax" in msg


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("- a\n- b\n", "must hold a mapping of settings (got a list)"),
        ("just text\n", "must hold a mapping of settings (got a str)"),
    ],
)
def test_a_yaml_file_that_is_not_a_mapping(content: str, expected: str, write_yaml: Any) -> None:
    (msg,) = problems_of(write_yaml(content))
    assert msg.startswith("--config: ") and expected in msg


def test_missing_unreadable_and_binary_config_files(tmp_path: Path) -> None:
    (msg,) = problems_of(tmp_path / "nope.yaml")
    assert msg == f"--config: file {str(tmp_path / 'nope.yaml')!r} not found; check the path"
    (msg,) = problems_of(tmp_path)  # a folder
    assert msg.startswith(f"--config: {str(tmp_path)!r} cannot be read")
    binary = tmp_path / "weights.yaml"
    binary.write_bytes(b"\x80\x81\xfe\xff" * 8)
    (msg,) = problems_of(binary)
    assert msg.startswith(f"--config: {str(binary)!r} is not a UTF-8 text file")


def test_an_empty_yaml_file_is_no_settings(write_yaml: Any) -> None:
    assert problems_of(write_yaml("")) == []


def test_no_data_folder() -> None:
    with pytest.raises(ConfigError, match=r"^data: no image folder given; pass DATA"):
        build_config(overrides={"batch_size": 8})
    with pytest.raises(ConfigError, match=r"^data: no image folder given"):
        build_config(overrides={"data": None})


def test_a_null_data_in_yaml_is_no_data_folder(write_yaml: Any) -> None:
    with pytest.raises(ConfigError, match=r"^data: no image folder given"):
        build_config(write_yaml("data: null\n"))


# --- phases: as a list, as a mapping, from flags ------------------------------------------------


def test_phases_as_a_list_replace_the_recipe(write_yaml: Any) -> None:
    path = write_yaml(
        "phases:\n"
        "  - {name: head, epochs: 1}\n"
        "  - {name: all, epochs: 2, lr: 0.01, trainable: all, schedule: onecycle}\n"
    )
    cfg = build_config(path, {"data": "d"})
    head, rest = cfg.phases
    assert head == PhaseConfig(name="head", epochs=1, lr=1e-3, trainable="head")
    assert (rest.name, rest.epochs, rest.lr, rest.trainable, rest.schedule) == (
        "all",
        2,
        0.01,
        "all",
        "onecycle",
    )


def test_phases_as_a_mapping_update_the_default_recipe_by_name(write_yaml: Any) -> None:
    path = write_yaml("phases:\n  finetune: {epochs: 7}\n  polish: {lr: 0.0001, trainable: all}\n")
    cfg = build_config(path, {"data": "d"})
    assert [p.name for p in cfg.phases] == ["head", "finetune", "polish"]
    assert cfg.phases[0] == default_phases()[0]
    assert cfg.phases[1].epochs == 7 and cfg.phases[1].trainable == "top:2"
    assert cfg.phases[2].lr == 1e-4 and cfg.phases[2].trainable == "all"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("phases: {head: 3}", "phases.head: 3 must be a mapping of phase settings"),
        (
            "phases: [{epochs: 3}]",
            "phases[0]: {'epochs': 3} must be a mapping with at least a name",
        ),
        ("phases: [head]", "phases[0]: 'head' must be a mapping with at least a name"),
        ("phases: head", "phases: 'head' must be a list of phase mappings or a mapping"),
        ("phases: []", "phases: [] is empty; give at least one phase"),
        ("phases: [{name: a}, {name: a}]", "phases: names must be unique, got ['a', 'a']"),
        ("augment: [rotation_range]", "augment: ['rotation_range'] must be a mapping of"),
    ],
)
def test_malformed_sections(text: str, expected: str, write_yaml: Any) -> None:
    found = problems_of(write_yaml(text))
    assert any(p.startswith(expected) for p in found), found


def test_phase_flags_apply_to_every_phase_or_one_by_name() -> None:
    cfg = build_config(
        overrides={
            "data": "d",
            "phase_overrides": {"*": {"epochs": 3, "lr": 0.01}, "finetune": {"trainable": "top:4"}},
        }
    )
    assert [(p.epochs, p.lr) for p in cfg.phases] == [(3, 0.01), (3, 0.01)]
    assert cfg.phases[1].trainable == "top:4" and cfg.phases[0].trainable == "head"


def test_a_flag_for_a_phase_the_recipe_lacks(write_yaml: Any) -> None:
    path = write_yaml("phases: [{name: only, epochs: 1}]\n")
    found = problems_of(path, phase_overrides={"finetune": {"epochs": 2}})
    assert found == ["phases: no phase named 'finetune'; phases are only"]


# --- nothing but ConfigError, whatever a YAML file holds ----------------------------------------

ODD_VALUES = [None, True, "text", -1, 0, 1e300, math.inf, math.nan, [1, 2], {"a": 1}, []]


def _every_field(odd: Any) -> list[tuple[str, dict[str, Any]]]:
    """(field name, a config section setting that field to ``odd``) for every setting."""
    out = [(f.name, {f.name: odd}) for f in fields(TrainConfig) if f.name not in ("augment", "phases")]
    out += [(f.name, {"augment": {f.name: odd}}) for f in fields(AugmentConfig)]
    out += [(f.name, {"phases": {"head": {f.name: odd}}}) for f in fields(PhaseConfig)]
    return out


@pytest.mark.parametrize("odd", [math.nan, math.inf, -math.inf, 1e300], ids=repr)
def test_non_finite_and_absurd_numbers_are_refused_in_every_field(odd: Any, tmp_path: Path) -> None:
    """No setting takes nan, infinity or 1e300: each is refused, its key or flag named."""
    for i, (name, section) in enumerate(_every_field(odd)):
        path = tmp_path / f"{i}.yaml"
        path.write_text(yaml.safe_dump({"data": "d", **section}))
        with pytest.raises(ConfigError) as caught:
            build_config(path)
        assert any(name in p or flag_name(name) in p for p in caught.value.problems), (
            section, caught.value.problems)


def test_a_boolean_is_refused_wherever_a_value_is_not_one(tmp_path: Path) -> None:
    booleans = {f.name for cls in (TrainConfig, AugmentConfig, PhaseConfig) for f in fields(cls)
                if f.type in ("bool", "bool | None")}
    for i, (name, section) in enumerate(_every_field(True)):
        if name in booleans:
            continue
        path = tmp_path / f"{i}.yaml"
        path.write_text(yaml.safe_dump({"data": "d", **section}))
        with pytest.raises(ConfigError):
            build_config(path)


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"data": True, "time_budget": math.inf, "gpu_memory": 1e300,
                                    "model": 1e300, "phases": {"finetune": {"warmup_epochs": 1e300}}}))
    with pytest.raises(ConfigError) as caught:
        build_config(path)
    named = ["--data", "--time-budget", "--gpu-memory", "--model", "phases.finetune.warmup_epochs"]
    assert len(caught.value.problems) == len(named)
    assert all(any(p.startswith(n + ":") for p in caught.value.problems) for n in named)


@pytest.mark.parametrize("odd", ODD_VALUES, ids=repr)
def test_odd_values_anywhere_give_config_errors_not_crashes(odd: Any, tmp_path: Path) -> None:
    sections: list[dict[str, Any]] = []
    sections += [{f.name: odd} for f in fields(TrainConfig) if f.name not in ("augment", "phases")]
    sections += [{"augment": {f.name: odd}} for f in fields(AugmentConfig)]
    sections += [{"phases": {"head": {f.name: odd}}} for f in fields(PhaseConfig)]
    sections += [{"phases": [{"name": odd}]}, {"augment": odd}, {"phases": odd}]
    for i, section in enumerate(sections):
        path = tmp_path / f"{i}.yaml"
        path.write_text(yaml.safe_dump({"data": "d", **section}))
        try:
            build_config(path)
        except ConfigError as e:
            assert all(p.strip() and "\n" not in p for p in e.problems), e.problems
        except Exception as e:  # noqa: BLE001 - the point of the test
            pytest.fail(f"{section} raised {type(e).__name__}: {e}")


# --- no code from configs: no eval/exec anywhere, safe loaders only --------------------------------

SRC = Path(snugtune.__file__).parent


def _calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    """Each call with its dotted callee: ``eval``, ``torch.load``, ``self.model.eval``..."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            parts, f = [], node.func
            while isinstance(f, ast.Attribute):
                parts.append(f.attr)
                f = f.value
            if isinstance(f, ast.Name):
                parts.append(f.id)
                out.append((".".join(reversed(parts)), node))
    return out


def test_the_package_never_evaluates_code() -> None:
    """No ``eval``/``exec``/``compile`` builtins (``model.eval()`` is fine), no unsafe YAML
    loaders, and every ``torch.load`` is ``weights_only=True``."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for name, call in _calls(tree):
            where = f"{path.relative_to(SRC)}:{call.lineno}"
            if name in ("eval", "exec", "compile", "builtins.eval", "builtins.exec", "__import__"):
                found.append(f"{where} calls {name}")
            if name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all"):
                found.append(f"{where} calls {name} (use yaml.safe_load)")
            if name == "torch.load" and not any(
                k.arg == "weights_only"
                and isinstance(k.value, ast.Constant)
                and k.value.value is True
                for k in call.keywords
            ):
                found.append(f"{where} calls torch.load without weights_only=True")
    assert not found, found


def test_the_source_scan_sees_what_it_should() -> None:
    """Guard against a scan that silently finds nothing."""
    code = "model.eval()\nx = eval('1')\ntorch.load(p)\nyaml.load(s)\ntorch.load(p, weights_only=True)\n"
    names = [n for n, _ in _calls(ast.parse(code))]
    assert names == ["model.eval", "eval", "torch.load", "yaml.load", "torch.load"]
    assert len(list(SRC.rglob("*.py"))) > 20
    grep = [
        line
        for p in SRC.rglob("*.py")
        for line in p.read_text().splitlines()
        if ("eval(" in line and ".eval(" not in line) or "exec(" in line
    ]
    assert not [line for line in grep if not line.lstrip().startswith("#")], grep
