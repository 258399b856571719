"""Training support: checkpoints (``checkpoint``) and data parallelism (``distributed``).

The training loop itself is ``fmuia_lib.train``.
"""
