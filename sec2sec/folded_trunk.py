"""A ResNet trunk for inference: each convolution with its BatchNorm folded in, its ReLU and residual fused.

Training keeps torchvision's modules (convolution, BatchNorm, ReLU, each its own pass over the activations).
In inference the BatchNorm statistics are constants, so each convolution + BatchNorm is one convolution with
scaled weights and a bias; the ReLU, and the residual sum of a block, run inside the convolution as oneDNN
post-ops on the CPU (one pass over each activation instead of three). The weights are reordered into oneDNN's
blocked layout once (per input shape) instead of at every call. R(2+1)D's 3D convolutions are spatial-only
(1, k, k) or temporal-only (k, 1, 1): with the activations stored channels-last (physically (B, T, H, W, C)),
each is a 2D convolution on a VIEW of the same memory, a spatial one over (B*T, C, H, W), a temporal one over
(B, C, T, H*W) with a (kt, 1) kernel; oneDNN's 2D kernels run these near the machine's matmul rate, its 3D
kernels ran the temporal ones at a quarter of it. Measured per window: docs/performance.md.

In bfloat16 (`sec2sec.precision`) the weights are folded in float32, then cast and packed once in bfloat16; the
activations run in bfloat16 through the same fused kernels and views (oneDNN's native bfloat16 where the CPU
has it), and the encoder turns the layer4 map back into float32.

The folded trunk is derived state, rebuilt from the encoder's own modules whenever their weights or statistics
change, or the compute dtype does (`FoldedCache`); the encoder's parameters, names and state dict are
untouched, and in float32 outputs equal the unfolded trunk's to float32 rounding (tests).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import is_in_torch_dispatch_mode
from torchvision.models.resnet import BasicBlock as BasicBlock2d
from torchvision.models.video.resnet import BasicBlock as BasicBlockVideo

_BLOCKS = (BasicBlock2d, BasicBlockVideo)
_BATCH_NORMS = (nn.BatchNorm2d, nn.BatchNorm3d)


@functools.cache
def mkldnn_bf16_native() -> bool:
    """Whether oneDNN computes bfloat16 natively on this CPU (AVX-512 BF16 or AMX); asked once per process,
    since every folded convolution's forward needs the answer."""
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _packed_conv_available(x: torch.Tensor) -> bool:
    """oneDNN's fused kernel: float32 on the CPU (bfloat16 where oneDNN computes it natively), run eagerly.
    Traced, or under a dispatch mode (FlopCounterMode for `sec2sec describe` and the benchmarks, fake
    tensors), the plain conv2d form runs."""
    native = mkldnn_bf16_native() if x.dtype == torch.bfloat16 else x.dtype == torch.float32
    return (
        native
        and x.device.type == "cpu"
        and torch.backends.mkldnn.is_available()
        and not torch.compiler.is_compiling()
        and not is_in_torch_dispatch_mode()
    )


