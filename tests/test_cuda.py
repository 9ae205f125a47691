"""The same stream on a CUDA GPU gives the CPU's numbers (skipped without a GPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.configs import small_config

from sec2sec.devices import resolve_device
from sec2sec.model import Sec2Sec
from sec2sec.stream import AffectStream
from sec2sec.windows import Window


@pytest.mark.requires_cuda
def test_cuda_stream_matches_cpu() -> None:
    torch.manual_seed(0)
    model = Sec2Sec(small_config("gru_transformer")).eval()
    rng = np.random.default_rng(0)
    windows = [
        Window(
            i,
            rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8),
            rng.standard_normal(16_000).astype(np.float32) * 0.1,
            16_000,
            4,
            16_000,
        )
        for i in range(3)
    ]
    cpu_stream = AffectStream(model, device="cpu")
    cpu = [cpu_stream.step(w).outputs for w in windows]
    gpu_stream = AffectStream(model, device="cuda")  # moves the model to the GPU
    assert gpu_stream.device.type == "cuda"
    gpu = [gpu_stream.step(w).outputs for w in windows]
    for a, b in zip(gpu, cpu, strict=True):
        assert a == pytest.approx(b, abs=1e-3)


def test_cuda_without_a_gpu_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("cuda", "cuda:0"):
        with pytest.raises(ValueError, match=rf"--device {name}: no CUDA GPU is available here; use --device cpu"):
            resolve_device(name)
    assert resolve_device("auto").type == "cpu" and resolve_device("cpu").type == "cpu"
    for name in ("tpu", "cuda:", "cuda:x", "gpu0"):
        with pytest.raises(ValueError, match=rf"--device '{name}' is not allowed; use auto .*cpu, cuda or cuda:N"):
            resolve_device(name)


def test_device_names_on_a_two_gpu_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The one rule every command uses (the GPUs are pretended: a torch.device names a GPU without one)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert resolve_device("auto") == resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match="--device cuda:2: this machine has 2 CUDA GPU"):
        resolve_device("cuda:2")


def test_torchrun_ranks_take_their_local_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from sec2sec.offline.distributed import resolve_device as rank_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert rank_device("cuda:1") == torch.device("cuda", 1)  # one process: the plain rule
    for key, value in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(key, value)
    assert rank_device("auto") == rank_device("cuda") == torch.device("cuda", 1)
    assert rank_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="--device cuda:0 under torchrun would put every process on one GPU"):
        rank_device("cuda:0")
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(ValueError, match="more processes per node than the 2 GPU"):
        rank_device("cuda")
