"""Temporal models over fused per-second features: a batch path (padded sequences + lengths) and a step
path (state in, state out) that give the same numbers on the same sequence.

Every model maps F (B, T, D) to a clip summary (B, out_width), plus per-second attribution weights
(B, T) where the model has them (attention-LSTM). The step path keeps at most `memory` past outputs
for the models that attend over the past, so a state carried for hours stays bounded.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from sec2sec.config import TemporalConfig

State = dict[str, Any]
Summary = tuple[torch.Tensor, torch.Tensor | None]


def valid_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """(B,) lengths -> (B, T) bool, True on the valid (non-padded) steps."""
    return torch.arange(steps, device=lengths.device)[None, :] < lengths[:, None]


def _check_lengths(x: torch.Tensor, lengths: torch.Tensor) -> None:
    if x.ndim != 3:
        raise ValueError(f"features must be (B, T, D); got shape {tuple(x.shape)}")
    if lengths.shape != (x.shape[0],) or int(lengths.min()) < 1 or int(lengths.max()) > x.shape[1]:
        raise ValueError(f"lengths must be (B,) integers in [1, {x.shape[1]}]; got {lengths.tolist()}")


def _run_rnn(rnn: nn.RNNBase, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, Any]:
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    out, hidden = rnn(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return out, hidden


def _remember(memory: torch.Tensor | None, item: torch.Tensor, limit: int) -> torch.Tensor:
    """Append (B, H) to memory (B, t, H), keeping the newest `limit` steps."""
    item = item[:, None, :]
    memory = item if memory is None else torch.cat([memory, item], dim=1)
    return memory[:, -limit:]


class TemporalModel(nn.Module, ABC):
    """What every temporal model offers: `forward(F (B, T, D), lengths (B,))` -> (summary (B, out_width),
    attribution (B, T) or None), and `step(F (B, D), state or None)` -> (summary, attribution over the
    remembered steps or None, the next state)."""

    out_width: int

    @abstractmethod
    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> Summary: ...

    @abstractmethod
    def step(self, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, torch.Tensor | None, State]: ...


class LstmTemporal(TemporalModel):
    """The paper's LSTM: the summary is the last valid hidden state of the top layer."""

    def __init__(self, width: int, config: TemporalConfig, memory: int) -> None:
        super().__init__()
        dropout = config.dropout if config.layers > 1 else 0.0
        self.rnn = nn.LSTM(width, config.hidden, config.layers, batch_first=True, dropout=dropout)
        self.out_width = config.hidden

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> Summary:
        _check_lengths(x, lengths)
        _, (h, _) = _run_rnn(self.rnn, x, lengths)
        return h[-1], None

    def step(self, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, torch.Tensor | None, State]:
        out, hidden = self.rnn(x[:, None, :], None if state is None else state["hidden"])
        return out[:, 0], None, {"hidden": hidden}


class AttentionLstmTemporal(TemporalModel):
    """LSTM + additive attention over its outputs: alpha_t = softmax(v . tanh(W o_t)), summary sum alpha_t o_t.

    alpha is the per-second contribution reported as attribution.
    """

    def __init__(self, width: int, config: TemporalConfig, memory: int) -> None:
        super().__init__()
        dropout = config.dropout if config.layers > 1 else 0.0
        self.rnn = nn.LSTM(width, config.hidden, config.layers, batch_first=True, dropout=dropout)
        self.score = nn.Sequential(nn.Linear(config.hidden, config.attention_width), nn.Tanh())
        self.v = nn.Linear(config.attention_width, 1, bias=False)
        self.memory = memory
        self.out_width = config.hidden

    def _attend(self, outputs: torch.Tensor, mask: torch.Tensor) -> Summary:
        scores = self.v(self.score(outputs)).squeeze(-1).masked_fill(~mask, float("-inf"))
        alpha = torch.softmax(scores, dim=1)
        return torch.einsum("bt,bth->bh", alpha, outputs), alpha

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> Summary:
        _check_lengths(x, lengths)
        outputs, _ = _run_rnn(self.rnn, x, lengths)
        return self._attend(outputs, valid_mask(lengths, x.shape[1]))

    def step(self, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, torch.Tensor | None, State]:
        out, hidden = self.rnn(x[:, None, :], None if state is None else state["hidden"])
        memory = _remember(None if state is None else state["memory"], out[:, 0], self.memory)
        mask = torch.ones(memory.shape[:2], dtype=torch.bool, device=memory.device)
        summary, alpha = self._attend(memory, mask)
        return summary, alpha, {"hidden": hidden, "memory": memory}


class GruTransformerTemporal(TemporalModel):
    """ABAW5 ERI model: a frame-to-frame GRU, then a transformer over the GRU states with a learned
    regression token prepended; the token's output is the summary. No positional embedding, so no
    maximum length; the step path recomputes the transformer over the remembered GRU states."""

    def __init__(self, width: int, config: TemporalConfig, memory: int) -> None:
        super().__init__()
        dropout = config.dropout if config.layers > 1 else 0.0
        self.rnn = nn.GRU(width, config.hidden, config.layers, batch_first=True, dropout=dropout)
        self.token = nn.Parameter(torch.randn(1, 1, config.hidden) * 0.02)
        layer = nn.TransformerEncoderLayer(
            config.hidden,
            config.transformer_heads,
            dim_feedforward=2 * config.hidden,
            dropout=config.dropout,
            batch_first=True,
            norm_first=True,
        )
        self.transformer = nn.TransformerEncoder(layer, config.transformer_layers, enable_nested_tensor=False)
        self.memory = memory
        self.out_width = config.hidden

    def _read(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        tokens = torch.cat([self.token.expand(states.shape[0], -1, -1), states], dim=1)
        pad = torch.cat([torch.zeros_like(mask[:, :1]), ~mask], dim=1)
        return self.transformer(tokens, src_key_padding_mask=pad)[:, 0]

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> Summary:
        _check_lengths(x, lengths)
        states, _ = _run_rnn(self.rnn, x, lengths)
        return self._read(states, valid_mask(lengths, x.shape[1])), None

    def step(self, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, torch.Tensor | None, State]:
        out, hidden = self.rnn(x[:, None, :], None if state is None else state["hidden"])
        memory = _remember(None if state is None else state["memory"], out[:, 0], self.memory)
        mask = torch.ones(memory.shape[:2], dtype=torch.bool, device=memory.device)
        return self._read(memory, mask), None, {"hidden": hidden, "memory": memory}


class MeanTemporal(TemporalModel):
    """No temporal model (the paper's ablation): the mean of the valid per-second features."""

    def __init__(self, width: int, config: TemporalConfig, memory: int) -> None:
        super().__init__()
        self.memory = memory
        self.out_width = width

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> Summary:
        _check_lengths(x, lengths)
        mask = valid_mask(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)
        return (x * mask).sum(dim=1) / mask.sum(dim=1), None

    def step(self, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, torch.Tensor | None, State]:
        memory = _remember(None if state is None else state["memory"], x, self.memory)
        return memory.mean(dim=1), None, {"memory": memory}


TEMPORAL_MODELS: dict[str, type[TemporalModel]] = {
    "lstm": LstmTemporal,
    "attention_lstm": AttentionLstmTemporal,
    "gru_transformer": GruTransformerTemporal,
    "none": MeanTemporal,
}


def build_temporal(width: int, config: TemporalConfig, memory: int) -> TemporalModel:
    """The temporal model named by `config.kind`, over features of `width`, remembering `memory` steps."""
    return TEMPORAL_MODELS[config.kind](width, config, memory)
