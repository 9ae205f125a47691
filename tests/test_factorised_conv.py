"""R(2+1)D's convolutions as 2D ones on channels-last views: the same numbers, parameters and gradients."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sec2sec.config import VideoConfig
from sec2sec.encoders import VideoEncoder
from sec2sec.factorised_conv import FactorisedConv3d, factorise_convs

CASES = [  # (in, out, kernel, stride, padding, input (B, C, T, H, W))
    (3, 45, (1, 7, 7), (1, 2, 2), (0, 3, 3), (2, 3, 5, 20, 18)),  # the stem's spatial conv, odd T
    (45, 64, (3, 1, 1), (1, 1, 1), (1, 0, 0), (2, 45, 5, 10, 9)),
    (64, 32, (1, 3, 3), (1, 2, 2), (0, 1, 1), (3, 64, 4, 11, 11)),  # spatial downsampling, odd size
    (32, 48, (3, 1, 1), (2, 1, 1), (1, 0, 0), (1, 32, 5, 6, 6)),  # temporal downsampling, odd T
    (16, 24, (1, 1, 1), (2, 2, 2), (0, 0, 0), (2, 16, 5, 7, 7)),  # the shortcut's strided 1x1x1
]


@pytest.mark.parametrize(("cin", "cout", "kernel", "stride", "padding", "shape"), CASES)
def test_output_equals_conv3d(cin: int, cout: int, kernel: tuple, stride: tuple, padding: tuple, shape: tuple) -> None:
    torch.manual_seed(0)
    reference = nn.Conv3d(cin, cout, kernel, stride=stride, padding=padding)
    holder = nn.Sequential(copy.deepcopy(reference))
    rng, weight = torch.get_rng_state(), holder[0].weight
    assert factorise_convs(holder) == 1
    assert torch.equal(torch.get_rng_state(), rng)  # no random init: seeded models built after stay the same
    assert holder[0].weight is weight  # the same Parameter (an optimiser holding it keeps working)
    factorised = holder[0]
    assert type(factorised) is FactorisedConv3d
    assert factorised.state_dict().keys() == reference.state_dict().keys()
    x = torch.randn(*shape)
    with torch.no_grad():
        expected, got = reference(x), factorised(x)
    assert got.shape == expected.shape
    assert got.is_contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_recording_autograd_runs_the_reference_convolution() -> None:
    """Fine-tuning through the encoder gets Conv3d's own gradients, bit for bit."""
    torch.manual_seed(1)
    reference = nn.Conv3d(8, 12, (3, 1, 1), padding=(1, 0, 0))
    holder = nn.Sequential(copy.deepcopy(reference))
    factorise_convs(holder)
    x = torch.randn(2, 8, 4, 5, 5)
    reference(x).square().sum().backward()
    holder(x).square().sum().backward()
    assert torch.equal(holder[0].weight.grad, reference.weight.grad)
    assert torch.equal(holder[0].bias.grad, reference.bias.grad)


def test_cached_kernel_follows_loaded_weights() -> None:
    """The channels-last kernel is cached, and rebuilt when load_state_dict changes the weight in place."""
    torch.manual_seed(2)
    holder = nn.Sequential(nn.Conv3d(4, 6, (1, 3, 3), padding=(0, 1, 1)))
    factorise_convs(holder)
    x = torch.randn(1, 4, 3, 6, 6)
    with torch.no_grad():
        before = holder(x)
        other = nn.Conv3d(4, 6, (1, 3, 3), padding=(0, 1, 1))
        holder[0].load_state_dict(other.state_dict())
        after = holder(x)
        expected = other(x)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, expected, atol=1e-5, rtol=1e-5)


def test_full_3d_kernels_stay_plain_convolutions() -> None:
    holder = nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.Conv3d(4, 4, (1, 3, 3), groups=2))
    assert factorise_convs(holder) == 0
    assert all(type(m) is nn.Conv3d for m in holder)


def test_video_encoder_equals_the_torchvision_trunk() -> None:
    """Every Conv3d of R(2+1)D-18 is factorised, the state dict is torchvision's, and the tokens match."""
    torch.manual_seed(3)
    encoder = VideoEncoder(VideoConfig(weights="none", frames_per_window=4)).eval()
    reference = copy.deepcopy(encoder)
    for module in reference.modules():
        if type(module) is FactorisedConv3d:
            module.__class__ = nn.Conv3d
    assert sum(type(m) is FactorisedConv3d for m in encoder.modules()) == 37
    ours, theirs = encoder.state_dict(), reference.state_dict()
    assert list(ours) == list(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)
    clip = torch.randn(2, 3, 4, 112, 112)
    with torch.inference_mode():
        tokens, expected = encoder(clip), reference(clip)
    assert tokens.shape == (2, 9, 512)  # the default 1x3x3 token grid
    torch.testing.assert_close(tokens, expected, atol=1e-4, rtol=1e-4)


def test_export_traces_the_2d_convolutions() -> None:
    """torch.export (what the AOTInductor packages are built from) records the 2D form: every convolution in
    the graph is a conv2d (no conv3d), and the exported program gives the 3D convolution's numbers."""
    torch.manual_seed(4)
    reference = nn.Sequential(
        nn.Conv3d(4, 6, (1, 3, 3), padding=(0, 1, 1)), nn.Conv3d(6, 5, (3, 1, 1), padding=(1, 0, 0))
    )
    holder = copy.deepcopy(reference).eval()
    factorise_convs(holder)
    x = torch.randn(2, 4, 3, 6, 6)
    with torch.no_grad():
        program = torch.export.export(holder, (x,))
        got, expected = program.module()(x), reference(x)
    convs = [str(n.target) for n in program.graph.nodes if n.op == "call_function" and "conv" in str(n.target)]
    assert convs == ["aten.conv2d.default", "aten.conv2d.default"]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