class FoldedConv(nn.Module):
    """Convolution + BatchNorm (+ ReLU) (+ a residual added before the ReLU) as one 2D convolution.

    kind "2d": (B, C, H, W) -> (B, C', H', W'); "spatial" ((1, kh, kw) kernel) and "temporal" ((kt, 1, 1)):
    (B, C, T, H, W) -> (B, C', T', H', W'), computed on channels-last views of the 5D activations.
    `dtype`: the folded weights' (and so the activations') dtype; folding itself runs in the module's dtype.
    """

    def __init__(
        self,
        conv: nn.Conv2d | nn.Conv3d,
        bn: nn.BatchNorm2d | nn.BatchNorm3d,
        relu: bool,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        padding = conv.padding
        if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(padding, str):
            raise ValueError(f"cannot fold {conv}: only plain zero-padded, ungrouped convolutions")
        if bn.running_mean is None or bn.running_var is None:
            raise ValueError(f"cannot fold {bn}: it keeps no running statistics (track_running_stats=False)")
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = bn.bias - bn.running_mean * scale
        if conv.bias is not None:
            bias = bias + conv.bias * scale
        weight = conv.weight * scale.reshape(-1, *[1] * (conv.weight.dim() - 1))
        self.time_stride, self.relu = 1, relu
        if isinstance(conv, nn.Conv2d):
            self.kind, self.stride, self.padding = "2d", list(conv.stride), list(padding)
            self.dilation = list(conv.dilation)
        else:
            self.kind, weight = self._factorise(conv, weight, padding)
        self.weight = weight.detach().to(dtype).contiguous(memory_format=torch.channels_last)
        self.bias = bias.detach().to(dtype).contiguous()
        self._packed: tuple[tuple[int, ...], torch.Tensor] | None = None

    def _factorise(self, conv: nn.Conv3d, weight: torch.Tensor, padding: tuple[int, ...]) -> tuple[str, torch.Tensor]:
        """A (1, kh, kw) or (kt, 1, 1) Conv3d's 2D form: its kind and (C', C, kh, kw) or (C', C, kt, 1) kernel."""
        (kt, kh, kw), (st, sh, sw), (pt, ph, pw) = conv.kernel_size, conv.stride, padding
        if conv.dilation != (1, 1, 1):
            raise ValueError(f"cannot fold {conv}: dilated")
        if kt == 1 and pt == 0:
            self.time_stride, self.stride, self.padding, self.dilation = st, [sh, sw], [ph, pw], [1, 1]
            return "spatial", weight[:, :, 0]
        if (kh, kw) == (1, 1) and (ph, pw) == (0, 0) and (sh, sw) == (1, 1):
            self.stride, self.padding, self.dilation = [st, 1], [pt, 0], [1, 1]
            return "temporal", weight[..., 0]
        raise ValueError(f"cannot fold {conv}: kernel {conv.kernel_size} is neither (1, k, k) nor (k, 1, 1)")

    def _to_2d(self, x: torch.Tensor, time_stride: int = 1) -> torch.Tensor:
        """An activation (the input, or with time_stride 1 a residual shaped like the output) in the 2D
        convolution's layout: a view of channels-last memory (a copy if it is not channels-last)."""
        if self.kind == "2d":
            return x.contiguous(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last_3d)
        b, c, t, h, w = x.shape
        if self.kind == "temporal":
            return x.reshape(b, c, t, h * w)
        if time_stride > 1:
            x = x[:, :, ::time_stride].contiguous(memory_format=torch.channels_last_3d)
            t = x.shape[2]
        return x.transpose(1, 2).reshape(b * t, c, h, w)

    def _from_2d(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "2d":
            return y
        b, h, w = x.shape[0], x.shape[3], x.shape[4]
        if self.kind == "temporal":
            return y.reshape(b, y.shape[1], y.shape[2], h, w)
        return y.reshape(b, y.shape[0] // b, *y.shape[1:]).transpose(1, 2)

    def _packed_weight(self, x: torch.Tensor) -> torch.Tensor:
        """The kernel in oneDNN's layout for inputs shaped like x (the last shape's kept)."""
        shape = tuple(x.shape)
        if self._packed is None or self._packed[0] != shape:
            packed = torch.ops.mkldnn._reorder_convolution_weight(
                self.weight, self.padding, self.stride, self.dilation, 1, list(shape)
            )
            self._packed = (shape, packed)
        return self._packed[1]

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """x -> relu?(conv(x) * bn_scale + bn_shift [+ residual]), in x's dimensionality."""
        x2 = self._to_2d(x, self.time_stride)
        unary = "relu" if self.relu else "none"
        if _packed_conv_available(x2):
            conv = torch.ops.mkldnn._convolution_pointwise
            args = (self.padding, self.stride, self.dilation, 1)
            if residual is None:
                y = conv(x2, self._packed_weight(x2), self.bias, *args, unary, [], "")
            else:
                other = self._to_2d(residual)
                y = conv.binary(x2, other, self._packed_weight(x2), self.bias, *args, "add", None, unary, [], "")
        else:
            y = F.conv2d(x2, self.weight, self.bias, self.stride, self.padding, self.dilation)
            if residual is not None:
                y = y + self._to_2d(residual)
            if self.relu:
                y = F.relu(y)
        return self._from_2d(y, x)


class FoldedBlock(nn.Module):
    """A residual block: its convolutions in order, the last one adding the (downsampled) input and ReLU."""

    def __init__(self, convs: list[FoldedConv], downsample: FoldedConv | None) -> None:
        super().__init__()
        self.convs = nn.ModuleList(convs)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = x
        for conv in self.convs[:-1]:
            out = conv(out)
        return self.convs[-1](out, residual)


def _leaves(module: nn.Module) -> Iterator[nn.Module]:
    """The modules a Sequential runs, nested Sequentials flattened, residual blocks kept whole."""
    if isinstance(module, nn.Sequential) and not isinstance(module, _BLOCKS):
        for child in module:
            yield from _leaves(child)
    else:
        yield module


def _fold_run(modules: list[nn.Module], dtype: torch.dtype) -> list[nn.Module]:
    """Leaves in forward order -> folded stages: (conv, BatchNorm[, ReLU]) -> FoldedConv; max pooling kept."""
    stages: list[nn.Module] = []
    i = 0
    while i < len(modules):
        m, following = modules[i], modules[i + 1] if i + 1 < len(modules) else None
        if isinstance(m, _BLOCKS):
            stages.append(_fold_block(m, dtype))
            i += 1
        elif isinstance(m, (nn.MaxPool2d, nn.MaxPool3d)):
            stages.append(m)
            i += 1
        elif isinstance(m, (nn.Conv2d, nn.Conv3d)) and isinstance(following, _BATCH_NORMS):
            relu = i + 2 < len(modules) and isinstance(modules[i + 2], nn.ReLU)
            stages.append(FoldedConv(m, following, relu, dtype))
            i += 3 if relu else 2
        else:
            raise ValueError(f"cannot fold the trunk: unexpected {type(m).__name__} at position {i}")
    return stages


def _fold_block(block: BasicBlock2d | BasicBlockVideo, dtype: torch.dtype) -> FoldedBlock:
    if isinstance(block, BasicBlockVideo):
        main = [*_leaves(block.conv1), *_leaves(block.conv2)]
    else:
        main = [block.conv1, block.bn1, block.relu, block.conv2, block.bn2]
    stages = _fold_run(main, dtype)
    convs = [c for c in stages if isinstance(c, FoldedConv)]
    if len(convs) != len(stages) or convs[-1].relu:
        raise ValueError(f"cannot fold {type(block).__name__}: expected convolutions ending without a ReLU")
    convs[-1].relu = True  # the block's ReLU, after the residual sum
    downsample = None
    if block.downsample is not None:
        (folded,) = _fold_run(list(_leaves(block.downsample)), dtype)
        if not isinstance(folded, FoldedConv):
            raise ValueError(f"cannot fold {type(block).__name__}: its downsample is not a convolution + BatchNorm")
        downsample = folded
    return FoldedBlock(convs, downsample)


class FoldedTrunk(nn.Sequential):
    """The folded form of a torchvision ResNet trunk (stem, layer1..layer4), for inference only: it takes and
    gives activations in the dtype its weights were folded to."""

    @classmethod
    def of(cls, trunk: nn.Sequential, dtype: torch.dtype = torch.float32) -> FoldedTrunk:
        with torch.no_grad():
            return cls(*_fold_run(list(_leaves(trunk)), dtype))


StateKey = tuple[tuple[int, int | None, torch.device, torch.dtype], ...]


def _state_key(module: nn.Module) -> StateKey:
    """What the folded weights are made of: each tensor's storage, version and device (None: no version)."""
    key = []
    for t in (*module.parameters(), *module.buffers()):
        key.append((t.data_ptr(), None if t.is_inference() else t._version, t.device, t.dtype))
    return tuple(key)


class FoldedCache:
    """The folded form of one trunk in one compute dtype, remade when any of its weights or statistics changed
    (storage, version counter, device or dtype) or another compute dtype is asked for; tensors made under
    inference_mode have no version, so it is remade every call, and a warning says so once."""

    def __init__(self) -> None:
        self._key: tuple[torch.dtype, StateKey] | None = None
        self._folded: FoldedTrunk | None = None
        self._warned = False

    def __deepcopy__(self, memo: dict[int, Any]) -> FoldedCache:
        return FoldedCache()  # derived state (oneDNN's packed weights cannot be copied): made again on use

    def __getstate__(self) -> dict[str, Any]:
        return {"_key": None, "_folded": None, "_warned": False}

    def get(self, trunk: nn.Sequential, dtype: torch.dtype = torch.float32) -> FoldedTrunk:
        """The folded trunk for activations of `dtype`, remade first if stale."""
        key = (dtype, _state_key(trunk))
        versionless = any(k[1] is None for k in key[1])
        if versionless and not self._warned:
            self._warned = True
            warnings.warn(
                "the encoder's weights were made under torch.inference_mode (no version counter), so its folded "
                "trunk is folded again on every call; build the model outside inference_mode",
                stacklevel=3,
            )
        if self._folded is None or key != self._key or versionless:
            self._folded, self._key = FoldedTrunk.of(trunk, dtype), key
        return self._folded

    def clear(self) -> None:
        """Drop the folded weights (memory) until the next inference call."""
        self._key, self._folded = None, None
