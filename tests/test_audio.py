"""Audio front end: every input kind gives the same image, it matches librosa, and a tone lands in its band."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from sec2sec.audio import AudioFrontEnd, audio_image, load_audio
from sec2sec.config import AudioConfig

CONFIG = AudioConfig()


def tone(freq: float, seconds: float = 1.0, rate: int = 16_000, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray((samples * 32767).astype(np.int16)[None], format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def test_shape_is_three_channels_by_mfcc_by_frames() -> None:
    image = audio_image(tone(440), CONFIG)
    assert image.shape == (3, 64, 101) and image.dtype == torch.float32
    assert CONFIG.frames_per_window == 101


def test_array_tensor_and_file_give_the_same_image(tmp_path: Path) -> None:
    samples = tone(440) + tone(1900, amplitude=0.2)
    path = tmp_path / "tone.wav"
    write_wav(path, samples, 16_000)
    from_array = audio_image(samples, CONFIG)
    from_tensor = audio_image(torch.from_numpy(samples), CONFIG)
    from_file = audio_image(path, CONFIG)
    assert torch.equal(from_array, from_tensor)
    # the file went through 16-bit PCM: equal up to quantisation (MFCCs span ~600 dB units)
    assert (from_array[0] - from_file[0]).abs().max() < 0.5
    assert (from_array[0] - from_file[0]).abs().mean() < 0.05


def test_other_sample_rates_are_resampled() -> None:
    at_16k = audio_image(tone(700), CONFIG)
    at_48k = audio_image(tone(700, rate=48_000), CONFIG, sample_rate=48_000)
    assert at_48k.shape == at_16k.shape
    interior = slice(3, -3)  # the first/last frames see the resampler's edge
    assert (at_16k[0][:, interior] - at_48k[0][:, interior]).abs().max() < 0.5


def test_mfcc_matches_librosa() -> None:
    librosa = pytest.importorskip("librosa")
    rng = np.random.default_rng(0)
    samples = (tone(300) + tone(2500, amplitude=0.1) + 0.01 * rng.standard_normal(16_000)).astype(np.float32)
    ours = AudioFrontEnd(CONFIG)(torch.from_numpy(samples)[None])[0]
    ref = librosa.feature.mfcc(
        y=samples,
        sr=16_000,
        n_mfcc=64,
        n_fft=512,
        win_length=400,
        hop_length=160,
        n_mels=128,
        center=True,
        pad_mode="constant",
        htk=False,
        norm="ortho",
    )
    assert ref.shape == tuple(ours[0].shape)
    np.testing.assert_allclose(ours[0].numpy(), ref, atol=2e-2, rtol=1e-3)
    delta = librosa.feature.delta(ref, width=9, order=1, mode="nearest")
    np.testing.assert_allclose(ours[1].numpy(), delta, atol=2e-2, rtol=1e-3)


def test_planted_tone_lands_in_its_mel_band() -> None:
    """Invert the DCT of the MFCC back to log-mel: the 1 kHz tone's band is the loudest."""
    librosa = pytest.importorskip("librosa")
    mfcc = AudioFrontEnd(AudioConfig(n_mfcc=128))(torch.from_numpy(tone(1000))[None])[0, 0]
    import scipy.fft

    log_mel = scipy.fft.idct(mfcc.numpy(), axis=0, type=2, norm="ortho")
    centres = librosa.mel_frequencies(n_mels=128 + 2, fmax=8000)[1:-1]
    loudest = int(np.argmax(log_mel[:, 10:-10].mean(axis=1)))
    assert abs(centres[loudest] - 1000) < 60, centres[loudest]


@pytest.mark.parametrize(
    ("audio", "message"),
    [
        (np.zeros(0, dtype=np.float32), "audio is empty"),
        (np.array([0.1, np.nan] * 800, dtype=np.float32), "NaN or inf"),
        (np.array([0.1, np.inf] * 800, dtype=np.float32), "NaN or inf"),
        (np.zeros((2, 3, 4), dtype=np.float32), "mono samples (n,) or a batch"),
        (np.zeros(1600, dtype=np.int16), "must be float samples"),
    ],
)
def test_bad_audio_is_refused(audio: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError) as err:
        AudioFrontEnd(CONFIG)(torch.from_numpy(audio))
    assert message in str(err.value)


def test_load_audio_from_a_real_file(media: Path) -> None:
    samples = load_audio(media / "audio" / "speech_8k_mono.wav", 16_000)  # 2.978 s of GRID speech at 8 kHz
    assert abs(samples.size - 2.978 * 16_000) < 16_000 * 0.05
    assert 0.01 < float(np.sqrt(np.mean(samples**2))) < 1.0
