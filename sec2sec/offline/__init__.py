"""The offline half: datasets as shipped, the feature cache, extract / train / evaluate / compare, metrics.

Nothing here runs in the live loop; `monitor` never imports it. Scale out with
`torchrun --nproc_per_node N -m sec2sec ...`.
"""
