"""One window of audio -> a 3-channel (MFCC, delta, delta-delta) image, with torchaudio on the model's device."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torchaudio
import torchaudio.functional as AF
from torch import nn

from sec2sec.config import AudioConfig


def check_audio(audio: torch.Tensor) -> None:
    """Refuse audio the front end cannot use, saying what was received and what is allowed."""
    if audio.ndim not in (1, 2):
        raise ValueError(f"audio must be mono samples (n,) or a batch (B, n); got shape {tuple(audio.shape)}")
    if audio.shape[-1] == 0:
        raise ValueError("audio is empty (0 samples); give at least one window of samples")
    if not torch.is_floating_point(audio):
        raise ValueError(f"audio must be float samples in [-1, 1]; got dtype {audio.dtype}")
    if not torch.isfinite(audio).all():
        raise ValueError("audio contains NaN or inf samples; give finite float samples in [-1, 1]")


class AudioFrontEnd(nn.Module):
    """(B, n) float audio at `config.sample_rate` -> (B, 3, n_mfcc, frames) float32 image.

    Channel 0 is the MFCC (librosa-compatible: Slaney mel bank, power dB with an 80 dB floor, orthonormal
    DCT-II), channels 1 and 2 its first and second regression deltas over `delta_win` frames.
    """

    def __init__(self, config: AudioConfig) -> None:
        super().__init__()
        self.config = config
        self.mfcc = torchaudio.transforms.MFCC(
            sample_rate=config.sample_rate,
            n_mfcc=config.n_mfcc,
            melkwargs={
                "n_fft": config.n_fft,
                "win_length": config.win_length,
                "hop_length": config.hop_length,
                "n_mels": config.n_mels,
                "center": True,
                "pad_mode": "constant",
                "norm": "slaney",
                "mel_scale": "slaney",
            },
        )

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        check_audio(audio)
        batch = audio.reshape(-1, audio.shape[-1]).float()
        mfcc = torch.stack([self.mfcc(x) for x in batch])  # per item: the 80 dB floor is per window
        delta = AF.compute_deltas(mfcc, win_length=self.config.delta_win, mode="replicate")
        delta2 = AF.compute_deltas(delta, win_length=self.config.delta_win, mode="replicate")
        return torch.stack([mfcc, delta, delta2], dim=1)


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """All of a file's audio as mono float32 (n,) at `sample_rate` (gaps filled with silence)."""
    from sec2sec.media import AudioChunk, MediaError, MediaReader

    with MediaReader(path, sample_rate=sample_rate) as reader:
        if not reader.info.has_audio:
            raise MediaError(f"{path}: the file has no audio stream")
        chunks = [c for c in reader if isinstance(c, AudioChunk)]
    if not chunks:
        raise MediaError(f"{path}: the audio stream decoded to no samples")
    out = np.zeros(max(c.end_sample for c in chunks), dtype=np.float32)
    for c in chunks:
        out[c.first_sample : c.end_sample] = c.samples
    return out


def audio_image(
    audio: np.ndarray | torch.Tensor | str | Path,
    config: AudioConfig,
    sample_rate: int | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """An array, tensor or file path -> (3, n_mfcc, frames) image of that audio.

    Arrays and tensors are mono samples at `sample_rate` (default: the model rate); multichannel arrays
    shaped (n, channels) are averaged to mono. Files are decoded with PyAV and resampled.
    """
    if isinstance(audio, (str, Path)):
        samples = torch.from_numpy(load_audio(audio, config.sample_rate))
    else:
        samples = torch.as_tensor(audio)
        if samples.ndim == 2:
            samples = samples.float().mean(dim=1)
        check_audio(samples)
        rate = sample_rate or config.sample_rate
        if rate != config.sample_rate:
            samples = AF.resample(samples.float(), rate, config.sample_rate)
    frontend = AudioFrontEnd(config).to(device)
    return frontend(samples.to(device))[0]
