"""Build a run's configuration: defaults, then an optional YAML file, then flags (later wins).

``build_config`` validates everything at once and raises one ``ConfigError`` listing every
problem, each naming the flag (or YAML key), the bad value and a fix.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import fields, replace
from pathlib import Path, PurePath
from typing import Any

import yaml

from snugtune.config.checks import MAX_BYTES, validate
from snugtune.config.settings import AugmentConfig, PhaseConfig, TrainConfig, default_phases
from snugtune.errors import ConfigError
from snugtune.units import parse_bytes, parse_duration

__all__ = ["build_config"]


def build_config(
    yaml_path: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> TrainConfig:
    """Merge defaults, a YAML file and overrides (flag values), then validate all of it.

    Args:
        yaml_path: optional YAML file whose keys are ``TrainConfig`` fields; ``augment`` is a
            mapping, ``phases`` a list of mappings (or a mapping phase name -> fields, which
            updates the default phases).
        overrides: flag values by field name; ``None`` values are ignored.

    Raises:
        ConfigError: listing every problem found.
    """
    raw: dict[str, Any] = {}
    problems: list[str] = []
    if yaml_path is not None:
        raw = _read_yaml(Path(yaml_path), problems)
    overrides = dict(overrides or {})
    phase_flags = overrides.pop("phase_overrides", None) or {}
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "augment" and isinstance(value, Mapping):
            raw["augment"] = {**(raw.get("augment") or {}), **value}
        else:
            raw[key] = value
    cfg = _from_raw(raw, problems)
    if cfg is not None and phase_flags:
        cfg = _apply_phase_flags(cfg, phase_flags, problems)
    if cfg is not None:
        problems.extend(validate(cfg))
    if problems or cfg is None:
        raise ConfigError(problems or ["invalid configuration"])
    return cfg


def _apply_phase_flags(
    cfg: TrainConfig, flags: Mapping[str, Mapping[str, Any]], problems: list[str]
) -> TrainConfig:
    """Apply ``{"*" or phase name: {field: value}}`` from flags on top of the phases."""
    phases = []
    for ph in cfg.phases:
        upd = {**flags.get("*", {}), **flags.get(ph.name, {})}
        upd = {k: v for k, v in upd.items() if v is not None}
        phases.append(replace(ph, **_known(PhaseConfig, upd, f"phases.{ph.name}.", problems)))
    unknown = [n for n in flags if n != "*" and n not in {p.name for p in cfg.phases}]
    for name in unknown:
        problems.append(f"phases: no phase named {name!r}; phases are "
                        f"{', '.join(p.name for p in cfg.phases)}")
    return replace(cfg, phases=tuple(phases))


def _read_yaml(path: Path, problems: list[str]) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        problems.append(f"--config: file {str(path)!r} not found; check the path")
        return {}
    except OSError as e:  # a folder, no permission
        problems.append(f"--config: {str(path)!r} cannot be read ({e.strerror}); give a YAML file")
        return {}
    except UnicodeDecodeError:
        problems.append(f"--config: {str(path)!r} is not a UTF-8 text file; give a YAML file")
        return {}
    except yaml.YAMLError as e:
        problems.append(f"--config: {str(path)!r} is not valid YAML ({e}); fix the syntax")
        return {}
    if data is None:
        return {}
    if not isinstance(data, dict):
        problems.append(f"--config: {str(path)!r} must hold a mapping of settings (got a "
                        f"{type(data).__name__}), e.g. 'batch_size: 32'")
        return {}
    return data


def _known(cls: type, data: Mapping[str, Any], where: str, problems: list[str]) -> dict[str, Any]:
    names = sorted(f.name for f in fields(cls))
    floats = {f.name for f in fields(cls) if str(f.type).startswith("float")}
    out = {}
    for k, v in data.items():
        if k in names:
            # YAML 1.1 reads 1e-3 (no dot) as a string; take it as the number it is meant as
            out[k] = float(v) if k in floats and isinstance(v, str) and _FLOAT_RE.match(v) else v
        else:
            close = difflib.get_close_matches(str(k), names, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(names)}"
            problems.append(f"{where}{k}: unknown setting{hint}")
    return out


_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _from_raw(raw: Mapping[str, Any], problems: list[str]) -> TrainConfig | None:
    top = _known(TrainConfig, raw, "", problems)
    if top.get("data") is None:
        problems.append("data: no image folder given; pass DATA (a folder of class sub-folders)")
        return None
    aug = top.pop("augment", None) or {}
    if not isinstance(aug, Mapping):
        problems.append(f"augment: {aug!r} must be a mapping of Keras-style augmentation "
                        "settings, e.g. {rotation_range: 20}")
        aug = {}
    aug_kw = _known(AugmentConfig, aug, "augment.", problems)
    if isinstance(aug_kw.get("brightness_range"), list):
        aug_kw["brightness_range"] = tuple(aug_kw["brightness_range"])
    phases = _phases(top.pop("phases", None), problems)
    if "gpu_memory" in top and top["gpu_memory"] is not None:
        value = top.pop("gpu_memory")
        try:
            top["gpu_memory"] = parse_bytes(value)
            if top["gpu_memory"] > MAX_BYTES:  # named as given, not as a 300-digit integer
                del top["gpu_memory"]
                problems.append(f"--gpu-memory: {value!r} must be a size from 1 B to 1 PiB; "
                                "use e.g. 4GiB")
        except (ValueError, TypeError, OverflowError) as e:
            detail = str(e) if str(e).startswith(repr(value)) else (
                f"{value!r} is not a size; use e.g. 4GiB, 512MiB or 8g")
            problems.append(f"--gpu-memory: {detail}")
    if "time_budget" in top and top["time_budget"] is not None:
        value = top.pop("time_budget")
        try:
            top["time_budget"] = parse_duration(value)
        except (ValueError, TypeError) as e:
            problems.append(f"--time-budget: {e}")
    for k in ("data", "out", "weights"):  # a path object is text; a number or a boolean is not
        if isinstance(top.get(k), PurePath):
            top[k] = str(top[k])
    try:
        return TrainConfig(**top, augment=AugmentConfig(**aug_kw), phases=phases)
    except TypeError as e:
        problems.append(str(e))
        return None


def _phases(value: Any, problems: list[str]) -> tuple[PhaseConfig, ...]:
    defaults = {p.name: p for p in default_phases()}
    if value is None:
        return tuple(defaults.values())
    if isinstance(value, Mapping):  # {finetune: {epochs: 3}}: update defaults by name
        out = dict(defaults)
        for name, upd in value.items():
            if not isinstance(upd, Mapping):
                problems.append(f"phases.{name}: {upd!r} must be a mapping of phase settings, "
                                "e.g. {epochs: 3}")
                continue
            base = out.get(name, PhaseConfig(name=str(name), epochs=None, lr=1e-3))
            out[name] = replace(base, **_known(PhaseConfig, upd, f"phases.{name}.", problems))
        return tuple(out.values())
    if isinstance(value, list):
        result = []
        for i, item in enumerate(value):
            if not isinstance(item, Mapping) or "name" not in item:
                problems.append(f"phases[{i}]: {item!r} must be a mapping with at least a name, "
                                "e.g. {name: finetune, epochs: 3, lr: 1.0e-4}")
                continue
            if not isinstance(item["name"], str) or not item["name"]:
                problems.append(f"phases[{i}].name: {item['name']!r} must be a text name, "
                                "e.g. finetune")
                continue
            kw = _known(PhaseConfig, item, f"phases[{i}].", problems)
            base = defaults.get(kw["name"], PhaseConfig(name=kw["name"], epochs=None, lr=1e-3))
            result.append(replace(base, **kw))
        return tuple(result)
    problems.append(f"phases: {value!r} must be a list of phase mappings or a mapping "
                    "phase name -> settings, e.g. {finetune: {epochs: 3}}")
    return tuple(defaults.values())
