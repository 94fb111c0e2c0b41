"""Variable-rate mean-scale hyperprior + checkerboard context model (He et al., CVPR 2021).

:class:`GainedCheckerboardHyperprior` is :class:`~core.models.variable_rate.GainedMeanScaleHyperprior`
(gain units, the gray/colour switch, ``transform_N``) with a two-pass spatial context on the gained latent:
the latent grid is split like a checkerboard into *anchors* (``(i + j)`` odd, CompressAI's convention) and
*non-anchors*.  Anchors are coded first from the hyperprior alone; the non-anchors then also see the decoded
anchors — their quantised residuals ``round(y − mean)`` and the residuals' magnitudes — through a 5×5
checkerboard-masked convolution (``context_prediction``, CompressAI's ``CheckerboardMaskedConv2d``).  Both passes are parallel over the whole grid, unlike a raster-scan context.

Anchors keep the hyperprior's (σ, μ).  A non-anchor's are a **correction of the hyperprior's**, in units of
its σ::

    u = round(y − μ) / σ at the anchors (0 elsewhere)        the anchors' normalised residuals,
                                                             clamped to ±context_bound when one is set
    (Δσ, Δμ) = entropy_parameters(context_prediction(cat(u, |u|)))
    σ' = σ · (1 + clamp(Δσ, −0.9, 4)),   μ' = μ + σ · Δμ

``context_bound`` (None = unbounded, as the shipped gray file was trained) bounds u.  Where σ sits at its
floor (flat background) a residual of ±1 is u = ±9, far outside what the context saw on training tiles;
unbounded, the colour context trained on H&E inflated σ there and spent up to 21 % more bits than its
hyperprior on the brightfield test images (mean of 3 per setting).  A bound at the training residuals' 99th
percentile (|u| ≈ 3 on MoNuSeg train tiles; 0.8 % of them are larger) keeps the input in the trained range:
the colour models trained with it need 0.5 % (MS-SSIM) and 6.7 % (MSE model) fewer bits there than their
hyperpriors, with up to 2 % more at a few settings (data/weights/README.md).

After the hyperprior, neighbouring residuals are uncorrelated in sign but not in size (measured on EM train
crops with the shipped gray model: correlation of |residual / σ| with its 4 neighbours' 0.28–0.54, of the
signed values below 0.02), so the context mostly corrects σ.  Working in units of σ keeps the correction the
same size at every rate (σ spans two orders of magnitude across the gain levels), which is what lets a short
training move it.  The last 1×1 convolution of ``entropy_parameters`` is zero at construction, so an
untrained context model is exactly its hyperprior.  That lets a trained :class:`GainedMeanScaleHyperprior` checkpoint start it
(``core.train --init … --init-matching``) and lets ``core.train --entropy-only`` train the context alone on
the rate: the transforms, hyperprior and gains stay frozen, so the reconstruction is the start's and only
the bits change.

Every layer of the context path is a plain convolution or LeakyReLU, so the codec runs it in integer
arithmetic like the hyper-decoder (:mod:`core.models.exact`, ``core.codecs.learned``): a stream cannot
desynchronise across machines.
"""
from __future__ import annotations

import torch
from torch import nn

from core._compat import import_compressai

import_compressai()

from compressai.layers import CheckerboardMaskedConv2d  # noqa: E402

from core.models.variable_rate import GainedMeanScaleHyperprior  # noqa: E402


def anchor_mask(height: int, width: int, device=None) -> torch.Tensor:
    """(1, 1, H, W) bool: True at the anchors, ``(i + j)`` odd."""
    i = torch.arange(height, device=device)[:, None]
    j = torch.arange(width, device=device)[None, :]
    return ((i + j) % 2 == 1)[None, None]


def pack_anchors(t: torch.Tensor) -> torch.Tensor:
    """The anchors of ``t`` (B, C, H, W; H, W even) as a dense (B, C, H, W/2) tensor."""
    return torch.cat((t[..., 0::2, 1::2], t[..., 1::2, 0::2]), dim=2)


def pack_non_anchors(t: torch.Tensor) -> torch.Tensor:
    """The non-anchors of ``t`` as a dense (B, C, H, W/2) tensor."""
    return torch.cat((t[..., 0::2, 0::2], t[..., 1::2, 1::2]), dim=2)


def unpack(anchors: torch.Tensor | None, non_anchors: torch.Tensor | None, height: int, width: int) -> torch.Tensor:
    """The (B, C, H, W) grid from packed anchors and non-anchors (a missing half is zero)."""
    ref = anchors if anchors is not None else non_anchors
    out = ref.new_zeros((*ref.shape[:2], height, width))
    half = height // 2
    if anchors is not None:
        out[..., 0::2, 1::2], out[..., 1::2, 0::2] = anchors[..., :half, :], anchors[..., half:, :]
    if non_anchors is not None:
        out[..., 0::2, 0::2], out[..., 1::2, 1::2] = non_anchors[..., :half, :], non_anchors[..., half:, :]
    return out


def _ste_round(v: torch.Tensor) -> torch.Tensor:
    return v + (torch.round(v) - v).detach()


