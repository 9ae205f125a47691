"""Folded trunks: convolution + BatchNorm (+ ReLU, + residual) as one convolution, in inference only."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sec2sec import folded_trunk
from sec2sec.config import AudioConfig, VideoConfig
from sec2sec.encoders import AudioEncoder, VideoEncoder
from sec2sec.folded_trunk import FoldedConv, FoldedTrunk
from sec2sec.stages import count_flops

CASES_3D = [  # (in, out, kernel, stride, padding, input (B, C, T, H, W))
    (3, 45, (1, 7, 7), (1, 2, 2), (0, 3, 3), (2, 3, 5, 20, 18)),  # the stem's spatial conv, odd T
    (45, 64, (3, 1, 1), (1, 1, 1), (1, 0, 0), (2, 45, 5, 10, 9)),
    (64, 32, (1, 3, 3), (1, 2, 2), (0, 1, 1), (3, 64, 4, 11, 11)),  # spatial downsampling, odd size
    (32, 48, (3, 1, 1), (2, 1, 1), (1, 0, 0), (1, 32, 5, 6, 6)),  # temporal downsampling, odd T
    (16, 24, (1, 1, 1), (2, 2, 2), (0, 0, 0), (2, 16, 5, 7, 7)),  # the shortcut's strided 1x1x1
]
CASES_2D = [
    (3, 16, (7, 7), (2, 2), (3, 3), (2, 3, 23, 30)),  # ResNet stem, odd sizes
    (16, 16, (3, 3), (1, 1), (1, 1), (1, 16, 9, 14)),
    (16, 32, (1, 1), (2, 2), (0, 0), (3, 16, 9, 9)),  # shortcut
]


def _random_statistics(module: nn.Module, seed: int) -> None:
    """BatchNorm statistics and affine parameters far from the identity, so folding them is really tested."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.3)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)


def _reference(conv: nn.Module, bn: nn.Module, x: torch.Tensor, residual: torch.Tensor | None, relu: bool):
    y = bn(conv(x))
    y = y if residual is None else y + residual
    return F.relu(y) if relu else y


@pytest.mark.parametrize("packed", [True, False], ids=["onednn", "conv2d"])
@pytest.mark.parametrize("with_residual", [False, True])
@pytest.mark.parametrize("case", CASES_3D + CASES_2D)
def test_folded_conv_equals_conv_batchnorm_relu(
    case: tuple, with_residual: bool, packed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """oneDNN's fused kernel (CPU) and the plain conv2d form (other devices, and what gets traced) both give
    the reference's numbers, with and without the residual, in the input's dimensionality and layout."""
    cin, cout, kernel, stride, padding, shape = case
    torch.manual_seed(0)
    conv_type, bn_type = (nn.Conv3d, nn.BatchNorm3d) if len(kernel) == 3 else (nn.Conv2d, nn.BatchNorm2d)
    conv, bn = conv_type(cin, cout, kernel, stride=stride, padding=padding, bias=False), bn_type(cout)
    _random_statistics(bn, 1)
    conv.eval(), bn.eval()
    if not packed:
        monkeypatch.setattr(folded_trunk, "_packed_conv_available", lambda x: False)
    x = torch.randn(*shape)
    with torch.no_grad():
        out_shape = conv(x).shape
        residual = torch.randn(out_shape) if with_residual else None
        expected = _reference(conv, bn, x, residual, relu=True)
        got = FoldedConv(conv, bn, relu=True)(x, residual)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-5)
    assert got.min() >= 0  # the ReLU ran


def test_folding_rejects_convolutions_it_cannot_express() -> None:
    bn = nn.BatchNorm3d(4)
    with pytest.raises(ValueError, match=r"neither \(1, k, k\) nor \(k, 1, 1\)"):
        FoldedConv(nn.Conv3d(3, 4, 3, padding=1), bn, relu=False)
    with pytest.raises(ValueError, match="ungrouped"):
        FoldedConv(nn.Conv2d(4, 4, 3, groups=2), nn.BatchNorm2d(4), relu=False)
    with pytest.raises(ValueError, match="unexpected Linear"):
        FoldedTrunk.of(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 4)))


ENCODERS = {
    "r2plus1d_18": (lambda: VideoEncoder(VideoConfig(weights="none", frames_per_window=4)), (2, 3, 4, 112, 112)),
    "resnet18_2d": (
        lambda: VideoEncoder(VideoConfig(weights="none", frames_per_window=2, encoder="resnet18_2d")),
        (2, 3, 2, 112, 112),
    ),
    "audio resnet18": (lambda: AudioEncoder(AudioConfig(weights="none")), (2, 3, 64, 101)),
}


