"""The model: real-token attention learns (query/key gradients, non-uniform maps), temporal models agree
between batch and step paths, and the assembled stream equals the batch forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.configs import small_config
from helpers.synthetic_windows import random_windows

from sec2sec.config import FusionConfig, TemporalConfig
from sec2sec.fusion import CoAttentionLayer, Dropout, Fusion, attend
from sec2sec.model import Sec2Sec
from sec2sec.stream import AffectStream
from sec2sec.temporal import build_temporal
from sec2sec.windows import Window

KINDS = ("lstm", "attention_lstm", "gru_transformer", "none")


def test_co_attention_gets_query_key_gradients_and_attends_unevenly() -> None:
    torch.manual_seed(0)
    fusion = Fusion(FusionConfig(width=64, heads=4, ff_width=128, dropout=0.0), (2, 2, 2), (4, 4))
    video, audio = torch.randn(3, 8, 512), torch.randn(3, 16, 512)
    fused, maps = fusion(video, audio, return_attention=True)
    fused.pow(2).sum().backward()
    layer: CoAttentionLayer = fusion.layers[0]
    for name in ("v", "a"):
        w = layer.cross_attn[name].in_proj_weight.grad
        q, k = w[:64], w[64:128]  # in_proj packs W_q, W_k, W_v
        assert q.abs().sum() > 0 and k.abs().sum() > 0
        w = layer.self_attn[name].in_proj_weight.grad
        assert w[:64].abs().sum() > 0 and w[64:128].abs().sum() > 0
    cross = maps[0]["video_to_audio"]
    assert cross.shape == (3, 8, 16)
    assert torch.allclose(cross.sum(-1), torch.ones(3, 8))
    assert (cross.max(-1).values - cross.min(-1).values).min() > 1e-3  # not uniform over the 16 audio tokens
    assert set(maps[0]) == {"self_v", "self_a", "video_to_audio", "audio_to_video"}


def test_late_fusion_pools_without_attention_and_masks_missing_modalities() -> None:
    torch.manual_seed(0)
    fusion = Fusion(FusionConfig(width=32, heads=2, mode="concat", dropout=0.0, feature_width=24), (1, 3, 3), (4, 4))
    fusion.eval()
    assert len(fusion.layers) == 0 and not any(isinstance(m, torch.nn.MultiheadAttention) for m in fusion.modules())
    video, audio = torch.randn(2, 9, 512), torch.randn(2, 16, 512)
    fused, maps = fusion(video, audio, return_attention=True)
    assert fused.shape == (2, 24) and maps == []
    shuffled = fusion(video[:, torch.randperm(9)], audio)  # mean pooling: token order does not matter
    assert torch.allclose(fused, shuffled, atol=1e-5)
    deaf = fusion(video, torch.randn(2, 16, 512), audio_ok=torch.tensor([False, True]))
    assert torch.allclose(deaf[0], fusion(video[:1], None)[0], atol=1e-5)
    assert not torch.allclose(deaf[1], fusion(video[1:], None)[0], atol=1e-3)


def test_sa_sa_has_no_cross_attention_and_single_modality_works() -> None:
    fusion = Fusion(FusionConfig(width=32, heads=2, mode="self"), (2, 2, 2), (4, 4))
    _, maps = fusion(torch.randn(1, 8, 512), torch.randn(1, 16, 512), return_attention=True)
    assert set(maps[0]) == {"self_v", "self_a"}
    audio_only = Fusion(FusionConfig(width=32, heads=2, modalities="audio", feature_width=40), (2, 2, 2), (4, 4))
    assert audio_only(None, torch.randn(2, 16, 512)).shape == (2, 40)


@pytest.mark.parametrize("cross", [False, True])
def test_attend_equals_torch_multihead_attention(cross: bool) -> None:
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(32, 4, dropout=0.1, batch_first=True).eval()
    query = torch.randn(3, 9, 32)
    key = torch.randn(3, 16, 32) if cross else query
    out, weights = attend(mha, query, key, Dropout(0.1).eval())
    expected, expected_weights = mha(query, key, key, need_weights=True)
    assert out.shape == (3, 9, 32) and weights.shape == (3, 9, key.shape[1])
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.allclose(weights, expected_weights, atol=1e-6)


def test_dropout_drops_p_scales_the_rest_and_repeats_with_the_seed() -> None:
    drop = Dropout(0.1)
    x = torch.ones(1000, 1000)
    torch.manual_seed(3)
    y = drop(x)
    assert abs(float((y == 0).float().mean()) - 0.1) < 0.002
    assert torch.all((y == 0) | torch.isclose(y, torch.tensor(1 / 0.9), atol=1e-4))
    torch.manual_seed(3)
    assert torch.equal(drop.residual(torch.full_like(x, 2.0), x), 2.0 + y)
    assert torch.equal(drop.eval()(x), x) and torch.equal(Dropout(0.0).train()(x), x)
    with pytest.raises(ValueError, match="dropout must be in"):
        Dropout(1.0)


@pytest.mark.parametrize("mode", ["co", "self", "concat"])
def test_a_batch_with_missing_modalities_equals_each_window_alone(mode: str) -> None:
    torch.manual_seed(0)
    fusion = Fusion(FusionConfig(width=32, heads=2, mode=mode, feature_width=24), (1, 3, 3), (4, 4)).eval()
    video, audio = torch.randn(4, 9, 512), torch.randn(4, 16, 512)
    video_ok, audio_ok = torch.tensor([True, True, False, False]), torch.tensor([True, False, True, False])
    fused = fusion(video, audio, video_ok, audio_ok)
    alone = [
        fusion(video[i : i + 1] if video_ok[i] else None, audio[i : i + 1] if audio_ok[i] else None)[0]
        for i in range(3)
    ] + [fusion(video[3:], audio[3:], video_ok[3:], audio_ok[3:])[0]]
    assert torch.allclose(fused, torch.stack(alone), atol=1e-5)
    assert torch.allclose(fused[3], fusion.project(torch.zeros(1, 64))[0], atol=1e-6)  # neither: FC(0)


def test_positions_make_token_order_matter() -> None:
    torch.manual_seed(0)
    fusion = Fusion(FusionConfig(width=32, heads=2, dropout=0.0), (2, 2, 2), (4, 4)).eval()
    video, audio = torch.randn(1, 8, 512), torch.randn(1, 16, 512)
    shuffled = video[:, torch.randperm(8)]
    assert not torch.allclose(fusion(video, audio), fusion(shuffled, audio), atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_temporal_step_path_equals_batch_path(kind: str) -> None:
    torch.manual_seed(0)
    model = build_temporal(16, TemporalConfig(kind=kind, hidden=24, transformer_heads=4, dropout=0.0), memory=7).eval()
    x = torch.randn(2, 7, 16)
    lengths = torch.tensor([7, 4])
    with torch.no_grad():
        batch, batch_weights = model(x, lengths)
        for b in range(2):
            state = None
            for t in range(int(lengths[b])):
                summary, weights, state = model.step(x[b : b + 1, t], state)
            assert torch.allclose(summary[0], batch[b], atol=1e-5)
            if kind == "attention_lstm":
                n = int(lengths[b])
                assert torch.allclose(weights[0], batch_weights[b, :n], atol=1e-5)
                assert torch.all(batch_weights[b, n:] == 0)


def test_padding_does_not_change_a_sequence() -> None:
    torch.manual_seed(0)
    model = build_temporal(8, TemporalConfig(kind="gru_transformer", hidden=16, dropout=0.0), memory=9).eval()
    x = torch.randn(1, 5, 8)
    padded = torch.cat([x, torch.randn(1, 4, 8)], dim=1)
    with torch.no_grad():
        short, _ = model(x, torch.tensor([5]))
        long, _ = model(padded, torch.tensor([5]))
    assert torch.allclose(short, long, atol=1e-5)


@pytest.mark.parametrize("kind", [k if k == "lstm" else pytest.param(k, marks=pytest.mark.slow) for k in KINDS])
def test_stepping_a_clip_equals_the_batch_forward(kind: str) -> None:
    torch.manual_seed(0)
    model = Sec2Sec(small_config(kind)).eval()
    windows = random_windows(5, model.config.video.frames_per_window)
    frames = torch.from_numpy(np.stack([w.frames for w in windows]))[None]
    audio = torch.from_numpy(np.stack([w.audio for w in windows]))[None]
    with torch.inference_mode():
        logits, weights = model(frames, audio, torch.tensor([5]))
    expected = torch.sigmoid(logits[0]).tolist()
    for horizon in (0, 6):
        stream = AffectStream(model, horizon=horizon)
        estimates = [stream.step(w) for w in windows]
        assert list(estimates[-1].outputs.values()) == pytest.approx(expected, abs=1e-5)
        if kind == "attention_lstm":
            assert estimates[-1].attribution == pytest.approx(weights[0].tolist(), abs=1e-5)
            assert len(estimates[2].attribution) == 3
        else:
            assert estimates[-1].attribution == ()


def test_horizon_limits_the_history() -> None:
    torch.manual_seed(0)
    model = Sec2Sec(small_config("lstm")).eval()
    windows = random_windows(5, model.config.video.frames_per_window)
    stream = AffectStream(model, horizon=2)
    last = [stream.step(w) for w in windows][-1]
    fresh = AffectStream(model, horizon=2)
    again = [fresh.step(w) for w in windows[3:]][-1]  # the same last two seconds, nothing before
    assert last.outputs == pytest.approx(again.outputs, abs=1e-6)


def test_missing_video_is_masked_and_flagged() -> None:
    """A window without video: its estimate depends on the audio alone (whatever the video tokens hold),
    and each window of a batch is masked on its own."""
    torch.manual_seed(0)
    model = Sec2Sec(small_config("lstm")).eval()
    (window,) = random_windows(1, model.config.video.frames_per_window)
    blind = Window(0, None, window.audio, 16_000, frames_seen=0, samples_seen=16_000)
    stream = AffectStream(model, horizon=0)
    estimate = stream.step(blind)
    assert not estimate.video_ok and estimate.audio_ok and estimate.frames == 0
    no = torch.tensor([False, False])
    with torch.inference_mode():
        _, audio_tokens = model.encode(None, torch.from_numpy(window.audio)[None])
        audio2 = audio_tokens.expand(2, -1, -1)
        junk = torch.randn(2, model.video_tokens, 512) * torch.tensor([1.0, 50.0])[:, None, None]
        masked = model.fuse(junk, audio2, video_ok=no)
        assert torch.allclose(masked[0], masked[1], atol=1e-6)  # video content does not reach F
        assert torch.allclose(stream.features(blind), masked[:1], atol=1e-6)
        mixed = model.fuse(junk, audio2, video_ok=torch.tensor([True, False]))
        assert torch.allclose(mixed[1], masked[1], atol=1e-6)
        assert not torch.allclose(mixed[0], masked[0], atol=1e-3)  # present video does reach F
        deaf = model.fuse(junk, audio2, audio_ok=no)
        assert torch.allclose(deaf, model.fuse(junk, None), atol=1e-6)
        empty = model.fuse(junk, audio2, video_ok=no, audio_ok=no)
        assert torch.allclose(empty, stream.empty_feature().expand(2, -1), atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ("lstm", "attention_lstm"))
def test_dropped_seconds_are_empty_steps_in_the_history(kind: str) -> None:
    """Windows 0, 1, 4 stepped live equal the batch forward over 5 seconds with seconds 2 and 3 empty
    (neither modality, as training sees such a second), for a horizon and for a carried state."""
    torch.manual_seed(0)
    model = Sec2Sec(small_config(kind)).eval()
    windows = random_windows(5, model.config.video.frames_per_window)
    frames = torch.from_numpy(np.stack([w.frames for w in windows]))[None]
    audio = torch.from_numpy(np.stack([w.audio for w in windows]))[None]
    present = torch.tensor([[True, True, False, False, True]])
    with torch.inference_mode():
        v, a = model.encode(frames[0], audio[0])
        logits, _ = model.forward_tokens(v[None], a[None], torch.tensor([5]), present, present)
        glued, _ = model.forward_tokens(v[None, [0, 1, 4]], a[None, [0, 1, 4]], torch.tensor([3]))
    expected = torch.sigmoid(logits[0]).tolist()
    assert expected != pytest.approx(torch.sigmoid(glued[0]).tolist(), abs=1e-4)
    for horizon in (0, 5, 6):
        stream = AffectStream(model, horizon=horizon)
        estimates = [stream.step(windows[i]) for i in (0, 1, 4)]
        assert estimates[-1].gap == 2
        assert list(estimates[-1].outputs.values()) == pytest.approx(expected, abs=1e-5)
        if kind == "attention_lstm" and horizon:
            assert len(estimates[-1].attribution) == 5


@pytest.mark.slow
def test_long_gaps_reset_the_carried_state_and_fill_the_horizon() -> None:
    torch.manual_seed(0)
    model = Sec2Sec(small_config("lstm")).eval()  # clip_seconds = 6
    windows = random_windows(3, model.config.video.frames_per_window)
    late = Window(**{**windows[2].__dict__, "index": 40})
    carried = AffectStream(model, horizon=0)
    carried.step(windows[0]), carried.step(windows[1])
    assert carried.step(late).outputs == pytest.approx(AffectStream(model, horizon=0).step(late).outputs, abs=1e-6)
    horizon = AffectStream(model, horizon=3)
    horizon.step(windows[0]), horizon.step(windows[1])
    after = horizon.step(late)
    fresh = AffectStream(model, horizon=3)
    fresh.step(Window(**{**windows[0].__dict__, "index": 37}))  # replaced by empty seconds 38, 39
    fresh._history.clear()
    empty = fresh.empty_feature()
    fresh._history.extend([empty[0], empty[0]])
    assert after.outputs == pytest.approx(fresh.step(late).outputs, abs=1e-6)
    assert after.gap == 38


def test_reset_forgets_and_gaps_are_counted() -> None:
    torch.manual_seed(0)
    model = Sec2Sec(small_config("lstm")).eval()
    windows = random_windows(4, model.config.video.frames_per_window)
    stream = AffectStream(model, horizon=0)
    first = stream.step(windows[0])
    jumped = stream.step(windows[3])
    assert jumped.gap == 2
    stream.reset()
    assert stream.step(windows[0]).outputs == pytest.approx(first.outputs, abs=1e-6)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"audio": np.zeros(8_000, dtype=np.float32)}, "window audio must be (16000,) float32"),
        ({"audio": np.full(16_000, np.nan, dtype=np.float32)}, "NaN or inf"),
        ({"sample_rate": 44_100}, "window audio is at 44100 Hz; this model takes 16000 Hz"),
        ({"frames": np.zeros((4, 32, 32, 3), dtype=np.float32)}, "window frames must be uint8 (m, H, W, 3)"),
        ({"frames": np.zeros((3, 32, 32, 3), dtype=np.uint8)}, "window has 3 frames; this model takes m = 4"),
        ({"frames": np.zeros((0, 32, 32, 3), dtype=np.uint8)}, "window has 0 frames"),
    ],
)
def test_bad_windows_are_refused(change: dict, message: str) -> None:
    model = Sec2Sec(small_config("lstm")).eval()
    (window,) = random_windows(1, 4)
    fields = {**window.__dict__, **change}
    with pytest.raises(ValueError) as err:
        AffectStream(model).step(Window(**fields))
    assert message in str(err.value)


def test_negative_horizon_is_refused() -> None:
    with pytest.raises(ValueError, match="horizon = -1; use 0"):
        AffectStream(Sec2Sec(small_config("none")), horizon=-1)
