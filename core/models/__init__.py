"""Learned image-compression architectures with a grayscale/colour switch.

Every architecture is a CompressAI model, subclassed (not copied): the only
change is the channel count of the first layer of the analysis transform
``g_a`` and of the last layer of the synthesis transform ``g_s`` (CompressAI
hard-codes 3).  ``channels=1`` is the grayscale model (and the model the
``per_channel`` colour mode applies to each RGB plane), ``channels=3`` the
joint colour model.

=====================  ===========================================  ======  ===========================
``arch``               paper / CompressAI class                     stride  entropy coding
=====================  ===========================================  ======  ===========================
``factorized``         Ballé 2018, ``FactorizedPrior``              16      fully factorized (1 string)
``hyperprior``         Ballé 2018 scale hyperprior, ``ScaleHyperprior``  64  Gaussian scale (y, z strings)
``mean-scale``         Minnen 2018 mbt2018-mean, ``MeanScaleHyperprior``  64  Gaussian mean+scale (y, z)
``checkerboard``       He 2021 checkerboard context on Cheng 2020   64      two-pass parallel context
                       anchor, ``Cheng2020AnchorCheckerboard``              (anchor, non-anchor, z)
=====================  ===========================================  ======  ===========================

Inputs are floats in [0, 1] (pixels divided by MAX = 2**bit_depth − 1), shape
``(B, channels, H, W)`` with H and W multiples of :func:`stride`.
"""
from __future__ import annotations

from core._compat import import_compressai

import_compressai()

from compressai.layers import ResidualBlockWithStride, subpel_conv3x3  # noqa: E402
from compressai.models import (  # noqa: E402
    Cheng2020AnchorCheckerboard,
    FactorizedPrior,
    MeanScaleHyperprior,
    ScaleHyperprior,
)
from compressai.models.utils import conv, deconv  # noqa: E402

ARCHS = ("factorized", "hyperprior", "mean-scale", "checkerboard", "gained-mean-scale", "gained-checkerboard")
CHANNELS = (1, 3)


def _check_channels(channels: int) -> int:
    if channels not in CHANNELS:
        raise ValueError(f"channels must be 1 (grayscale) or 3 (colour), got {channels}")
    return channels


def _set_io_planes(model, channels: int, N: int) -> None:
    """The grayscale/colour switch: replace g_a's first conv and g_s's last deconv with ``channels`` planes."""
    model.channels = _check_channels(channels)
    model.g_a[0] = conv(channels, N)
    model.g_s[-1] = deconv(N, channels)


class GrayColourFactorizedPrior(FactorizedPrior):
    """Ballé 2018 factorized prior with ``channels`` input/output planes."""

    stride = 16

    def __init__(self, N: int = 64, M: int = 96, channels: int = 3, **kwargs):
        super().__init__(N, M, **kwargs)
        _set_io_planes(self, channels, N)


class GrayColourScaleHyperprior(ScaleHyperprior):
    """Ballé 2018 scale hyperprior with ``channels`` input/output planes."""

    stride = 64

    def __init__(self, N: int = 64, M: int = 96, channels: int = 3, **kwargs):
        super().__init__(N, M, **kwargs)
        _set_io_planes(self, channels, N)


class GrayColourMeanScaleHyperprior(MeanScaleHyperprior):
    """Minnen 2018 mean-scale hyperprior (mbt2018-mean) with ``channels`` planes."""

    stride = 64

    def __init__(self, N: int = 64, M: int = 96, channels: int = 3, **kwargs):
        super().__init__(N, M, **kwargs)
        _set_io_planes(self, channels, N)


class GrayColourCheckerboard(Cheng2020AnchorCheckerboard):
    """Cheng 2020 anchor transforms + He 2021 checkerboard (parallel) context model.

    CompressAI's class has one width ``N`` (the latent has N channels too), so
    ``M`` must equal ``N``.  Decoding is two parallel passes (anchors, then the
    rest), not a serial raster scan.
    """

    stride = 64

    def __init__(self, N: int = 64, M: int | None = None, channels: int = 3, **kwargs):
        if M is not None and M != N:
            raise ValueError(f"checkerboard: the latent width equals N (got N={N}, M={M})")
        super().__init__(N, **kwargs)
        self.channels = _check_channels(channels)
        self.g_a[0] = ResidualBlockWithStride(channels, N, stride=2)
        self.g_s[-1] = subpel_conv3x3(N, channels, 2)


from core.models.variable_rate import GainedMeanScaleHyperprior  # noqa: E402  (subclasses the above)
from core.models.context import GainedCheckerboardHyperprior  # noqa: E402  (subclasses that)

_CLASSES = {
    "factorized": GrayColourFactorizedPrior,
    "hyperprior": GrayColourScaleHyperprior,
    "mean-scale": GrayColourMeanScaleHyperprior,
    "checkerboard": GrayColourCheckerboard,
    "gained-mean-scale": GainedMeanScaleHyperprior,
    "gained-checkerboard": GainedCheckerboardHyperprior,
}


def is_variable_rate(arch: str) -> bool:
    """True for architectures with a continuous rate knob (gain units)."""
    return arch in ("gained-mean-scale", "gained-checkerboard")


def build_model(arch: str, channels: int, N: int, M: int | None = None, levels: int | None = None,
                transform_N: int | None = None, context_bound: float | None = None):
    """Build an untrained model: ``arch`` in :data:`ARCHS`, ``channels`` 1 or 3, widths N, M.

    ``levels`` (variable-rate architectures only) is the number of trained gain levels; ``transform_N``
    (variable-rate only) the width of the image transforms when it differs from the hyperprior's ``N``;
    ``context_bound`` (gained-checkerboard only) the bound on the context's normalised residuals.
    """
    try:
        cls = _CLASSES[arch]
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHS)}") from None
    if transform_N not in (None, N) and not is_variable_rate(arch):
        raise ValueError(f"{arch}: a separate transform width (transform_N={transform_N}) needs gained-mean-scale")
    if context_bound is not None and arch != "gained-checkerboard":
        raise ValueError(f"{arch}: context_bound={context_bound} needs gained-checkerboard")
    if arch == "checkerboard":
        return cls(N=N, M=M, channels=channels)
    if is_variable_rate(arch):
        bound = {"context_bound": context_bound} if arch == "gained-checkerboard" else {}
        return cls(N=N, M=M if M is not None else N, channels=channels, levels=levels or 8, transform_N=transform_N,
                   **bound)
    return cls(N=N, M=M if M is not None else N, channels=channels)


def build_from_meta(meta: dict):
    """The untrained model a checkpoint's metadata (``core.train``'s JSON) describes: arch, channels, N, M,
    levels and, where present, ``transform_N`` and ``context_bound``."""
    return build_model(meta["arch"], int(meta["channels"]), int(meta["N"]), meta.get("M"), levels=meta.get("levels"),
                       transform_N=meta.get("transform_N"), context_bound=meta.get("context_bound"))


def stride(arch: str) -> int:
    """Padding multiple (pixels) an input side must have for ``arch``."""
    return _CLASSES[arch].stride
