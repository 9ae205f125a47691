"""A feature cache + a config -> what training needs: three labelled splits and a model with the cache's encoders.

Splits are by film (official sets, or a seeded film-disjoint split), never by clip, and pinned: the assignment
is written into the cache folder when first made and reused (see `sec2sec.offline.splits`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from sec2sec.checkpoint import encoder_settings_mismatch, setting, without_weight_files
from sec2sec.config import Config, ModelConfig
from sec2sec.model import ENCODER_MODULES, Sec2Sec
from sec2sec.offline.datasets import ClipRecord, label_thresholds, labelled, labels, second_labels
from sec2sec.offline.features import CacheIndex, Features, load_features, read_encoders, read_index
from sec2sec.offline.splits import Assignment, apply_split, pinned_split


@dataclass(frozen=True)
class Split:
    """One split's clips: records, cached features, and targets (N, n_outputs) float32 (0/1 or scores).

    `seconds` (N, T, n_outputs) float32, only when the cache has per-second labels: each second's target
    (NaN where it has none); a clip without a trace has its clip target on its last second only."""

    records: list[ClipRecord]
    features: Features
    targets: torch.Tensor
    seconds: torch.Tensor | None = None


@dataclass(frozen=True)
class Prepared:
    """Everything `fit` needs: the cache index, the three splits, label thresholds (binary) and the
    training positive rate per output (for the majority baseline); `assignment` is the pinned split used."""

    index: CacheIndex
    splits: dict[str, Split]
    thresholds: dict[str, float] | None
    positive_rate: list[float] | None
    assignment: Assignment | None = None
    train_mean: list[float] | None = None  # regression: the training targets' mean (the baseline predictor)


def prepare(cache: str | Path, config: Config, split_mode: str, split_seed: int) -> Prepared:
    """Read the cache, split it by film (or officially) as pinned in the cache folder (pinning the split on
    first use; a cache changed since is refused), and label it; see `sec2sec.offline.datasets.labels`."""
    index = read_index(cache)
    _check_cache_config(index, config.model)
    assignment = pinned_split(cache, index.dataset, index.records(), split_mode, split_seed)
    records = apply_split(index.records(), assignment)
    heads = config.model.heads
    thresholds = None
    if heads.task == "binary":
        thresholds = label_thresholds(records, heads.outputs, config.train.label_threshold)
    traced = any(r.seconds for r in records)
    splits = {}
    for name in ("train", "validation", "test"):
        chosen = [r for r in records if r.split == name and labelled(r, heads.outputs)]  # withheld: never scored
        if not chosen and name != "test":
            raise ValueError(f"the {name} split of cache {cache} is empty; extract more clips or use --split film")
        y = torch.from_numpy(labels(chosen, heads.outputs, thresholds)) if chosen else torch.zeros(0)
        if heads.task == "regression" and chosen and (y.min() < 0 or y.max() > 1):
            raise ValueError(
                f"regression targets must lie in [0, 1]; the {name} split has {y.min():.3g}..{y.max():.3g}"
            )
        features = load_features(cache, index, [r.clip_id for r in chosen])
        seconds = per_second_targets(chosen, heads.outputs, thresholds, y, features) if traced else None
        splits[name] = Split(chosen, features, y, seconds)
    rate = splits["train"].targets.mean(dim=0).tolist() if thresholds is not None else None
    mean = splits["train"].targets.mean(dim=0).tolist() if thresholds is None else None
    return Prepared(index, splits, thresholds, rate, assignment, mean)


def per_second_targets(
    records: list[ClipRecord],
    outputs: tuple[str, ...],
    thresholds: dict[str, float] | None,
    clip_targets: torch.Tensor,
    features: Features,
) -> torch.Tensor:
    """(N, T, n_outputs) per-second targets (see `Split.seconds`); T = the cache's clip length (a trace
    longer than the clip is cut as the clip was)."""
    steps = features.video_ok.shape[1]
    seconds = torch.from_numpy(second_labels(records, outputs, thresholds, steps))
    for i, r in enumerate(records):
        if not r.seconds:
            seconds[i, int(features.lengths[i]) - 1] = clip_targets[i]
    return seconds


def _check_cache_config(index: CacheIndex, model: ModelConfig) -> None:
    key = encoder_settings_mismatch(index.config, model)
    if key is not None:
        raise ValueError(
            f"the cache was extracted with model.{key} = {setting(index.config, key)!r} but the config has "
            f"{setting(model, key)!r}; use the extraction's settings or extract again"
        )


def model_for_cache(config: Config, folder: str | Path, index: CacheIndex, train: Split | None) -> Sec2Sec:
    """The model of `config` with the cache's encoder weights and, given the training split, FeatureNorm
    statistics from its tokens. Seeded with `train.seed`, so the initial weights are reproducible."""
    torch.manual_seed(config.train.seed)
    model = Sec2Sec(without_weight_files(config.model))
    state = read_encoders(folder, index)
    for name in ENCODER_MODULES:
        module = getattr(model, name)
        if module is not None:
            module.load_state_dict(state[name])
            module.pretrained = index.pretrained.get(name.split("_")[0], False)
    if train is not None:
        set_norm_statistics(model, train.features)
    return model


def _token_statistics(tokens: torch.Tensor, ok: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per-channel mean and std over the valid windows of (N, T, n, 512) tokens (float64, in chunks)."""
    valid = ok & (torch.arange(ok.shape[1])[None, :] < lengths[:, None])
    total, square, count = torch.zeros(512, dtype=torch.float64), torch.zeros(512, dtype=torch.float64), 0
    for start in range(0, tokens.shape[0], 256):
        x = tokens[start : start + 256][valid[start : start + 256]].reshape(-1, 512).double()
        total, square, count = total + x.sum(0), square + (x * x).sum(0), count + x.shape[0]
    if count == 0:
        return torch.zeros(512), torch.ones(512)
    mean = total / count
    return mean.float(), (square / count - mean * mean).clamp_min(0).sqrt().float()


def set_norm_statistics(model: Sec2Sec, features: Features) -> None:
    """Standardise each token channel with the training split's statistics (FeatureNorm)."""
    if features.video is not None and model.fusion.use_video:
        model.fusion.video_norm.set_statistics(*_token_statistics(features.video, features.video_ok, features.lengths))
    if features.audio is not None and model.fusion.use_audio:
        model.fusion.audio_norm.set_statistics(*_token_statistics(features.audio, features.audio_ok, features.lengths))


DROP_SHARES = (0.4, 0.4, 0.2)  # of the dropped windows: video lost, audio lost, both lost (an empty second)


def drop_modalities(
    video_ok: torch.Tensor, audio_ok: torch.Tensor, p: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Modality dropout on (B, T) presence masks: each window that has both streams loses, with probability
    `p`, its video, its audio or both (shares `DROP_SHARES`), as --no-mic, a stalled camera or a dropped
    second do live. The model masks what is missing the same way in both places (`Fusion`)."""
    both = video_ok & audio_ok
    hit = (torch.rand(both.shape, generator=generator) < p) & both
    kind = torch.rand(both.shape, generator=generator)
    lose_video = hit & ((kind < DROP_SHARES[0]) | (kind >= DROP_SHARES[0] + DROP_SHARES[1]))
    lose_audio = hit & (kind >= DROP_SHARES[0])
    return video_ok & ~lose_video, audio_ok & ~lose_audio
