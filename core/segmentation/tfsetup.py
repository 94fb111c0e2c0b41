"""TensorFlow set-up for StarDist inside the benchmark process (next to PyTorch, on CPU).

Call :func:`configure_tensorflow` before any TensorFlow op runs: it limits TF's
thread pools (``BIOCODEC_TF_THREADS``, default 1 — the runner parallelises over
worker processes, and helpers share few cores) and, where a GPU exists, turns on
memory growth so TF never pre-allocates all GPU memory that PyTorch also needs.
"""
from __future__ import annotations

import os

_CONFIGURED = False


def configure_tensorflow(threads: int | None = None):
    """Import TensorFlow with bounded threads and GPU memory growth; return the module (idempotent)."""
    global _CONFIGURED
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    if _CONFIGURED:
        return tf
    n = int(threads if threads is not None else os.environ.get("BIOCODEC_TF_THREADS", "1"))
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(n)
    except RuntimeError:  # TF already initialised by someone else: keep its settings
        pass
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            pass
    _CONFIGURED = True
    return tf
