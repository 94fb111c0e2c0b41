"""Start a model with wider image transforms from a trained narrower one, computing the same function.

Issue #11: the gray EM codecs stop near 30–31 dB at the top of their ladder, and a four-times larger top λ
moves that by 0.4 dB, which points at the N = 64 image transforms.  Training a wider model from scratch throws
away the ~58,000 steps the narrow one has had; instead the narrow network is embedded in the wider one
(Net2Net-style, Chen et al. 2016, "Net2Net: accelerating learning via knowledge transfer"):

* every tensor of the narrow checkpoint is copied into the leading slice of the wide one;
* the **new channels' outgoing weights are zero** — in the next convolution the rows of the old output
  channels that read new input channels (a ``Conv2d`` weight is ``[out, in, k, k]``, a ``ConvTranspose2d``
  weight ``[in, out, k, k]``), and in GDN the cross terms ``γ[old, new]`` (stored as the
  ``NonNegativeParametrizer`` value of 0) — so the old channels compute exactly what they did;
* the new channels' incoming weights, biases and their own GDN parameters keep the fresh initialisation.

So the widened model's output equals the narrow model's at the start (up to float rounding; tested), and
gradient descent can put the new channels to use: the zero weights get the gradient ``∂L/∂out · new activation``,
which is not zero.  Only ``g_a``/``g_s`` may differ in shape; the hyperprior, its entropy models and the gains
are copied as they are.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

WIDENED_MODULES = ("g_a", "g_s")


def widen_state(model: nn.Module, narrow: dict) -> dict:
    """A state dict for ``model`` (wider ``g_a``/``g_s``) holding the narrow state ``narrow``'s function."""
    from compressai.layers import GDN

    own = model.state_dict()
    modules = dict(model.named_modules())
    missing = sorted(set(own) - set(narrow))
    if missing:
        raise ValueError(f"the narrow checkpoint lacks {len(missing)} tensors of this model, e.g. {missing[:3]}")
    out = {}
    for key, fresh in own.items():
        old = narrow[key]
        if old.shape == fresh.shape or not key.startswith(tuple(m + "." for m in WIDENED_MODULES)):
            out[key] = old  # same shape, or an entropy-model buffer that load_state_dict resizes
            continue
        if old.ndim != fresh.ndim or any(o > n for o, n in zip(old.shape, fresh.shape)):
            raise ValueError(f"{key}: cannot widen {tuple(old.shape)} into {tuple(fresh.shape)}")
        module_name, _, param = key.rpartition(".")
        module = modules[module_name]
        new = fresh.detach().clone()
        new[tuple(slice(0, n) for n in old.shape)] = old.to(new.dtype)
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) and param == "weight":
            in_dim = 1 if isinstance(module, nn.Conv2d) else 0
            out_dim = 1 - in_dim
            region = [slice(None)] * new.ndim
            region[out_dim] = slice(0, old.shape[out_dim])
            region[in_dim] = slice(old.shape[in_dim], None)
            new[tuple(region)] = 0  # old outputs do not read the new inputs
        elif isinstance(module, GDN) and param == "gamma":
            n = old.shape[0]
            new[:n, n:] = module.gamma_reparam.init(torch.zeros(()))  # γ[old, new] = 0 after the reparametrisation
        elif param not in ("bias", "beta"):
            raise ValueError(f"{key}: do not know how to widen a {type(module).__name__}.{param}")
        out[key] = new
    return out


def load_widened(model: nn.Module, path: str | Path) -> dict:
    """Load the checkpoint ``path`` (a narrower model of the same kind) into ``model`` through :func:`widen_state`.
    Returns {'widened': [names of the tensors that grew]}."""
    from core.models.checkpoint import read_state_dict

    narrow = read_state_dict(path)
    state = widen_state(model, narrow)
    model.load_state_dict(state)
    return {"widened": sorted(k for k, v in state.items() if k in narrow and v.shape != narrow[k].shape)}
