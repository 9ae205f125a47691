"""Planted redundancy through the real extract -> train -> evaluate -> live path: the label is carried by the
video alone AND by the audio alone. A positive clip flashes the whole frame and plays a quiet 1 kHz tone
(amplitude 0.05 over a 0.02 noise floor) in every second, a negative one does neither: either stream
decides, but the flash is far easier to learn than the tone.

Trained with `train.modality_dropout`, the model must keep >= 90% with the audio removed and with the video
removed, in `evaluate --without` and live (windows as `--no-mic` / `--no-camera` give them); the same model
trained without modality dropout leans on the flash and must fall >= 15 points below it with a modality
removed (without the video, measured). A third of the validation clips are files without video and a third
files without audio, so early stopping (which otherwise stops at epoch 1, where the flash alone already
separates the full validation clips) chooses the epoch by how the model copes with a missing stream, as a
model meant to run with `--no-mic` should be chosen; both models are chosen that way. Features are
extracted once for the module.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers.planted import SETS, TRAIN_TOML, model_toml, toml_dict
from helpers.synthetic_clips import (
    FIRST_HALF_BEEP,
    FIRST_HALF_FLASH,
    SECOND_HALF_BEEP,
    SECOND_HALF_FLASH,
    Second,
    render,
    write_liris_tree,
    write_mp4,
)

from sec2sec.checkpoint import model_from_checkpoint
from sec2sec.config import Config, parse_config
from sec2sec.offline.evaluate import evaluate
from sec2sec.offline.extract import extract
from sec2sec.offline.train import fit
from sec2sec.stream import AffectStream
from sec2sec.windows import Window, file_windows

SECONDS = 2
QUIET = 0.05  # the tone's amplitude: 0.15 is learnt without dropout too, 0.03 not reliably even with it


def _redundant_seconds(rng: random.Random, positive: bool) -> list[Second]:
    """Positive: a flash and a quiet tone in every second (each in a random half); negative: neither."""
    if not positive:
        return [Second() for _ in range(SECONDS)]
    return [
        Second(
            flash=FIRST_HALF_FLASH if rng.random() < 0.5 else SECOND_HALF_FLASH,
            beep=FIRST_HALF_BEEP if rng.random() < 0.5 else SECOND_HALF_BEEP,
            loudness=QUIET,
        )
        for _ in range(SECONDS)
    ]


def _make_tree(root: Path, counts: dict[str, int], seed: int) -> Path:
    """Balanced labels per split, 4 clips per film; validation clips in pairs (one per label) cycle through
    complete files, files without a video stream and files without an audio stream."""
    rng, rows, k = random.Random(seed), [], 0
    for split, n in counts.items():
        for i in range(n):
            label = i % 2 == 0
            frames, audio = render(_redundant_seconds(rng, label), noise=0.02, seed=k)
            kind = (i // 2) % 3 if split == "validation" else 0
            name = f"ACCEDE{k:05d}.mp4"
            write_mp4(root / "data" / name, None if kind == 1 else frames, None if kind == 2 else audio)
            rows.append((name, f"{split}_film{i // 4}.mp4", SETS[split], 4.0 if label else 1.5, rng.uniform(1, 5)))
            k += 1
    return write_liris_tree(root, rows)


def _config(modality_dropout: float) -> Config:
    text = model_toml(SECONDS, 64, 64, 0.0) + TRAIN_TOML.format(epochs=20, lr=2e-3, patience=20)
    data = toml_dict(text)
    data["train"]["modality_dropout"] = modality_dropout
    data["train"]["batch_size"] = 8
    return parse_config(data)


@pytest.fixture(scope="module")
def redundant(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Path]]:
    """The dataset (40/24/20 clips of 2 s, 64 px, float32 cache) and two models trained on it: with modality
    dropout (0.5 here, above the default 0.3, so that 20 short epochs see enough missing windows) and without."""
    base = tmp_path_factory.mktemp("redundant")
    root = _make_tree(base / "liris", {"train": 40, "validation": 24, "test": 20}, seed=3)
    extract("liris", root, base / "cache", _config(0.0), dtype="float32", workers=1)
    runs = {
        name: fit(base / "cache", _config(p), base / name).best_path
        for name, p in (("dropout", 0.5), ("no_dropout", 0.0))
    }
    return root, base / "cache", runs


def _without(window: Window, modality: str) -> Window:
    """A window as a live run without that modality gives it (--no-mic: silence, no samples seen)."""
    if modality == "video":
        return replace(window, frames=None, frames_seen=0)
    return replace(window, audio=np.zeros_like(window.audio), samples_seen=0)


@pytest.mark.slow
def test_modality_dropout_keeps_either_modality_sufficient(redundant, capsys) -> None:
    _, cache, runs = redundant
    accuracy = {
        (name, without): evaluate(run, cache, "test", without=without).scores["valence"]["accuracy"]
        for name, run in runs.items()
        for without in ("", "video", "audio")
    }
    with capsys.disabled():
        print("\nredundant label, test accuracy (both / without video / without audio):")
        for name in runs:
            print(f"  {name:>10}: " + " / ".join(f"{accuracy[(name, w)]:.2f}" for w in ("", "video", "audio")))
    for without in ("", "video", "audio"):
        assert accuracy[("dropout", without)] >= 0.9, accuracy
    assert accuracy[("no_dropout", "")] >= 0.9, accuracy
    fall = max(accuracy[("dropout", w)] - accuracy[("no_dropout", w)] for w in ("video", "audio"))
    assert fall >= 0.15, accuracy  # without dropout the model leans on the flash


@pytest.mark.slow
@pytest.mark.parametrize("modality", ["audio", "video"])
def test_live_without_a_modality_reproduces_evaluate(redundant, modality: str) -> None:
    """Live windows without audio (--no-mic) or video (--no-camera) give evaluate --without's numbers."""
    root, cache, runs = redundant
    result = evaluate(runs["dropout"], cache, "test", without=modality)
    model, _ = model_from_checkpoint(runs["dropout"])
    for k in (0, 1):
        path = root / "data" / f"{result.ids[k]}.mp4"
        windows, _ = file_windows(str(path), 8, 16_000, model.config.video.resize)
        stream = AffectStream(model, horizon=SECONDS)
        estimates = [stream.step(_without(w, modality)) for w in windows[:SECONDS]]
        assert not getattr(estimates[-1], f"{modality}_ok")
        assert estimates[-1].outputs["valence"] == pytest.approx(float(result.probabilities[k, 0]), abs=1e-5)


