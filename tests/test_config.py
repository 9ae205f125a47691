"""Config files map 1:1 onto the dataclasses; unknown keys and bad values are refused with the key named."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sec2sec.config import Config, ModelConfig, from_dict, load_config, parse_config, to_dict

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _keys(table: dict, prefix: str = "") -> set[str]:
    return {
        k for key, v in table.items() for k in (_keys(v, f"{prefix}{key}.") if isinstance(v, dict) else {prefix + key})
    }


def test_default_toml_equals_dataclass_defaults_and_spells_every_key() -> None:
    import tomllib

    assert load_config(CONFIGS / "default.toml") == Config()
    assert _keys(tomllib.loads((CONFIGS / "default.toml").read_text())) == _keys(to_dict(Config()))


@pytest.mark.parametrize(
    ("name", "check"),
    [
        (
            "first_impressions",
            lambda c: c.model.heads.outputs[0] == "extraversion" and c.model.heads.task == "regression",
        ),
        ("audio_only", lambda c: c.model.fusion.modalities == "audio" and not c.model.uses_video),
        ("vision_only", lambda c: c.model.fusion.modalities == "video" and not c.model.uses_audio),
        ("sa_sa", lambda c: c.model.fusion.mode == "self"),
        ("no_temporal", lambda c: c.model.temporal.kind == "none"),
        ("attention_lstm", lambda c: c.model.temporal.kind == "attention_lstm"),
        ("gru_transformer", lambda c: c.model.temporal.kind == "gru_transformer"),
    ],
)
def test_variant_files(name: str, check: Callable[[Config], bool]) -> None:
    assert check(load_config(CONFIGS / f"{name}.toml"))


def test_round_trip_through_dict() -> None:
    config = load_config(CONFIGS / "first_impressions.toml").model
    assert from_dict(ModelConfig, to_dict(config), "model") == config


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"model": {"audio": {"n_mfc": 3}}}, "[model.audio] unknown key(s) n_mfc; allowed:"),
        ({"modle": {}}, "top level: unknown key(s) modle"),
        ({"model": {"temporal": {"kind": "rnn"}}}, "[model.temporal] kind = 'rnn' is not allowed; use one of lstm"),
        ({"model": {"video": {"frames_per_window": 0}}}, "[model.video] frames_per_window = 0 is out of range"),
        ({"model": {"fusion": {"width": 100, "heads": 3}}}, "width = 100 must be divisible by heads = 3"),
        ({"model": {"audio": {"n_mfcc": "many"}}}, "[model.audio] n_mfcc must be int, got 'many'"),
        ({"model": {"heads": {"outputs": []}}}, "[model.heads] outputs = [] must be a non-empty list"),
        ({"model": {"audio": {"delta_win": 4}}}, "delta_win = 4 must be odd"),
        ({"train": {"label_threshold": "mean"}}, "[train] label_threshold = 'mean'; use \"median\" or a number"),
    ],
)
def test_bad_values_name_the_key(doc: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_config(doc)
    assert message in str(err.value)


def test_bad_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist; pass --config"):
        load_config(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[model\n")
    with pytest.raises(ValueError, match="is not valid TOML"):
        load_config(broken)