SCALE_FLOOR = 0.11  # CompressAI's GaussianConditional scale bound: σ below it codes as σ = 0.11
SCALE_CORRECTION = (-0.9, 4.0)  # the range of Δσ: σ' stays in [0.1 σ, 5 σ]


class GainedCheckerboardHyperprior(GainedMeanScaleHyperprior):
    """Gained mean-scale hyperprior with a checkerboard context model; ``rate`` ∈ [0, levels − 1]."""

    stride = 64

    def __init__(self, N: int = 64, M: int = 96, channels: int = 3, levels: int = 8, transform_N: int | None = None,
                 context_bound: float | None = None, **kwargs):
        super().__init__(N=N, M=M, channels=channels, levels=levels, transform_N=transform_N, **kwargs)
        if context_bound is not None and not context_bound > 0:
            raise ValueError(f"context_bound must be positive or None, not {context_bound!r}")
        self.context_bound = None if context_bound is None else float(context_bound)
        self.context_prediction = CheckerboardMaskedConv2d(2 * M, 2 * M, kernel_size=5, padding=2, stride=1)
        # the mask is a constant of the class (CompressAI stores it, float32, as large as the weight): not saved
        mask = self.context_prediction.mask
        del self.context_prediction.mask
        self.context_prediction.register_buffer("mask", mask, persistent=False)
        self.entropy_parameters = nn.Sequential(
            nn.Conv2d(2 * M, 2 * M, 1), nn.LeakyReLU(inplace=True),
            nn.Conv2d(2 * M, 2 * M, 1), nn.LeakyReLU(inplace=True),
            nn.Conv2d(2 * M, 2 * M, 1),
        )
        last = self.entropy_parameters[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def context_parameter_names(self) -> list[str]:
        """Names of the parameters the hyperprior does not have (what ``--entropy-only`` trains)."""
        return [n for n, _ in self.named_parameters() if n.startswith(("context_prediction.", "entropy_parameters."))]

    def corrections(self, normalised: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Δσ, Δμ) from the anchors' normalised residuals ``u`` (zeros at the non-anchors)."""
        delta = self.entropy_parameters(self.context_prediction(torch.cat((normalised, normalised.abs()), dim=1)))
        d_scale, d_mean = delta.chunk(2, 1)
        return d_scale.clamp(*SCALE_CORRECTION), d_mean

    def context_parameters_of(self, y: torch.Tensor, scales: torch.Tensor, means: torch.Tensor,
                              rounding=_ste_round) -> tuple[torch.Tensor, torch.Tensor]:
        """(σ, μ) of every latent: the hyperprior's ``scales``/``means`` at the anchors, corrected by the
        context of the anchors' residuals ``rounding(y − μ)`` at the non-anchors."""
        mask = anchor_mask(*y.shape[-2:], device=y.device)
        normalised = torch.where(mask, rounding(y - means) / scales.clamp(min=SCALE_FLOOR), torch.zeros_like(y))
        if self.context_bound is not None:
            normalised = normalised.clamp(-self.context_bound, self.context_bound)
        d_scale, d_mean = self.corrections(normalised)
        return (torch.where(mask, scales, scales * (1 + d_scale)),
                torch.where(mask, means, means + scales * d_mean))

    def forward(self, x: torch.Tensor, rate=None, synthesis: bool = True):
        """Training forward: noisy quantisation for the likelihoods; the context sees the anchors' residuals
        quantised as the codec quantises them (round(y − μ), straight-through).  Returns also
        ``hyper_likelihoods``: the latent's likelihoods under the hyperprior alone (the start model's),
        which ``core.train --entropy-only`` divides by.  ``synthesis=False`` skips ``g_s``."""
        rate = self._rate_tensor(self.levels - 1 if rate is None else rate, x.shape[0])
        y, z_likelihoods, scales, means = self.hyper_forward(x, rate)
        ctx_scales, ctx_means = self.context_parameters_of(y, scales, means)
        y_hat, y_likelihoods = self.gaussian_conditional(y, ctx_scales, means=ctx_means)
        hyper_likelihoods = self.gaussian_conditional._likelihood(y_hat, scales, means)
        if self.gaussian_conditional.use_likelihood_bound:
            hyper_likelihoods = self.gaussian_conditional.likelihood_lower_bound(hyper_likelihoods)
        x_hat = None
        if synthesis:
            with self._ac(x):
                x_hat = self.g_s(y_hat * self._gain(self.log_inv_gain, rate)).float()
        return {"x_hat": x_hat, "likelihoods": {"y": y_likelihoods, "z": z_likelihoods},
                "hyper_likelihoods": {"y": hyper_likelihoods.detach(), "z": z_likelihoods.detach()}}

    def compress(self, x, rate):  # pragma: no cover - the codec's exact path (core.codecs.learned) codes it
        raise NotImplementedError("gained-checkerboard streams are made by core.codecs.learned's exact path")

    def decompress(self, strings, shape, rate):  # pragma: no cover
        raise NotImplementedError("gained-checkerboard streams are decoded by core.codecs.learned's exact path")