def _unfolded_tokens(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The same encoder's tokens through torchvision's own modules (folding switched off)."""
    plain = copy.deepcopy(encoder)
    # object.__setattr__: nn.Module's own would register the trunk as a submodule named run_trunk, and the
    # class's method would still be found first (the folded path compared with itself)
    object.__setattr__(plain, "run_trunk", plain.trunk)
    assert plain.run_trunk is plain.trunk
    return plain(x)


@pytest.mark.parametrize("name", list(ENCODERS))
def test_encoder_tokens_equal_the_torchvision_trunk(name: str) -> None:
    """Every convolution of the trunk is folded (BatchNorm and ReLU gone from the inference path), the state
    dict is torchvision's (checkpoints unchanged), and the tokens match the unfolded trunk's."""
    make, shape = ENCODERS[name]
    torch.manual_seed(3)
    encoder = make().eval()
    _random_statistics(encoder, 2)
    keys = list(encoder.state_dict())
    x = torch.randn(*shape)
    with torch.inference_mode():
        tokens = encoder(x)
    with torch.no_grad():  # the copy's weights must not be inference tensors (no version: folded every call)
        expected = _unfolded_tokens(encoder, x)
    folded = encoder._folded.get(encoder.trunk)
    convs = sum(isinstance(m, (nn.Conv2d, nn.Conv3d)) for m in encoder.trunk.modules())
    assert sum(isinstance(m, FoldedConv) for m in folded.modules()) == convs
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d, nn.ReLU)) for m in folded.modules())
    assert list(encoder.state_dict()) == keys and not any("_folded" in k for k in keys)
    torch.testing.assert_close(tokens, expected, atol=1e-4, rtol=1e-4)


def test_folded_weights_follow_loaded_weights_and_statistics() -> None:
    """The folded trunk is cached, and made again when load_state_dict (or an optimiser) changes the weights
    or the BatchNorm statistics in place."""
    torch.manual_seed(4)
    encoder = AudioEncoder(AudioConfig(weights="none")).eval()
    other = AudioEncoder(AudioConfig(weights="none")).eval()
    _random_statistics(other, 5)
    x = torch.randn(1, 3, 64, 101)
    with torch.no_grad():
        before = encoder(x)
        assert encoder._folded.get(encoder.trunk) is encoder._folded.get(encoder.trunk)  # made once, reused
        assert torch.equal(encoder(x), before)
        encoder.load_state_dict(other.state_dict())
        after, expected = encoder(x), _unfolded_tokens(other, x)
    assert not torch.allclose(before, after, atol=1e-3)
    torch.testing.assert_close(after, expected, atol=1e-4, rtol=1e-4)
    encoder.clear_folded()
    assert encoder._folded._folded is None


def test_training_and_fine_tuning_run_torchvision_modules() -> None:
    """With autograd recording (fine-tuning, BatchNorm frozen in eval mode) or in training mode, the trunk is
    torchvision's own: gradients reach the convolutions and BatchNorm, and training updates the statistics."""
    torch.manual_seed(5)
    encoder = VideoEncoder(VideoConfig(weights="none", frames_per_window=4)).eval()
    x = torch.randn(1, 3, 4, 112, 112)
    encoder(x).square().mean().backward()
    conv, bn = encoder.trunk[0][0], encoder.trunk[0][1]
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    assert bn.weight.grad is not None and bn.weight.grad.abs().sum() > 0
    assert encoder._folded._folded is None  # nothing folded on the way
    encoder.train()
    mean_before = bn.running_mean.clone()
    with torch.no_grad():
        encoder(x)
    assert not torch.equal(bn.running_mean, mean_before)


def test_flop_counting_sees_the_folded_convolutions() -> None:
    """`sec2sec describe` and the benchmarks count FLOPs with FlopCounterMode, which cannot see oneDNN's
    fused kernel: under a dispatch mode the folded trunk runs as conv2d, and counts the trunk's FLOPs."""
    encoder = VideoEncoder(VideoConfig(weights="none", frames_per_window=8)).eval()
    clip = torch.randn(1, 3, 8, 112, 112)
    with torch.inference_mode():
        folded, _ = count_flops(encoder, clip)
        unfolded, _ = count_flops(encoder.trunk, clip)
    assert folded == pytest.approx(unfolded, rel=1e-6)
    assert folded == pytest.approx(40.5, abs=0.1)  # R(2+1)D-18 at 8 x 112 x 112


def test_weights_made_under_inference_mode_are_refolded_with_one_warning() -> None:
    """Inference tensors have no version counter, so the cache cannot tell whether they changed: it folds again
    on every call (correct, slow) and says so once, naming the fix."""
    with torch.inference_mode():
        encoder = AudioEncoder(AudioConfig(weights="none")).eval()
        x = torch.randn(1, 3, 64, 101)
        with pytest.warns(UserWarning, match="made under torch.inference_mode") as caught:
            first, second = encoder._folded.get(encoder.trunk), encoder._folded.get(encoder.trunk)
        assert first is not second and len(caught) == 1
        torch.testing.assert_close(encoder(x), _unfolded_tokens(encoder, x), atol=1e-4, rtol=1e-4)
