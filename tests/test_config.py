"""Config files map 1:1 onto the dataclasses; unknown keys and bad values are refused with the key named."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from sec2sec.config import (
    SHIPPED_CONFIGS,
    AudioConfig,
    Config,
    ModelConfig,
    from_dict,
    load_config,
    parse_config,
    shipped_config_names,
    to_dict,
)

CONFIGS = SHIPPED_CONFIGS


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
        ("late_fusion", lambda c: c.model.fusion.mode == "concat" and c.model.fusion.modalities == "both"),
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
        ({"train": {"modality_dropout": 1.0}}, "[train] modality_dropout = 1.0 is out of range"),
        ({"model": {"fusion": {"mode": "late"}}}, "mode = 'late' is not allowed; use one of co, self, concat"),
        (
            {"model": {"video": {"token_grid": [2, 2, 2]}}},
            "[model.video] token_grid = [2, 2, 2] is finer than the encoder's layer4 map: r2plus1d_18 on 8 frames "
            "of 112x112 gives a (512, 1, 7, 7) map, so a grid of 1..1 x 1..7 x 1..7 cells is allowed",
        ),
        (
            {"model": {"video": {"encoder": "resnet18_2d", "token_grid": [8, 5, 4]}}},
            "resnet18_2d on 8 frames of 112x112 gives a (512, 8, 4, 4) map, so a grid of 1..8 x 1..4 x 1..4",
        ),
        ({"model": {"audio": {"token_grid": [5, 4]}}}, "MFCC image of 112x224 gives a (512, 4, 7) map"),
    ],
)
def test_bad_values_name_the_key(doc: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_config(doc)
    assert message in str(err.value)


def test_bad_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"missing\.toml does not exist; pass --config"):
        load_config(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[model\n")
    with pytest.raises(ValueError, match="is not valid TOML"):
        load_config(broken)


def test_sixteen_frames_allow_two_time_cells() -> None:
    video = parse_config({"model": {"video": {"frames_per_window": 16, "token_grid": [2, 2, 2]}}}).model.video
    assert video.map_shape == (2, 7, 7)


@pytest.mark.parametrize(
    ("encoder", "frames", "crop"),
    [("r2plus1d_18", 8, 112), ("r2plus1d_18", 16, 40), ("r2plus1d_18", 3, 33), ("resnet18_2d", 2, 64)],
)
def test_map_shape_is_the_encoders_real_map(encoder: str, frames: int, crop: int) -> None:
    """The formula behind the token_grid check agrees with the layer4 map the encoder really makes."""
    import torch

    from sec2sec.config import VideoConfig, audio_map_shape
    from sec2sec.encoders import AudioEncoder, VideoEncoder

    config = VideoConfig(frames_per_window=frames, crop=crop, resize=crop, encoder=encoder, token_grid=(1, 1, 1))
    module = VideoEncoder(replace(config, weights="none")).eval()
    with torch.inference_mode():
        assert module.feature_map(torch.zeros(1, 3, frames, crop, crop)).shape[2:] == config.map_shape
        audio = AudioEncoder(AudioConfig(weights="none", image_size=(crop, 2 * crop + 3), token_grid=(1, 1))).eval()
        assert audio.trunk(torch.zeros(1, 3, crop, 2 * crop + 3)).shape[2:] == audio_map_shape((crop, 2 * crop + 3))


def test_a_shipped_config_loads_by_name_from_any_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no configs/ folder here
    assert load_config("first_impressions") == load_config(CONFIGS / "first_impressions.toml")
    assert load_config("first_impressions").model.heads.task == "regression"
    assert load_config("default") == load_config() == Config()
    assert shipped_config_names() == sorted(p.stem for p in CONFIGS.glob("*.toml"))
    assert {"default", "first_impressions", "audio_only", "late_fusion"} <= set(shipped_config_names())


def test_a_file_wins_over_a_shipped_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "first_impressions").write_text("[model]\nclip_seconds = 4\n")
    assert load_config("first_impressions").model.clip_seconds == 4
    (tmp_path / "mine.toml").write_text("[model]\nclip_seconds = 6\n")
    assert load_config("mine.toml").model.clip_seconds == 6
    assert load_config(tmp_path / "mine.toml").model.clip_seconds == 6


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("first_impression", "no shipped config is named 'first_impression'; use one of {names}, or pass the path"),
        ("configs/first_impressions.toml", "config file configs/first_impressions.toml does not exist; pass"),
        (
            "first_impressions.toml",
            "config file first_impressions.toml does not exist; pass --config a TOML file or a shipped name ({names})",
        ),
    ],
)
def test_an_unknown_config_lists_the_shipped_names(
    spec: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as caught:
        load_config(spec)
    assert "\n" not in str(caught.value)
    assert message.format(names=", ".join(shipped_config_names())) in str(caught.value)


def test_every_command_defaults_to_the_built_in_config() -> None:
    """No command's --config points into a source tree: each defaults to None (= Config(), the shipped default)."""
    import argparse

    from monitor.cli import build_parser as live_parser
    from sec2sec.commands import build_parser

    commands = {}
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            commands.update(action.choices)
    commands["sec2sec-live"] = live_parser()
    configs = {
        name: next(a for a in parser._actions if "--config" in a.option_strings)
        for name, parser in commands.items()
        if any("--config" in a.option_strings for a in parser._actions)
    }
    assert {"describe", "extract", "train", "sec2sec-live"} <= set(configs)
    for name, action in configs.items():
        assert action.default is None, name
        assert "first_impressions" in action.help and "built-in defaults" in action.help, name


def test_one_thread_rule_for_every_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--threads N` wins; otherwise one thread per core this process may use, shared among torchrun's local
    processes, never below one (sec2sec-live and the offline commands call the same function)."""
    from sec2sec.devices import torch_threads

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert [torch_threads(), torch_threads(3), torch_threads(processes=2), torch_threads(processes=8)] == [4, 3, 2, 1]
