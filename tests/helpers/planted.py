"""The planted-signal training tests' shared settings: official LIRIS-style set numbers, the training TOML and a
small model TOML (random encoders, a small fusion block), and TOML text -> dict."""

from __future__ import annotations

SETS = {"train": 1, "validation": 2, "test": 0}

TRAIN_TOML = """
[train]
epochs = {epochs}
batch_size = 16
lr = {lr}
weight_decay = 0.0
patience = {patience}
grad_clip = 1.0
seed = 0
loss = "bce"
label_threshold = "median"
"""


def model_toml(seconds: int, crop: int, width: int, dropout: float) -> str:
    return f"""
[model]
clip_seconds = {seconds}
[model.video]
resize = {crop}
crop = {crop}
weights = "none"
[model.audio]
weights = "none"
[model.fusion]
width = {width}
heads = 4
ff_width = {2 * width}
feature_width = {width}
dropout = {dropout}
[model.temporal]
hidden = 64
dropout = 0.0
transformer_heads = 4
[model.heads]
outputs = ["valence"]
"""


def toml_dict(text: str) -> dict:
    import tomllib

    return tomllib.loads(text)
