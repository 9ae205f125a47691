"""sec2sec: the Sec2Sec co-attention transformer for one-second audio-visual windows.

The model library: configuration, media decoding, windowing, front ends, encoders, co-attention,
temporal models, heads, the streaming wrapper and checkpoints. No threads, no devices, no UI.
"""

__version__ = "0.1.0"
