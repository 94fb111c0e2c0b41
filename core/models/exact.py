"""Exact hyper-decoder: the probability-table choice of a learned stream, in integer arithmetic.

CompressAI picks each latent's probability table by comparing the hyper-decoder's float ``scales`` with
the thresholds of ``scale_table``.  A last-bit difference in those floats — another thread count, another
CPU, a GPU — picks another table, and the range decoder desynchronises (CompressAI issues #279, #320).
Here the whole path from the decoded hyper-latent symbols to the table indexes and the means is integer
arithmetic (in the spirit of Ballé et al., "Integer networks for data compression with latent-variable
models", ICLR 2019, applied to a trained float network after training):

* activations are fixed-point integers with :data:`FRAC` fractional bits, weights with :data:`WFRAC`
  (the shipped float16/float32 weights rounded once, at load time), biases at ``FRAC + WFRAC``;
* each convolution runs on integer-valued ``float64`` tensors whose every partial sum stays below 2**53
  (activations are clamped to a bound computed from the weights, :attr:`ExactHyperDecoder.bounds`), so
  every product and every sum is exact whatever the summation order, the thread count or the BLAS —
  the result is the same integer on any IEEE-754 machine; the requantisation (floor division by
  2**WFRAC) and LeakyReLU/ReLU (floor division by the slope's denominator) run on ``int64``;
* the table index of a scale ``s`` (fixed point) is the count of table thresholds ``t`` with
  ``s > floor(t · 2**FRAC)`` — integer comparisons;
* variable-rate gains (``exp`` of an interpolated log-gain) are computed with Python's :mod:`decimal`
  (correctly rounded, platform independent) and rounded to :data:`GFRAC`-bit fixed point.

:func:`reference_conv` computes the same layers with ``int64`` tensors only (no float at all); the tests
check that both give the same integers.  Only the synthesis transform (``g_s``, latents → pixels) stays
float32: it cannot desynchronise the stream, and the stream's reconstruction hash
(:mod:`core.codecs.bitstream`) tells whether a decoder reproduced the encoder's pixels.
"""
from __future__ import annotations

import math
from decimal import ROUND_HALF_EVEN, Context, Decimal
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import nn

FRAC = 12    # fractional bits of activations (scales, means, the hyper-latent)
WFRAC = 20   # fractional bits of weights
GFRAC = 20   # fractional bits of gains
_EXACT = 2 ** 53 - 1  # float64 holds every integer up to this exactly


def _round_fixed(t: torch.Tensor, bits: int) -> torch.Tensor:
    """``round(t · 2**bits)`` as int64 (exact: scaling a float by a power of two is exact; ties to even)."""
    return torch.round(t.detach().double() * float(2 ** bits)).long()


class ExactHyperDecoder:
    """The integer version of a hyper-synthesis ``h_s`` (Conv2d / ConvTranspose2d / ReLU / LeakyReLU)."""

    def __init__(self, h_s: nn.Sequential, reference: bool = False):
        self.layers = []
        self.reference = reference
        self.bounds: list[int] = []
        for layer in h_s:
            if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
                if layer.groups != 1 or layer.dilation != (1, 1):
                    raise NotImplementedError("exact hyper-decoder: grouped/dilated convolutions not supported")
                w = _round_fixed(layer.weight, WFRAC)
                b = _round_fixed(layer.bias, WFRAC + FRAC) if layer.bias is not None else torch.zeros(
                    w.shape[1] if isinstance(layer, nn.ConvTranspose2d) else w.shape[0], dtype=torch.long)
                # |output| <= max over output channels of sum |w| · A + |b| < 2**53: the activation bound A
                per_out = w.abs().sum(dim=(0, 2, 3) if isinstance(layer, nn.ConvTranspose2d) else (1, 2, 3))
                bound = (_EXACT - int(b.abs().max())) // max(int(per_out.max()), 1)
                if bound < 2 ** (FRAC + 8):
                    raise NotImplementedError("exact hyper-decoder: weights too large for exact float64 sums")
                self.bounds.append(bound)
                self.layers.append(("conv", layer, w, b, bound))
            elif isinstance(layer, nn.LeakyReLU):
                slope = Fraction(str(layer.negative_slope)).limit_denominator(1 << 16)
                self.layers.append(("leaky", slope.numerator, slope.denominator))
            elif isinstance(layer, nn.ReLU):
                self.layers.append(("leaky", 0, 1))
            else:
                raise NotImplementedError(f"exact hyper-decoder: layer {type(layer).__name__} not supported")

    def __call__(self, z_q: torch.Tensor) -> torch.Tensor:
        """``z_q``: int64 hyper-latent at FRAC bits → int64 output of ``h_s`` at FRAC bits."""
        a = z_q.long()
        for item in self.layers:
            if item[0] == "conv":
                _, layer, w, b, bound = item
                a = a.clamp(-bound, bound)
                acc = reference_conv(layer, a, w, b) if self.reference else _float64_conv(layer, a, w, b)
                a = torch.div(acc, 2 ** WFRAC, rounding_mode="floor")
            else:
                _, num, den = item
                a = torch.where(a >= 0, a, torch.div(a * num, den, rounding_mode="floor"))
        return a