def test_evaluate_refuses_an_unknown_modality(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="without = 'sound' is not allowed; use video or audio"):
        evaluate(tmp_path / "x.pt", tmp_path, "test", without="sound")


def test_modality_dropout_shares_and_untouched_windows() -> None:
    """p = 1 drops every window that has both streams: ~40% lose video, ~40% audio, ~20% both; windows
    already missing a modality are left as they are; p = 0 changes nothing."""
    import torch

    from sec2sec.offline.prepared import drop_modalities

    video_ok = torch.ones(200, 50, dtype=torch.bool)
    audio_ok = torch.ones(200, 50, dtype=torch.bool)
    audio_ok[:, 0] = False
    gen = torch.Generator().manual_seed(0)
    v, a = drop_modalities(video_ok, audio_ok, 1.0, gen)
    assert v[:, 0].all() and not a[:, 0].any()  # no second stream to lose: untouched
    rest_v, rest_a = v[:, 1:], a[:, 1:]
    assert not (rest_v & rest_a).any()
    shares = [float(x.float().mean()) for x in (~rest_v & rest_a, rest_v & ~rest_a, ~rest_v & ~rest_a)]
    assert shares == pytest.approx([0.4, 0.4, 0.2], abs=0.02)
    same = drop_modalities(video_ok, audio_ok, 0.0, gen)
    assert torch.equal(same[0], video_ok) and torch.equal(same[1], audio_ok)


def test_finetune_applies_modality_dropout(monkeypatch: pytest.MonkeyPatch) -> None:
    """--finetune drops modalities like the cached path: the windows its forward sees are the epoch's seeded
    draw of `with_modality_dropout` (about p of the two-stream windows lose something), and p = 0 drops none.
    Decoding and encoding are replaced by fakes so that only the training step runs."""
    import torch

    from sec2sec.model import Sec2Sec
    from sec2sec.offline import train
    from sec2sec.offline.datasets import ClipRecord
    from sec2sec.offline.decoding import DecodedClip
    from sec2sec.offline.features import Features
    from sec2sec.offline.prepared import Split

    n = 96
    records = [ClipRecord(f"c{i}", Path(f"c{i}.mp4"), f"film{i}", "train", {}) for i in range(n)]
    present = torch.ones(n, SECONDS, dtype=torch.bool)
    present[:4, 1] = False  # a window without video in the cache stays without video
    cached = Features([r.clip_id for r in records], None, None, present, torch.ones_like(present), torch.full((n,), 2))
    clips = {
        r.clip_id: DecodedClip(r.clip_id, None, None, present[i], torch.ones(SECONDS, dtype=torch.bool), 2, 2)
        for i, r in enumerate(records)
    }
    monkeypatch.setattr(train, "clip_loader", lambda chosen, config, workers: [clips[r.clip_id] for r in chosen])
    seen: list[tuple[list[str], torch.Tensor, torch.Tensor]] = []

    def spy(model: Sec2Sec, features: Features, rows: torch.Tensor) -> torch.Tensor:
        seen.append((features.ids, features.video_ok.clone(), features.audio_ok.clone()))
        return torch.zeros(len(rows), 1, requires_grad=True)

    def tokens(m: Sec2Sec, clip: DecodedClip, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(SECONDS, m.video_tokens, 512), torch.zeros(SECONDS, m.audio_tokens, 512)

    monkeypatch.setattr(train, "logits_of", spy)
    monkeypatch.setattr(train, "encode_clip", tokens)
    model = Sec2Sec(_config(0.0).model)
    for p in (0.5, 0.0):
        config = _config(p)
        split = Split(records, cached, torch.zeros(n, 1))
        seen.clear()
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        train.finetune_epoch(model, optimizer, split, config.train, 3)
        expected = train.with_modality_dropout(model, cached, config.train, 3)
        position = {cid: i for i, cid in enumerate(cached.ids)}
        video = torch.zeros_like(present)
        audio = torch.zeros_like(present)
        for ids, v, a in seen:
            index = torch.tensor([position[c] for c in ids])
            video[index], audio[index] = v, a
        assert sum(len(ids) for ids, _, _ in seen) == n
        assert torch.equal(video, expected.video_ok) and torch.equal(audio, expected.audio_ok)
        assert not video[:4, 1].any()
        dropped = float((~(video & audio))[present].float().mean())
        assert dropped == (pytest.approx(0.5, abs=0.1) if p else 0.0), dropped
