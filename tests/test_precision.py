"""Encoder precision: auto by capability, bfloat16 tokens within the stated bound of float32's, the parity
fallback, and the precision recorded in the sidecar and the feature cache."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.configs import TINY_ENCODERS_TOML
from helpers.synthetic_clips import FIRST_HALF_BEEP, MID_FLASH, Second, render, write_liris_tree, write_mp4

from sec2sec import precision
from sec2sec.config import AudioConfig, Config, ModelConfig, VideoConfig
from sec2sec.folded_trunk import FoldedConv, mkldnn_bf16_native
from sec2sec.model import Sec2Sec
from sec2sec.offline.extract import extract
from sec2sec.offline.features import load_features, read_index
from sec2sec.precision import (
    PARITY_BOUND,
    ParityBound,
    PrecisionFallbackWarning,
    agreement,
    bf16_native,
    encoder_agreement,
    precision_name,
    resolve_precision,
)
from sec2sec.stream import AffectStream, check_input
from sec2sec.windows import file_windows

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
SHIPPED = ["grid_speaker_0.6s.mp4", "carphone_qcif_no_audio.mp4", "single_face_vp9_opus.webm"]


@pytest.fixture
def native(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend the device computes bfloat16 natively (on a CPU without it oneDNN emulates it: same numbers)."""
    monkeypatch.setattr(precision, "bf16_native", lambda device: True)


def test_auto_resolves_by_capability(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(precision, "bf16_native", lambda device: True)
    assert resolve_precision("auto", CPU) == "bfloat16"
    assert resolve_precision("bfloat16", CPU) == "bfloat16"
    assert resolve_precision("float32", CPU) == "float32"
    monkeypatch.setattr(precision, "bf16_native", lambda device: False)
    assert resolve_precision("auto", CPU) == "float32"
    assert resolve_precision("float32", CPU) == "float32"
    with pytest.raises(
        ValueError, match=r"--precision bfloat16: this CPU .*would only emulate it.*use auto or float32"
    ):
        resolve_precision("bfloat16", CPU)
    with pytest.raises(ValueError, match=r"--precision 'float16' is not allowed; use one of auto, float32, bfloat16"):
        precision_name("float16")


def test_capability_is_asked_of_onednn_and_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        for answer in (True, False):
            mkldnn_bf16_native.cache_clear()  # oneDNN's answer is kept for the process
            monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda a=answer: a)
            monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, a=answer, **kw: a)
            assert bf16_native(CPU) is answer
            assert bf16_native(torch.device("cuda", 0)) is answer
        assert bf16_native(torch.device("meta")) is False
    finally:
        mkldnn_bf16_native.cache_clear()