def _conv_args(layer):
    if isinstance(layer, nn.ConvTranspose2d):
        return dict(stride=layer.stride, padding=layer.padding, output_padding=layer.output_padding)
    return dict(stride=layer.stride, padding=layer.padding)


def _float64_conv(layer, a: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The convolution on integer-valued float64 tensors: exact (every partial sum < 2**53), back to int64."""
    fn = F.conv_transpose2d if isinstance(layer, nn.ConvTranspose2d) else F.conv2d
    return fn(a.double(), w.double(), b.double(), **_conv_args(layer)).long()  # (oneDNN has no float64 path)


def reference_conv(layer, a: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The same convolution with int64 tensors only (a sum over kernel taps of int64 matrix products)."""
    sy, sx = layer.stride
    py, px = layer.padding
    kh, kw = w.shape[2:]
    n, _, h, wd = a.shape
    if isinstance(layer, nn.ConvTranspose2d):  # w: (in, out, kh, kw); scatter every input pixel
        oy, ox = layer.output_padding
        full = torch.zeros((n, w.shape[1], (h - 1) * sy + kh, (wd - 1) * sx + kw), dtype=torch.long)
        for ky in range(kh):
            for kx in range(kw):
                contrib = torch.einsum("nchw,co->nohw", a, w[:, :, ky, kx])
                full[:, :, ky:ky + sy * (h - 1) + 1:sy, kx:kx + sx * (wd - 1) + 1:sx] += contrib
        out_h, out_w = (h - 1) * sy - 2 * py + kh + oy, (wd - 1) * sx - 2 * px + kw + ox
        if py + out_h > full.shape[2] or px + out_w > full.shape[3]:
            full = F.pad(full, (0, px + out_w - full.shape[3], 0, py + out_h - full.shape[2]))
        out = full[:, :, py:py + out_h, px:px + out_w]
    else:  # w: (out, in, kh, kw)
        padded = F.pad(a, (px, px, py, py))
        out_h, out_w = (h + 2 * py - kh) // sy + 1, (wd + 2 * px - kw) // sx + 1
        out = torch.zeros((n, w.shape[0], out_h, out_w), dtype=torch.long)
        for ky in range(kh):
            for kx in range(kw):
                patch = padded[:, :, ky:ky + sy * (out_h - 1) + 1:sy, kx:kx + sx * (out_w - 1) + 1:sx]
                out += torch.einsum("nchw,oc->nohw", patch, w[:, :, ky, kx])
    return out + b.view(1, -1, 1, 1)


def fixed_point(t: torch.Tensor, bits: int = FRAC) -> torch.Tensor:
    """``round(t · 2**bits)`` as int64, for float tensors from the checkpoint (medians, thresholds)."""
    return _round_fixed(t, bits)


def table_indexes(scales_q: torch.Tensor, scale_table: torch.Tensor) -> torch.Tensor:
    """CompressAI's ``build_indexes`` (index = number of thresholds below the scale) on fixed-point scales:
    ``s ≤ t`` ⇔ ``s_q ≤ floor(t · 2**FRAC)`` for an integer ``s_q``."""
    thresholds = torch.floor(scale_table.detach().double() * float(2 ** FRAC)).long()[:-1]
    return (scales_q.unsqueeze(-1) > thresholds).sum(-1).int()


# ----------------------------------------------------------------------------- variable-rate gains
_CTX = Context(prec=40)


def fixed_gains(log_table: torch.Tensor, position: Fraction) -> torch.Tensor:
    """``exp`` of the log-gain table interpolated at ``position`` ∈ [0, levels − 1], as int64 at GFRAC bits.

    Computed with :mod:`decimal` (correctly rounded exp, the same on every platform) from the exact values
    of the stored weights, then rounded once: the integer gains are a function of the stream's setting and
    the checkpoint only.
    """
    levels = log_table.shape[0]
    position = min(max(Fraction(position), Fraction(0)), Fraction(levels - 1))
    lo = min(math.floor(position), levels - 2)
    t = Decimal(position.numerator) / Decimal(position.denominator) - lo
    rows = log_table.detach().double().tolist()
    scale = Decimal(2) ** GFRAC
    out = []
    for a, b in zip(rows[lo], rows[lo + 1]):
        log_g = _CTX.add(_CTX.multiply(Decimal(a), 1 - t), _CTX.multiply(Decimal(b), t))
        out.append(int(_CTX.multiply(_CTX.exp(log_g), scale).to_integral_value(ROUND_HALF_EVEN)))
    return torch.tensor(out, dtype=torch.long)


def gains_as_float(gains_q: torch.Tensor) -> torch.Tensor:
    """The fixed-point gains as a (1, C, 1, 1) float32 tensor (exact division by 2**GFRAC, then one rounding)."""
    return (gains_q.double() / float(2 ** GFRAC)).float().view(1, -1, 1, 1)
