"""R(2+1)D's 3D convolutions computed as 2D convolutions on channels-last views, for inference.

Every Conv3d of R(2+1)D is spatial-only (kernel (1, k, k)) or temporal-only (kernel (k, 1, 1)). With the
activations stored channels-last (physically (B, T, H, W, C)), both are 2D convolutions on a VIEW of the same
memory: a spatial one over (B*T, C, H, W), a temporal one over (B, C, T, H*W) with a (k, 1) kernel. oneDNN's
2D kernels run these at about the machine's matmul rate, while its 3D kernels on the contiguous layout ran the
temporal (3, 1, 1) convolutions at a quarter of it (single thread, 8x112x112, `benchmarks/window_compute.py`):
the whole trunk is ~1.6x faster, eagerly and compiled (the AOTInductor package is built from this graph).

The parameters, their names and the state dict are those of `nn.Conv3d`; outputs equal the 3D convolution's to
float32 rounding. With autograd recording (fine-tuning through the encoder), the module runs `nn.Conv3d`'s own
forward: its gradients stay those of the reference implementation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FactorisedConv3d(nn.Conv3d):
    """A Conv3d with a (1, kh, kw) or (kt, 1, 1) kernel: (B, C, T, H, W) -> (B, C', T', H', W') channels-last."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._flat: tuple[tuple[int, int, torch.device], torch.Tensor] | None = None

    def factorisable(self) -> bool:
        """Spatial-only or temporal-only kernel, plain zero padding, no groups or dilation."""
        kt, kh, kw = self.kernel_size
        plain = self.groups == 1 and self.dilation == (1, 1, 1) and self.padding_mode == "zeros"
        if not plain or isinstance(self.padding, str):
            return False
        spatial = kt == 1 and self.padding[0] == 0
        temporal = (kh, kw) == (1, 1) and self.padding[1:] == (0, 0) and self.stride[1:] == (1, 1)
        return spatial or temporal

    def flat_weight(self) -> torch.Tensor:
        """The kernel as a 2D one, channels-last: (C', C, kh, kw) or (C', C, kt, 1). Cached while the weight's
        storage and version stay (load_state_dict and optimisers bump the version); traced afresh when compiling."""
        w = self.weight[:, :, 0] if self.kernel_size[0] == 1 else self.weight[..., 0]
        if torch.compiler.is_compiling():
            return w.contiguous(memory_format=torch.channels_last)
        version = -1 if self.weight.is_inference() else self.weight._version
        key = (self.weight.data_ptr(), version, self.weight.device)
        if self._flat is None or self._flat[0] != key or version == -1:
            self._flat = (key, w.detach().contiguous(memory_format=torch.channels_last))
        return self._flat[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        recording = torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)
        if recording or x.dim() != 5 or not self.factorisable():
            return super().forward(x)
        x = x.contiguous(memory_format=torch.channels_last_3d)
        b, c, t, h, w = x.shape
        st, sh, sw = self.stride
        if self.kernel_size[0] == 1:
            if st > 1:
                x = x[:, :, ::st].contiguous(memory_format=torch.channels_last_3d)
                t = x.shape[2]
            frames = x.transpose(1, 2).reshape(b * t, c, h, w)  # a view: channels-last (B*T, C, H, W)
            y = F.conv2d(frames, self.flat_weight(), self.bias, (sh, sw), self.padding[1:])
            return y.reshape(b, t, *y.shape[1:]).transpose(1, 2)
        columns = x.reshape(b, c, t, h * w)  # a view: channels-last (B, C, T, H*W)
        y = F.conv2d(columns, self.flat_weight(), self.bias, (st, 1), (self.padding[0], 0))
        return y.reshape(b, y.shape[1], y.shape[2], h, w)


def factorise_convs(module: nn.Module) -> int:
    """Replace every plain factorisable nn.Conv3d inside `module` by a FactorisedConv3d holding the same
    parameters (the same tensors: same names, same state dict, same device). Returns how many were replaced."""
    replaced = 0
    for name, child in module.named_children():
        if type(child) is nn.Conv3d:
            swapped = FactorisedConv3d(
                child.in_channels,
                child.out_channels,
                child.kernel_size,
                stride=child.stride,
                padding=child.padding,
                dilation=child.dilation,
                groups=child.groups,
                bias=child.bias is not None,
                padding_mode=child.padding_mode,
                device="meta",  # no storage, no random init (the default generator's stream stays as it was)
            )
            if swapped.factorisable():
                swapped.weight, swapped.bias = child.weight, child.bias
                setattr(module, name, swapped)
                replaced += 1
        else:
            replaced += factorise_convs(child)
    return replaced