@pytest.mark.parametrize("packed", [True, False], ids=["onednn", "conv2d"])
def test_folded_conv_in_bfloat16(packed: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Weights folded in float32, then cast: a bfloat16 activation gives the float32 result to bfloat16
    rounding, in bfloat16, through oneDNN's fused kernel and through plain conv2d alike."""
    from sec2sec import folded_trunk

    if not packed:
        monkeypatch.setattr(folded_trunk, "_packed_conv_available", lambda x: False)
    torch.manual_seed(0)
    conv, bn = torch.nn.Conv3d(16, 32, (1, 3, 3), padding=(0, 1, 1), bias=False), torch.nn.BatchNorm3d(32)
    bn.running_mean.uniform_(-0.5, 0.5), bn.running_var.uniform_(0.5, 2.0)
    conv.eval(), bn.eval()
    x, residual = torch.randn(2, 16, 4, 10, 10), torch.randn(2, 32, 4, 10, 10)
    with torch.no_grad():
        expected = FoldedConv(conv, bn, relu=True)(x, residual)
        got = FoldedConv(conv, bn, relu=True, dtype=torch.bfloat16)(x.bfloat16(), residual.bfloat16())
    assert got.dtype == torch.bfloat16 and got.shape == expected.shape
    assert agreement(got.float(), expected).relative_error < 0.01
    assert not torch.equal(got.float(), expected)


def _calibrate(model: Sec2Sec, frames: torch.Tensor, audio: torch.Tensor) -> None:
    """Pretrained-like BatchNorm statistics: each layer's running mean/variance set to the statistics of its
    actual inputs (cumulative average over one batch), so every layer's output is standardised as in a
    trained network, instead of random init's mean 0 / variance 1."""
    for module in model.modules():
        if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad():
        model.encode(frames, audio)
    model.eval()


def _inputs(config: ModelConfig) -> list[tuple[str, torch.Tensor | None, torch.Tensor | None]]:
    """The warm-up window, a generated clip's second and the first second of each shipped clip."""
    out = [("warm-up window", *check_input(config, CPU))]
    frames, audio = render([Second(flash=MID_FLASH, beep=FIRST_HALF_BEEP)], noise=0.02)
    m = config.video.frames_per_window
    picked = frames[np.linspace(0, len(frames) - 1, m).round().astype(int)]
    out.append(("generated", torch.from_numpy(picked)[None], torch.from_numpy(audio[: config.audio.sample_rate])[None]))
    for name in SHIPPED:
        windows, _ = file_windows(str(ROOT / "tests" / "data" / name), m, config.audio.sample_rate, config.video.resize)
        w = windows[0]
        video = None if w.frames is None else torch.from_numpy(w.frames)[None]
        out.append((name, video, torch.from_numpy(w.audio)[None] if w.audio_ok else None))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("weights", ["random", "pretrained-like"])
def test_bfloat16_tokens_agree_with_float32_within_the_bound(weights: str) -> None:
    """On the warm-up window, a generated clip and the shipped clips, both encoders' bfloat16 tokens are within
    PARITY_BOUND of float32's (and are not float32's: bfloat16 really ran), and leave the encoders float32."""
    torch.manual_seed(1)
    config = ModelConfig(video=VideoConfig(weights="none"), audio=AudioConfig(weights="none"))
    model = Sec2Sec(config).eval()
    inputs = _inputs(config)
    if weights == "pretrained-like":
        _calibrate(model, *inputs[0][1:])
    for name, frames, audio in inputs:
        found = encoder_agreement(model, frames, audio, "bfloat16")
        assert set(found) == {"video"} | ({"audio"} if audio is not None else set()), name
        for encoder, a in found.items():
            assert a.within(), (name, encoder, str(a))
            assert a.relative_error > 1e-4, (name, encoder, str(a))
        with torch.inference_mode():
            tokens = model.encode(frames, audio)
        assert tokens[0].dtype == torch.float32 and tokens[0].shape == (1, model.video_tokens, 512)
        assert model.video_encoder.compute_dtype == torch.bfloat16
        if weights == "pretrained-like":  # the network's own sensitivity: one rounding of its input already
            rounded = _input_rounding_error(model, frames)  # moves float32's tokens by ~5%
            assert found["video"].relative_error <= 4 * rounded, (name, str(found["video"]), rounded)


def _input_rounding_error(model: Sec2Sec, frames: torch.Tensor) -> float:
    """Relative change of float32 video tokens when only the encoder's input is rounded to bfloat16."""
    precision.set_precision(model, "float32")
    with torch.inference_mode():
        x = model.video_frontend(frames)
        exact, rounded = model.video_encoder(x), model.video_encoder(x.bfloat16().float())
    precision.set_precision(model, "bfloat16")
    return agreement(rounded, exact).relative_error


def _small_stream(prec: str) -> AffectStream:
    torch.manual_seed(0)
    config = ModelConfig(
        video=VideoConfig(weights="none", frames_per_window=4),
        audio=AudioConfig(weights="none"),
        clip_seconds=4,
    )
    return AffectStream(Sec2Sec(config), precision=prec)


def test_parity_fallback_warns_once_and_runs_float32(native: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bound bfloat16 cannot meet: one warning naming the figures, float32 encoders, float32's numbers."""
    monkeypatch.setattr(precision, "PARITY_BOUND", ParityBound(relative_error=1e-9, min_cosine=1.0))
    stream, reference = _small_stream("bfloat16"), _small_stream("float32")
    with pytest.warns(PrecisionFallbackWarning) as caught:
        stream.warm_up()
    assert len(caught) == 1
    assert "bfloat16 encoders disagree with float32 (video encoder relative error" in str(caught[0].message)
    assert str(caught[0].message).endswith("running in float32")
    assert stream.precision_used == "float32" and stream.model.video_encoder.compute_dtype == torch.float32
    window = stream.warm_up_window()
    assert stream.step(window).outputs == reference.step(window).outputs


def test_bfloat16_stream_passes_its_check(native: None) -> None:
    """Within the bound: no warning, bfloat16 encoders, estimates within 0.02 of float32's but not equal."""
    stream, reference = _small_stream("auto"), _small_stream("float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error", PrecisionFallbackWarning)
        stream.warm_up()
    assert stream.precision_used == "bfloat16" and stream.model.audio_encoder.compute_dtype == torch.bfloat16
    assert set(stream.parity) == {"video", "audio"} and all(a.within() for a in stream.parity.values())
    reference.warm_up()
    assert reference.precision_used == "float32" and reference.parity == {}
    window = stream.warm_up_window(120, 160)
    got, expected = stream.step(window).outputs, reference.step(window).outputs
    assert got != expected
    for key in expected:
        assert got[key] == pytest.approx(expected[key], abs=0.02)


def test_first_step_checks_the_precision_without_a_warm_up(native: None) -> None:
    stream = _small_stream("bfloat16")
    assert stream.precision_used is None
    stream.step(stream.warm_up_window())
    assert stream.precision_used == "bfloat16"


def test_sidecar_records_the_precision(small: Path, tmp_path: Path) -> None:
    csv = tmp_path / "out.csv"
    cmd = [sys.executable, "-m", "monitor.cli", "--replay", str(ROOT / "tests" / "data" / "grid_speaker_0.6s.mp4")]
    cmd += ["--config", str(small), "--clock", "offline", "--no-ui", "--csv", str(csv), "--precision", "auto"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=ROOT, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    sidecar = json.loads(Path(str(csv) + ".json").read_text())
    expected = resolve_precision("auto", CPU)
    assert sidecar["precision"] == expected and sidecar["precision_check"]["requested"] == "auto"
    if expected == "bfloat16":
        for encoder in ("video", "audio"):
            check = sidecar["precision_check"][encoder]
            assert 0 < check["relative_error"] <= PARITY_BOUND.relative_error
            assert check["min_cosine"] >= PARITY_BOUND.min_cosine


def test_failed_check_with_non_finite_tokens_keeps_the_csv_run(
    small: Path, tmp_path: Path, native: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bfloat16 check whose video tokens come out NaN (a broken kernel): the `--csv` run falls back to float32,
    records its rows and exits 0; the sidecar is strict JSON whose video figures are null with the reason."""
    from monitor import cli

    real = Sec2Sec.encode

    def broken_bfloat16(self: Sec2Sec, frames: torch.Tensor | None, audio: torch.Tensor | None) -> tuple:
        video, sound = real(self, frames, audio)
        if video is not None and self.video_encoder.compute_dtype == torch.bfloat16:
            video = torch.full_like(video, float("nan"))
        return video, sound

    monkeypatch.setattr(Sec2Sec, "encode", broken_bfloat16)
    csv = tmp_path / "out.csv"
    clip = ROOT / "tests" / "data" / "grid_speaker_0.6s.mp4"
    options = ["--config", str(small), "--clock", "offline", "--no-ui", "--csv", str(csv), "--precision", "bfloat16"]
    assert cli.main(["--replay", str(clip), *options]) == 0, capsys.readouterr().err
    warning = "warning: bfloat16 encoders disagree with float32 (video encoder relative error nan, worst token cosine"
    assert warning in capsys.readouterr().err
    refuse = {"parse_constant": lambda name: pytest.fail(f"the sidecar holds {name}, which is not JSON")}
    sidecar = json.loads(Path(str(csv) + ".json").read_text(), **refuse)
    assert sidecar["precision"] == "float32" and sidecar["precision_check"]["requested"] == "bfloat16"
    video, audio = sidecar["precision_check"]["video"], sidecar["precision_check"]["audio"]
    tokens = video["non_finite"]
    assert tokens > 0 and tokens % 512 == 0  # every value of every 512-wide token
    assert video == {
        "relative_error": None,
        "min_cosine": None,
        "non_finite": tokens,
        "reason": f"{tokens} of the checked precision's token values are NaN or infinite",
    }
    assert set(audio) == {"relative_error", "min_cosine"} and 0 < audio["relative_error"] < 0.25
    assert len(csv.read_text().splitlines()) >= 2  # the header and the clip's window


def test_bfloat16_without_native_support_is_a_usage_error(
    small: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused in one line, exit 2, before the model is built."""
    from monitor import assembly, cli

    monkeypatch.setattr(precision, "bf16_native", lambda device: False)
    monkeypatch.setattr(assembly, "model_for_run", lambda args: pytest.fail("the model was built"))
    clip = ROOT / "tests" / "data" / "grid_speaker_0.6s.mp4"
    code = cli.main(["--replay", str(clip), "--config", str(small), "--no-ui", "--precision", "bfloat16"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --precision bfloat16: this CPU (oneDNN reports no native bfloat16)"), err


TINY = (
    """
[model]
clip_seconds = 2
"""
    + TINY_ENCODERS_TOML
)


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Config]:
    from sec2sec.config import parse_config

    base = tmp_path_factory.mktemp("precision")
    rows = []
    for i in range(3):
        frames, audio = render([Second(flash=MID_FLASH), Second(beep=FIRST_HALF_BEEP)], noise=0.02, seed=i)
        write_mp4(base / "liris" / "data" / f"ACCEDE{i:05d}.mp4", frames, audio)
        rows.append((f"ACCEDE{i:05d}.mp4", f"film{i}", 1, 3.0, 3.0))
    write_liris_tree(base / "liris", rows)
    import tomllib

    return base / "liris", parse_config(tomllib.loads(TINY))


def test_feature_cache_records_its_precision_and_refuses_mixing(
    tiny_dataset: tuple[Path, Config], tmp_path: Path, native: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, config = tiny_dataset
    bf16 = extract("liris", root, tmp_path / "bf16", config, dtype="float32", workers=0, precision="auto")
    fp32 = extract("liris", root, tmp_path / "fp32", config, dtype="float32", workers=0, precision="float32")
    assert (bf16.precision, fp32.precision) == ("bfloat16", "float32")
    index = read_index(tmp_path / "bf16")
    assert index.precision == "bfloat16" and read_index(tmp_path / "fp32").precision == "float32"
    assert json.loads((tmp_path / "bf16" / "index.json").read_text())["precision"] == "bfloat16"
    ids = list(index.clips)
    a, b = (
        load_features(tmp_path / "bf16", index, ids),
        load_features(tmp_path / "fp32", read_index(tmp_path / "fp32"), ids),
    )
    assert agreement(a.video, b.video).relative_error < PARITY_BOUND.relative_error and not torch.equal(
        a.video, b.video
    )
    with pytest.raises(
        ValueError, match=r"was extracted with --precision bfloat16; resume it with --precision bfloat16"
    ):
        extract("liris", root, tmp_path / "bf16", config, dtype="float32", workers=0, precision="float32")
    again = extract("liris", root, tmp_path / "bf16", config, dtype="float32", workers=0, precision="auto")
    assert again.skipped == 3 and again.encoded == 0 and again.precision == "bfloat16"  # auto: the cache's own
    monkeypatch.setattr(precision, "bf16_native", lambda device: False)
    with pytest.raises(ValueError, match="would only emulate it"):
        extract("liris", root, tmp_path / "bf16", config, dtype="float32", workers=0, precision="auto")


def test_extract_falls_back_to_float32_when_the_check_fails(
    tiny_dataset: tuple[Path, Config], tmp_path: Path, native: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, config = tiny_dataset
    monkeypatch.setattr(precision, "PARITY_BOUND", ParityBound(relative_error=1e-9, min_cosine=1.0))
    with pytest.warns(PrecisionFallbackWarning):
        summary = extract("liris", root, tmp_path / "c", config, dtype="float32", workers=0, precision="bfloat16")
    assert summary.precision == "float32" and read_index(tmp_path / "c").precision == "float32"
    extract("liris", root, tmp_path / "r", config, dtype="float32", workers=0)
    index = read_index(tmp_path / "c")
    got = load_features(tmp_path / "c", index, list(index.clips))
    expected = load_features(tmp_path / "r", read_index(tmp_path / "r"), list(index.clips))
    assert torch.equal(got.video, expected.video) and torch.equal(got.audio, expected.audio)


def test_extract_command_takes_and_reports_the_precision(
    tiny_dataset: tuple[Path, Config], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sec2sec.commands import main

    root, _ = tiny_dataset
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    args = ["extract", "--dataset", "liris", "--root", str(root), "--config", str(config), "--workers", "0"]
    assert main([*args, "--out", str(tmp_path / "c"), "--precision", "float32"]) == 0
    assert "(6 windows, float32 encoders)" in capsys.readouterr().out.replace("\n", " ")
    assert read_index(tmp_path / "c").precision == "float32"
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--out", str(tmp_path / "d"), "--precision", "float16"])
    assert exit_info.value.code == 2
    assert "argument --precision: invalid choice: 'float16'" in capsys.readouterr().err


@pytest.mark.requires_cuda
def test_cuda_stream_in_bfloat16_passes_its_check() -> None:
    """On a GPU with bfloat16 (torch.cuda.is_bf16_supported) auto picks it; the folded trunk runs plain conv2d
    in bfloat16 there, within the bound, and the estimates stay within 0.02 of float32's."""
    device = torch.device("cuda", 0)
    expected = "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    torch.manual_seed(0)
    config = ModelConfig(video=VideoConfig(weights="none", frames_per_window=4), audio=AudioConfig(weights="none"))
    streams = {}
    for prec in ("auto", "float32"):
        torch.manual_seed(0)
        streams[prec] = AffectStream(Sec2Sec(config), device=device, precision=prec)
        streams[prec].warm_up()
    assert streams["auto"].precision_used == expected
    window = streams["auto"].warm_up_window()
    got, want = streams["auto"].step(window).outputs, streams["float32"].step(window).outputs
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=0.02)
