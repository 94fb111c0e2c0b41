"""Variable-rate mean-scale hyperprior: one network, a continuous rate knob (gain units).

Cui et al., "Asymmetric gained deep image compression with continuous rate
adaptation" (CVPR 2021): a learned per-channel *gain* vector scales the latent
``y`` before quantisation and an *inverse gain* rescales it before synthesis, one
pair per training λ (``levels`` of them); the hyper-latent ``z`` gets its own pair.
A larger gain means a finer effective quantisation step, so more bits and less
distortion.  Between two trained levels the gains are interpolated geometrically
(``g = g_i^(1-t) · g_{i+1}^t``), which gives a continuous rate knob
``rate ∈ [0, levels − 1]`` with one set of transforms and entropy models.

Everything else is CompressAI's ``MeanScaleHyperprior`` (Minnen 2018) with the
grayscale/colour switch of :mod:`core.models`, and one more width: ``transform_N``, the width of the image
transforms ``g_a``/``g_s`` (default ``N``).  CompressAI uses one ``N`` for both the image transforms and the
hyperprior; a wider ``transform_N`` buys the transforms capacity (issue #11: the EM top is transform-bound)
without widening the hyper-latent, its entropy model and its gains.  Training can run the four
transforms under ``torch.autocast(bfloat16)`` (``model.train_bf16 = True``: 2.3×
faster on an AMX-BF16 CPU); the entropy models always run in float32, and
inference (``compress``/``decompress``) never uses autocast, because the
bitstream depends on the hyper-decoder's exact outputs.
"""
from __future__ import annotations

import math
from contextlib import nullcontext

import torch
from torch import nn

from core.models import GrayColourMeanScaleHyperprior


class GainedMeanScaleHyperprior(GrayColourMeanScaleHyperprior):
    """Mean-scale hyperprior with gain units on ``y`` and ``z``; ``rate`` ∈ [0, levels − 1]."""

    stride = 64

    def __init__(self, N: int = 64, M: int = 96, channels: int = 3, levels: int = 8, transform_N: int | None = None,
                 **kwargs):
        super().__init__(N=N, M=M, channels=channels, **kwargs)
        self.transform_N = int(transform_N or N)
        if self.transform_N != N:  # CompressAI's own g_a/g_s (gray/colour switch applied), built transform_N wide
            wide = GrayColourMeanScaleHyperprior(N=self.transform_N, M=M, channels=channels)
            self.g_a, self.g_s = wide.g_a, wide.g_s
        if levels < 2:
            raise ValueError(f"a variable-rate model needs >= 2 levels, got {levels}")
        self.levels = int(levels)
        spread = torch.linspace(-1.0, 1.5, self.levels)[:, None]  # coarse → fine quantisation at the start
        self.log_gain = nn.Parameter(spread.repeat(1, M))
        self.log_inv_gain = nn.Parameter(-spread.repeat(1, M))
        self.log_hyper_gain = nn.Parameter(torch.zeros(self.levels, N))
        self.log_hyper_inv_gain = nn.Parameter(torch.zeros(self.levels, N))
        self.train_bf16 = False

    # ------------------------------------------------------------------ gains
    def _gain(self, table: torch.Tensor, rate: torch.Tensor) -> torch.Tensor:
        """Per-sample gains (B, C, 1, 1) for ``rate`` (B,), interpolated in log space."""
        rate = rate.to(table.device, torch.float32).clamp(0, self.levels - 1)
        lo = rate.floor().long().clamp(max=self.levels - 2)
        t = (rate - lo.float())[:, None]
        log_g = table[lo] * (1 - t) + table[lo + 1] * t
        return torch.exp(log_g)[:, :, None, None]

    def _rate_tensor(self, rate, batch: int) -> torch.Tensor:
        rate = torch.as_tensor(rate, dtype=torch.float32)
        if rate.ndim == 0:
            rate = rate.repeat(batch)
        if rate.shape != (batch,):
            raise ValueError(f"rate must be a scalar or one value per image, got shape {tuple(rate.shape)}")
        if not bool(torch.isfinite(rate).all()) or float(rate.min()) < 0 or float(rate.max()) > self.levels - 1:
            raise ValueError(f"rate must lie in [0, {self.levels - 1}], got {rate.tolist()}")
        return rate

    def _ac(self, x: torch.Tensor):
        if self.training and self.train_bf16:
            return torch.autocast(x.device.type, dtype=torch.bfloat16)
        return nullcontext()

    # ------------------------------------------------------------------ training
    def hyper_forward(self, x: torch.Tensor, rate: torch.Tensor):
        """The training path up to the hyperprior: (gained y, z likelihoods, scales, means), noisy ẑ."""
        with self._ac(x):
            y = self.g_a(x)
        y = y.float() * self._gain(self.log_gain, rate)
        with self._ac(x):
            z = self.h_a(y)
        z = z.float() * self._gain(self.log_hyper_gain, rate)
        z_hat, z_likelihoods = self.entropy_bottleneck(z)
        with self._ac(x):
            params = self.h_s(z_hat * self._gain(self.log_hyper_inv_gain, rate))
        scales, means = params.float().chunk(2, 1)
        return y, z_likelihoods, scales, means

    def forward(self, x: torch.Tensor, rate=None):
        """Noisy-quantisation forward pass; ``rate`` (scalar or (B,)) defaults to the top level."""
        rate = self._rate_tensor(self.levels - 1 if rate is None else rate, x.shape[0])
        y, z_likelihoods, scales, means = self.hyper_forward(x, rate)
        y_hat, y_likelihoods = self.gaussian_conditional(y, scales, means=means)
        with self._ac(x):
            x_hat = self.g_s(y_hat * self._gain(self.log_inv_gain, rate))
        return {"x_hat": x_hat.float(), "likelihoods": {"y": y_likelihoods, "z": z_likelihoods}}

    # ------------------------------------------------------------------ coding
    def compress(self, x: torch.Tensor, rate: float):
        rate = self._rate_tensor(rate, x.shape[0])
        y = self.g_a(x) * self._gain(self.log_gain, rate)
        z = self.h_a(y) * self._gain(self.log_hyper_gain, rate)
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.size()[-2:])
        scales, means = self.h_s(z_hat * self._gain(self.log_hyper_inv_gain, rate)).chunk(2, 1)
        indexes = self.gaussian_conditional.build_indexes(scales)
        y_strings = self.gaussian_conditional.compress(y, indexes, means=means)
        return {"strings": [y_strings, z_strings], "shape": z.size()[-2:]}

    def decompress(self, strings, shape, rate: float):
        rate = self._rate_tensor(rate, len(strings[0]))
        z_hat = self.entropy_bottleneck.decompress(strings[1], shape)
        scales, means = self.h_s(z_hat * self._gain(self.log_hyper_inv_gain, rate)).chunk(2, 1)
        indexes = self.gaussian_conditional.build_indexes(scales)
        y_hat = self.gaussian_conditional.decompress(strings[0], indexes, means=means)
        x_hat = self.g_s(y_hat * self._gain(self.log_inv_gain, rate)).clamp_(0, 1)
        return {"x_hat": x_hat}


def lambda_ladder(low: float, high: float, levels: int) -> list[float]:
    """``levels`` λ values, geometrically spaced from ``low`` to ``high`` (one per gain level)."""
    if not 0 < low < high or levels < 2:
        raise ValueError(f"need 0 < low < high and levels >= 2, got {low}, {high}, {levels}")
    step = (math.log(high) - math.log(low)) / (levels - 1)
    return [float(math.exp(math.log(low) + i * step)) for i in range(levels)]
