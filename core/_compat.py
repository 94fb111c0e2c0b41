"""Compatibility import for CompressAI on a CPU-only PyTorch.

CompressAI 1.2.8 imports ``torchvision.transforms`` at package import time
(``compressai/registry/transforms.py``) for its dataset-transform registry.  The
PyPI torchvision that pip pairs with the local CPU build of ``torch==2.13.0``
fails at import (``operator torchvision::nms does not exist``: it links CUDA
libraries the CPU torch lacks), which would make ``import compressai`` fail.

Nothing of CompressAI's layers, entropy models or image models uses torchvision,
so when (and only when) the real import fails we register an empty
``torchvision`` / ``torchvision.transforms`` module before importing CompressAI.
The alternative, ``torch==2.14.1 torchvision==0.29.1``, is a ~5.5 GB CUDA build
for a package we never call.
"""
from __future__ import annotations

import importlib
import sys
import types


def import_compressai():
    """Import and return the ``compressai`` package, shimming torchvision if it is broken."""
    try:
        import torchvision.transforms  # noqa: F401
    except Exception:  # broken CUDA-linked wheel, or absent
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        tv = types.ModuleType("torchvision")
        tv.__path__ = []  # mark as a package
        transforms = types.ModuleType("torchvision.transforms")
        tv.transforms = transforms
        sys.modules["torchvision"] = tv
        sys.modules["torchvision.transforms"] = transforms
    return importlib.import_module("compressai")
