"""Pretrained weights (torch hub cache, explicit files, visible fallback) and checkpoints."""

from __future__ import annotations

import os
import pickle
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers.configs import small_config
from torchvision.models import resnet18

from sec2sec import weights
from sec2sec.checkpoint import CheckpointError, model_from_checkpoint, read_checkpoint, save_checkpoint
from sec2sec.config import AudioConfig, HeadsConfig, VideoConfig
from sec2sec.encoders import AudioEncoder, VideoEncoder
from sec2sec.model import Sec2Sec
from sec2sec.weights import PretrainedWeightsMissing, WeightsError


def _marked_state(model: torch.nn.Module, value: float) -> dict[str, torch.Tensor]:
    state = model.state_dict()
    state["layer4.1.conv2.weight"] = torch.full_like(state["layer4.1.conv2.weight"], value)
    return state


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    return tmp_path / "torch" / "hub" / "checkpoints"


def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(*args: object, **kwargs: object) -> None:
        raise OSError("network unreachable")

    monkeypatch.setattr(weights, "urlopen", unreachable)


def test_a_file_under_torchvisions_name_is_loaded_only_if_its_hash_matches(
    torch_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = torch_home / "resnet18-f37072fd.pth"  # not torchvision's bytes: refused, not loaded
    torch.save(_marked_state(resnet18(), 0.125), fake)
    _offline(monkeypatch)
    with pytest.raises(WeightsError, match=r"damaged \((more than )?\d+ bytes, expected 46830571\)"):
        AudioEncoder(AudioConfig(weights="pretrained"))
    # the same bytes under a name carrying their own sha256 prefix are loaded (the hub table points at them)
    named = torch_home / f"resnet18-{weights.sha256_of(fake)[:8]}.pth"
    fake.rename(named)
    entry = weights.HubFile(
        "resnet18", "test", f"https://x.invalid/{named.name}", weights.sha256_of(named), named.stat().st_size
    )
    monkeypatch.setitem(weights.HUB, "resnet18", entry)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # auto must not warn when a verified file is there
        encoder = AudioEncoder(AudioConfig(weights="auto"))
    assert encoder.pretrained is True and torch.all(encoder.trunk[-1][1].conv2.weight == 0.125)


def test_explicit_weight_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.pt"
    torch.save(_marked_state(resnet18(), 0.25), path)
    encoder = VideoEncoder(VideoConfig(encoder="resnet18_2d", weights="none", weights_path=str(path)))
    assert encoder.pretrained and torch.all(encoder.trunk[-1][1].conv2.weight == 0.25)


def test_auto_without_weights_warns_and_flags(torch_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _offline(monkeypatch)
    with pytest.warns(PretrainedWeightsMissing, match="using RANDOM encoder weights"):
        model = Sec2Sec(replace(small_config(), audio=AudioConfig(weights="auto")))
    assert model.pretrained == {"video": False, "audio": False}


def test_pretrained_without_cache_or_network_says_where_and_how(
    torch_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _offline(monkeypatch)
    with pytest.raises(WeightsError) as err:
        AudioEncoder(AudioConfig(weights="pretrained"))
    message = str(err.value)
    assert str(torch_home / "resnet18-f37072fd.pth") in message and 'weights = "none"' in message


def test_wrong_weight_files(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        AudioEncoder(AudioConfig(weights_path=str(tmp_path / "nope.pt")))
    wrong = tmp_path / "wrong.pt"
    torch.save({"fc.weight": torch.zeros(3)}, wrong)
    with pytest.raises(WeightsError, match="do not fit ResNet"):
        AudioEncoder(AudioConfig(weights_path=str(wrong)))


def test_checkpoint_round_trip_rebuilds_the_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Sec2Sec(small_config("attention_lstm")).eval()
    path = tmp_path / "run" / "best.pt"
    save_checkpoint(path, model, trained=True, meta={"epoch": 3})
    loaded, ckpt = model_from_checkpoint(path)
    assert ckpt.config == model.config and ckpt.trained and ckpt.meta == {"epoch": 3}
    assert ckpt.pretrained == {"video": False, "audio": False}
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert not (tmp_path / "run" / "best.pt.tmp").exists()


def test_checkpoint_for_another_task_is_refused(tmp_path: Path) -> None:
    model = Sec2Sec(small_config())
    save_checkpoint(tmp_path / "c.pt", model, trained=False)
    traits = replace(model.config, heads=HeadsConfig(task="regression", outputs=("openness",)))
    with pytest.raises(CheckpointError) as err:
        model_from_checkpoint(tmp_path / "c.pt", expect=traits)
    assert "predicts binary ['valence', 'arousal'] but the config asks for regression ['openness']" in str(err.value)


class _Payload:
    def __reduce__(self) -> tuple:
        return (os.system, ("echo pwned",))


def test_bad_checkpoint_files(tmp_path: Path) -> None:
    model = Sec2Sec(small_config())
    good = tmp_path / "good.pt"
    save_checkpoint(good, model, trained=True)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = tmp_path / "text.pt"
    text.write_text("hello")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    evil, evil2 = tmp_path / "evil.pt", tmp_path / "evil2.pt"
    with open(evil, "wb") as f:
        pickle.dump({"format": "sec2sec-checkpoint", "x": _Payload()}, f)
    with open(evil2, "wb") as f:
        pickle.dump({"format": "sec2sec-checkpoint", "x": _Payload()}, f, protocol=2)
    cases = {
        tmp_path / "missing.pt": "does not exist",
        truncated: "is not a readable checkpoint",
        text: "is not a readable checkpoint",
        other: "not a sec2sec checkpoint",
        evil: "was refused: it is a pickle holding objects other than tensors",
        evil2: "unsupported GLOBAL posix.system",
    }
    for path, message in cases.items():
        with warnings.catch_warnings(), pytest.raises(CheckpointError) as err:
            warnings.simplefilter("error")  # the one-line error alone: no torch warning printed before it
            read_checkpoint(path)
        assert message in str(err.value) and "\n" not in str(err.value), path


def test_checkpoint_with_duplicate_tokens_is_refused_with_the_reason(tmp_path: Path) -> None:
    """A checkpoint made before the token grid was checked (2x2x2 at m = 8: half its video tokens copies)
    fails to load with a message naming token_grid and the map, not with a shape error."""
    model = Sec2Sec(small_config("lstm"))
    save_checkpoint(tmp_path / "old.pt", model, trained=True)
    payload = torch.load(tmp_path / "old.pt", weights_only=True)
    payload["config"]["video"]["token_grid"] = [2, 2, 2]
    torch.save(payload, tmp_path / "old.pt")
    with pytest.raises(CheckpointError) as err:
        model_from_checkpoint(tmp_path / "old.pt")
    message = str(err.value)
    assert "holds an invalid model config" in message and "token_grid = [2, 2, 2]" in message
    assert "(512, 1, 7, 7)" in message
