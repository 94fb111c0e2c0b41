"""Learned codecs: CompressAI models trained by this project, behind the :class:`Codec` interface.

Each checkpoint in ``data/weights/`` is a weights file ``NAME.pt`` (a ``state_dict``,
loaded with ``torch.load(..., weights_only=True)`` by :func:`core.models.checkpoint.read_state_dict`,
which expands weights stored in 8 bits) plus ``NAME.json`` metadata
(arch, channels, N, M, loss, λ, steps, training data, validation numbers; see
:mod:`core.train`).  The metadata fields ``codec`` and ``quality`` group
checkpoints into registry codecs:

* the codec's setting is the rate point ``quality`` 1..K (1 = fewest bytes);
* the model is picked from the image: a 2-D (grayscale) image goes through the
  ``channels = 1`` checkpoint of that quality, an RGB image through the
  ``channels = 3`` one (the colour switch).  ``colour_mode = per_channel``
  (:class:`~core.codecs.per_channel.PerChannelCodec`) sends each RGB plane
  through the 1-channel model instead.

Inputs of any bit depth 8..16 are mapped to [0, 1]: 8-bit images divided by 255, deeper ones through
their own **intensity window** (:func:`intensity_window`: (pixels − min) / (max − min), the window in the
stream), then padded
(edge replication) to a multiple of the network stride (16 or 64 px), coded,
cropped back and returned in the input's dtype.  The byte format is
:mod:`core.codecs.bitstream`.  Building a codec reads only the small JSON
files; a model is loaded on first use and cached.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import threading
from contextlib import contextmanager
from contextvars import ContextVar
from fractions import Fraction
from pathlib import Path

import numpy as np

from core.codecs.base import Codec, CodecError, UnsupportedInput
from core.codecs.bitstream import HASH_BYTES, Header, pack, reconstruction_hash, unpack

try:  # fail at import (the registry then skips learned codecs with a warning) when torch is absent
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover
    raise ImportError(f"learned codecs need torch: {exc}") from exc

from core.paths import WEIGHTS_DIR

#: Adam's learning rate of the encoder-side latent refinement (units of the quantisation step of the gained
#: latent; cosine-decayed to 0 over the steps).  Chosen on a 256² EPFL *train* crop at settings 4, 8, 12 with
#: 25 steps among 0.005, 0.01, 0.02, 0.05, 0.15 (0.01 and 0.02 best; 0.15 gained little at low rates).
REFINE_LR = 0.01

#: Images deeper than this many bits are coded through their intensity window (:func:`intensity_window`).
WINDOW_ABOVE_BITS = 8

#: Variable-rate checkpoints: the codec setting is a rate knob q in [1, VR_POINTS] (any value, stored to
#: 1/1000); q = 1 is the lowest trained gain level, q = VR_POINTS the highest, linear in the level index.
VR_POINTS = 16


def vr_settings(levels: int | None = None) -> tuple[int, ...]:
    """The default sweep of a variable-rate codec: the integer settings 1..VR_POINTS."""
    return tuple(range(1, VR_POINTS + 1))


def vr_rate(setting, levels: int) -> tuple[float, int]:
    """(gain-level position in [0, levels − 1], setting × 1000 as stored) for a variable-rate setting."""
    try:
        q = float(setting)
    except (TypeError, ValueError):
        raise ValueError(f"variable-rate setting must be a number in [1, {VR_POINTS}], got {setting!r}") from None
    if not 1.0 <= q <= VR_POINTS:
        raise ValueError(f"variable-rate setting must lie in [1, {VR_POINTS}], got {setting!r}")
    milli = int(round(q * 1000))
    return (milli / 1000 - 1) / (VR_POINTS - 1) * (levels - 1), milli


# ----------------------------------------------------------------------------- implausible streams
#: Bits by which one rANS-coded symbol may grow the coder's state by *less* than log2(2**precision / freq):
#: the encoder's integer division ⌊x / freq⌋ and its word output ⌊x / 2**32⌋ each lose a factor of at most
#: 1 − 2**−15 (its state x stays ≥ 2**31 while freq ≤ 2**16 = 2**precision).
_RANS_SLACK_BITS = -2 * math.log2(1 - 2.0 ** -15)


class ImplausibleStream(CodecError):
    """An entropy-coded string is shorter than any real stream of the declared shape can be."""


def _min_symbol_bits(entropy_model) -> "torch.Tensor":
    """Per CDF table of a CompressAI entropy model: the fewest bits one symbol coded with it adds to a
    rANS string — log2(2**precision / largest frequency in the table) less the rounding slack, ≥ 0."""
    import torch

    cdf = entropy_model._quantized_cdf.to(torch.int64)  # (tables, longest), zero-padded after each length
    lengths = entropy_model._cdf_length.to(torch.int64)
    freq = cdf[:, 1:] - cdf[:, :-1]
    valid = torch.arange(freq.shape[1])[None, :] < (lengths[:, None] - 1)
    top = torch.where(valid, freq, torch.zeros_like(freq)).amax(dim=1).clamp(min=1)
    bits = entropy_model.entropy_coder_precision - torch.log2(top.double()) - _RANS_SLACK_BITS
    return bits.clamp(min=0.0)


def min_string_bytes(entropy_model, indexes) -> list[int]:
    """A lower bound on the length of each rANS string that codes the symbols of ``indexes``.

    ``indexes`` is the (batch, ...) tensor of CDF-table indexes CompressAI decodes a string with (for an
    entropy bottleneck: the channel of every symbol).  CompressAI's coder (Rans64, 31-bit lower bound,
    ``entropy_coder_precision`` = 16-bit frequencies) grows its state by at least
    log2(2**16 / freq) − :data:`_RANS_SLACK_BITS` bits per symbol — overflow symbols add bypass bits on
    top — and writes the state out in 32-bit words plus a final 64-bit flush, so a real string holds at
    least that many bits.  We ask for ⌊bits / 8⌋ bytes (the initial state and the flush are margin).
    A crafted header that claims a large image with short strings fails this test before the decoder,
    which reads past the end of a string that is too short (SIGSEGV for large shapes), is called.
    """
    bits = _min_symbol_bits(entropy_model)
    return [int(float(bits[indexes[i].long()].sum()) // 8) for i in range(indexes.shape[0])]


def _guard_entropy_model(entropy_model) -> None:
    """Make ``entropy_model.decompress`` refuse strings shorter than :func:`min_string_bytes` (idempotent).

    The check wraps the module's own ``decompress`` (an instance attribute shadowing the class method), so
    it sees exactly the strings and table indexes CompressAI is about to hand to its C++ decoder, for
    every architecture (factorized y, hyperprior z and y, checkerboard anchors/non-anchors).
    """
    from compressai.entropy_models import EntropyBottleneck, EntropyModel, GaussianConditional

    if getattr(entropy_model, "_biocodec_guarded", False):
        return
    known = (isinstance(entropy_model, EntropyBottleneck)
             or (isinstance(entropy_model, GaussianConditional)
                 and type(entropy_model).decompress is EntropyModel.decompress))
    if not known:  # another signature (e.g. a Gaussian mixture): not a module our architectures use
        return
    original = entropy_model.decompress
    bottleneck = isinstance(entropy_model, EntropyBottleneck)

    @functools.wraps(original)
    def decompress(strings, indexes_or_size, *args, **kwargs):
        if bottleneck:  # (strings, size): channel c's table at every position of ``size``, for every c
            positions = math.prod(int(v) for v in indexes_or_size)
            need = [int(float(_min_symbol_bits(entropy_model).sum()) * positions // 8)] * len(strings)
        else:
            need = min_string_bytes(entropy_model, indexes_or_size)
        for string, least in zip(strings, need):
            if len(string) < least:
                kind = "entropy-bottleneck" if bottleneck else "Gaussian-conditional"
                raise ImplausibleStream(f"its {kind} string has {len(string)} bytes; a real stream of that "
                                        f"shape needs at least {least}")
        return original(strings, indexes_or_size, *args, **kwargs)

    entropy_model.decompress = decompress
    entropy_model._biocodec_guarded = True


# ----------------------------------------------------------------------------- reconstruction check
#: While :func:`verifying` is active: one ``(model id, expected hash, decoded hash)`` per learned stream decoded.
_VERIFIED: ContextVar[list | None] = ContextVar("verified", default=None)


@contextmanager
def verifying():
    """Collect the reconstruction-hash check of every learned stream decoded inside the block (tiles and
    planes included): yields a list of ``(model_id, expected, got)``; ``expected`` is ``b""`` for a
    version-2 stream, which carries no hash."""
    results: list = []
    token = _VERIFIED.set(results)
    try:
        yield results
    finally:
        _VERIFIED.reset(token)


#: While :meth:`LearnedCodec.encode_with_reconstruction` runs: the reconstruction each model's encode made.
_RECONSTRUCTIONS: ContextVar[list | None] = ContextVar("reconstructions", default=None)


#: Architectures whose probability-table choice runs through :mod:`core.models.exact` (integer arithmetic).
EXACT_ARCHS = ("hyperprior", "mean-scale", "gained-mean-scale")
#: Architectures with a checkerboard context model whose two passes run in integer arithmetic too
#: (:meth:`LearnedModel._compress_context`); streams: anchors, non-anchors, hyper-latent.
CONTEXT_ARCHS = ("gained-checkerboard",)


_MKLDNN_LOCK = threading.Lock()
_MKLDNN_OFF = [0, True]  # [how many syntheses run now, whether oneDNN was enabled before the first]


@contextmanager
def _without_onednn():
    """oneDNN off while at least one synthesis runs (reference-counted across threads; another thread's
    torch work meanwhile only runs slower).  ``torch.backends.mkldnn.flags`` would also reset TF32 and warn."""
    import torch

    with _MKLDNN_LOCK:
        if _MKLDNN_OFF[0] == 0:
            _MKLDNN_OFF[1] = torch._C._get_mkldnn_enabled()
            torch._C._set_mkldnn_enabled(False)
        _MKLDNN_OFF[0] += 1
    try:
        yield
    finally:
        with _MKLDNN_LOCK:
            _MKLDNN_OFF[0] -= 1
            if _MKLDNN_OFF[0] == 0:
                torch._C._set_mkldnn_enabled(_MKLDNN_OFF[1])


def _synthesis(g_s, y: "torch.Tensor") -> "torch.Tensor":
    """The synthesis transform, float32, with oneDNN off: oneDNN's deconvolution changes its summation
    order with the thread count (±1 pixel between 1 and 2 threads, measured); the plain kernels gave the same
    bits on 1, 2 and 4 threads (tested).  Not exact across CPU types — the stream's reconstruction hash
    (``decompress --verify``) is what proves a decode."""
    with _without_onednn():
        return g_s(y)


class LearnedModel:
    """One checkpoint: lazy loading, and array ⇄ bitstream coding with it."""

    def __init__(self, weights: str | Path, meta: dict):
        self.weights = Path(weights)
        self.meta = meta
        self.model_id = str(meta.get("model_id") or self.weights.stem)
        self.arch = meta["arch"]
        self.channels = int(meta["channels"])
        self.levels = int(meta["levels"]) if meta.get("levels") else None
        self._model = None
        self._hash: bytes | None = None
        self._lock = threading.Lock()
        self._exact = {}  # reference flag -> core.models.exact.ExactHyperDecoder
        self._gains = {}  # setting × 1000 -> the fixed-point gains
        #: True: the integer hyper-decoder uses the int64-only reference convolutions (tests; slow).
        self.exact_reference = False

    @property
    def variable_rate(self) -> bool:
        """True when one checkpoint covers every rate (gain units; the setting travels in the stream)."""
        return self.levels is not None

    @classmethod
    def from_json(cls, path: str | Path) -> "LearnedModel":
        path = Path(path)
        return cls(path.with_suffix(".pt"), json.loads(path.read_text()))

    @property
    def checkpoint_hash(self) -> bytes:
        """First 8 bytes of sha256 of the weights file."""
        if self._hash is None:
            self._hash = hashlib.sha256(self.weights.read_bytes()).digest()[:HASH_BYTES]
        return self._hash

    @property
    def model(self):
        """The CompressAI model (built and loaded on first use, entropy tables ready)."""
        with self._lock:
            if self._model is None:
                import torch

                from core.models import build_from_meta
                from core.models.checkpoint import read_state_dict

                # built outside inference mode even when first used inside it (encode/decode), so that its
                # parameters are ordinary tensors that latent refinement (autograd) may use
                with torch.inference_mode(False):
                    model = build_from_meta(self.meta)
                    model.load_state_dict(read_state_dict(self.weights))
                    model.eval()
                    model.update(force=False)
                self._model = model
            return self._model

    # ------------------------------------------------------------------ coding
    def encode(self, pixels: np.ndarray, bit_depth: int, setting=None, refine_steps: int = 0) -> bytes:
        """Code ``pixels`` ((H, W) for 1 channel, (H, W, 3) for 3) into one ``BCLC`` byte string.

        ``setting`` is the rate knob of a variable-rate checkpoint (1..:data:`VR_POINTS`); fixed-rate
        checkpoints take None.  ``refine_steps`` > 0 refines the latent before coding
        (:meth:`refine_latent`; slow, the decoder and the stream format are unchanged).
        """
        import torch
        import torch.nn.functional as F

        from core.models import stride

        channels = 1 if pixels.ndim == 2 else pixels.shape[2]
        if channels != self.channels:
            raise UnsupportedInput(f"{self.model_id}: {channels}-channel image for a {self.channels}-channel model")
        h, w = pixels.shape[:2]
        window = intensity_window(pixels, bit_depth)
        arr = to_unit_range(pixels, bit_depth, window)
        x = torch.from_numpy(np.ascontiguousarray(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)))[None]
        s = stride(self.arch)
        ph, pw = -h % s, -w % s
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        milli = 0
        if self.variable_rate:
            _, milli = vr_rate(setting, self.levels)
        elif setting is not None:
            raise ValueError(f"{self.model_id} is a fixed-rate checkpoint: it takes no setting")
        y = None
        if refine_steps:
            if self.arch not in EXACT_ARCHS + CONTEXT_ARCHS:
                raise ValueError(f"{self.model_id}: latent refinement needs one of {EXACT_ARCHS + CONTEXT_ARCHS}, "
                                 f"not {self.arch}")
            y = self.refine_latent(x, milli, int(refine_steps), h, w)
        with torch.inference_mode():
            if self.arch in CONTEXT_ARCHS:
                strings, x_hat = self._compress_context(x, milli, y)
            elif self.arch in EXACT_ARCHS:
                strings, x_hat = self._compress_exact(x, milli, y)
            else:  # factorized (channel-indexed tables: nothing to choose) and checkerboard (float context model)
                out = self.model.compress(x, vr_rate(setting, self.levels)[0]) if self.variable_rate \
                    else self.model.compress(x)
                strings = [s[0] for s in out["strings"]]
                x_hat = self.model.decompress([[b] for b in strings], self.latent_shape(x.shape[2], x.shape[3]))["x_hat"]
        pixels_hat = _to_pixels(x_hat, h, w, channels, bit_depth, window)
        sink = _RECONSTRUCTIONS.get()
        if sink is not None:
            sink.append(pixels_hat)
        return pack(Header(self.model_id, self.checkpoint_hash, h, w, channels, bit_depth, milli,
                           recon_hash=reconstruction_hash(pixels_hat), window=window), strings)

    # ------------------------------------------------------------------ the exact hyper path
    def exact_hyper_decoder(self):
        """The integer hyper-decoder of this checkpoint (:class:`core.models.exact.ExactHyperDecoder`)."""
        from core.models.exact import ExactHyperDecoder

        key = bool(self.exact_reference)
        if key not in self._exact:
            self._exact[key] = ExactHyperDecoder(self.model.h_s, reference=key)
        return self._exact[key]

    def gains(self, milli: int) -> dict:
        """Fixed-point gains of a variable-rate checkpoint at setting ``milli`` / 1000 (decimal exp, exact)."""
        from core.models.exact import fixed_gains

        if milli not in self._gains:
            position = Fraction(milli - 1000, 1000 * (VR_POINTS - 1)) * (self.levels - 1)
            m = self.model
            self._gains[milli] = {name: fixed_gains(getattr(m, name), position)
                                  for name in ("log_gain", "log_hyper_gain", "log_hyper_inv_gain", "log_inv_gain")}
        return self._gains[milli]

    def hyper_fixed(self, z_hat, milli: int):
        """The hyper-decoder's output (scales and means, int64 at ``FRAC`` bits) from the decoded hyper-latent.

        ``z_hat`` is the entropy bottleneck's output (symbols + medians); the symbols are recovered exactly
        (integers), the medians rounded to fixed point, and everything after is :mod:`core.models.exact`.
        """
        import torch

        from core.models.exact import FRAC, GFRAC, fixed_point

        eb = self.model.entropy_bottleneck
        medians = eb._get_medians().detach().reshape(1, -1, 1, 1)
        symbols = torch.round(z_hat - medians).long()
        z_q = symbols * (2 ** FRAC) + fixed_point(medians, FRAC)
        if self.variable_rate:
            gain = self.gains(milli)["log_hyper_inv_gain"].view(1, -1, 1, 1)
            z_q = torch.div(z_q * gain, 2 ** GFRAC, rounding_mode="floor")
        return self.exact_hyper_decoder()(z_q)

    def hyper(self, z_hat, milli: int):
        """(table indexes, means or None) from the decoded hyper-latent, in integer arithmetic
        (:meth:`hyper_fixed`)."""
        from core.models.exact import table_indexes

        out = self.hyper_fixed(z_hat, milli)
        if self.arch == "hyperprior":
            return table_indexes(out, self.model.gaussian_conditional.scale_table), None
        return self._tables(out)

    # ------------------------------------------------------------------ the exact checkerboard context path
    def exact_context(self):
        """The context network (masked convolution, then ``entropy_parameters``) as one
        :class:`core.models.exact.ExactHyperDecoder`: the checkerboard mask applied to the weights once, here."""
        import torch
        from torch import nn

        from core.models.exact import ExactHyperDecoder

        key = ("context", bool(self.exact_reference))
        if key not in self._exact:
            cp = self.model.context_prediction
            conv = nn.Conv2d(cp.in_channels, cp.out_channels, cp.kernel_size, cp.stride, cp.padding)
            with torch.no_grad():
                conv.weight.copy_(cp.weight * cp.mask)
                conv.bias.copy_(cp.bias)
            self._exact[key] = ExactHyperDecoder(nn.Sequential(conv, *self.model.entropy_parameters), reference=key[1])
        return self._exact[key]

    def context_fixed(self, hyper_q, anchor_symbols=None):
        """Entropy parameters (σ, μ; int64 at ``FRAC`` bits) of the checkerboard model, in integer arithmetic:
        the hyper-decoder's for the anchor pass (``anchor_symbols`` None); for the non-anchor pass the
        hyperprior's corrected by the context of the anchors' decoded symbols round(y − μ) (zero elsewhere;
        divided by σ and clamped to ±``context_bound`` where the model has one):
        :class:`~core.models.context.GainedCheckerboardHyperprior` with every division a floor division of
        integers and every product exact in int64."""
        import torch

        from core.models.context import SCALE_CORRECTION, SCALE_FLOOR
        from core.models.exact import FRAC

        if anchor_symbols is None:
            return hyper_q
        one = 2 ** FRAC
        scales_q, means_q = hyper_q.chunk(2, 1)
        floor_q = int(math.floor(SCALE_FLOOR * one))
        normalised = torch.div(anchor_symbols * (one * one), scales_q.clamp(min=floor_q), rounding_mode="floor")
        bound = self.model.context_bound
        if bound is not None:
            bound_q = int(math.floor(bound * one))
            normalised = normalised.clamp(-bound_q, bound_q)
        delta = self.exact_context()(torch.cat((normalised, normalised.abs()), dim=1))
        d_scale, d_mean = delta.chunk(2, 1)
        d_scale = d_scale.clamp(math.floor(SCALE_CORRECTION[0] * one), math.floor(SCALE_CORRECTION[1] * one))
        scales = torch.div(scales_q * (one + d_scale), one, rounding_mode="floor")
        means = means_q + torch.div(scales_q * d_mean, one, rounding_mode="floor")
        return torch.cat((scales, means), dim=1)

    def _tables(self, params_q):
        """(table indexes, means as float32) of fixed-point entropy parameters."""
        from core.models.exact import FRAC, table_indexes

        scales_q, means_q = params_q.chunk(2, 1)
        means = (means_q.double() / float(2 ** FRAC)).float()
        return table_indexes(scales_q, self.model.gaussian_conditional.scale_table), means

    def _compress_context(self, x, milli: int, y=None):
        """Encode with the checkerboard context model: hyper-latent, then the anchors from the hyperprior alone,
        then the non-anchors with the decoded anchors as context — every table choice in integer arithmetic.
        Returns ([anchor, non-anchor, hyper-latent strings], the decoder's x_hat); ``y`` as in
        :meth:`_compress_exact`."""
        import torch

        from core.models.context import pack_anchors, pack_non_anchors, unpack
        from core.models.exact import gains_as_float

        m = self.model
        gains = self.gains(milli)
        if y is None:
            y = m.g_a(x) * gains_as_float(gains["log_gain"])
        z = m.h_a(y) * gains_as_float(gains["log_hyper_gain"])
        z_strings = m.entropy_bottleneck.compress(z)
        z_hat = m.entropy_bottleneck.decompress(z_strings, z.size()[-2:])
        hyper_q = self.hyper_fixed(z_hat, milli)
        height, width = y.shape[-2:]
        halves = []
        anchor_symbols = None
        for pack in (pack_anchors, pack_non_anchors):
            indexes, means = self._tables(self.context_fixed(hyper_q, anchor_symbols))
            y_half, means_half = pack(y), pack(means)
            string = m.gaussian_conditional.compress(y_half, pack(indexes), means=means_half)[0]
            symbols = torch.round(y_half - means_half)  # what the coder codes (CompressAI's quantize)
            halves.append((string, symbols + means_half))
            if anchor_symbols is None:
                anchor_symbols = unpack(symbols.long(), None, height, width)
        y_hat = unpack(halves[0][1], halves[1][1], height, width)
        return [halves[0][0], halves[1][0], z_strings[0]], self._synthesise(y_hat, gains)

    def _decompress_context(self, strings, shape, milli: int, trace: dict | None = None):
        import torch

        from core.models.context import pack_anchors, pack_non_anchors, unpack

        m = self.model
        z_hat = m.entropy_bottleneck.decompress([strings[2]], shape)
        hyper_q = self.hyper_fixed(z_hat, milli)
        height, width = 4 * shape[0], 4 * shape[1]
        decoded, anchor_symbols = [], None
        for string, pack in zip(strings[:2], (pack_anchors, pack_non_anchors)):
            indexes, means = self._tables(self.context_fixed(hyper_q, anchor_symbols))
            symbols = m.gaussian_conditional.decompress([string], pack(indexes)).long()
            decoded.append(symbols.float() + pack(means))
            if anchor_symbols is None:
                anchor_symbols = unpack(symbols, None, height, width)
            if trace is not None:  # each pass's tables and means over the whole grid, stacked (anchors, non-anchors)
                for key, value in (("indexes", indexes), ("means", means)):
                    trace[key] = value[None] if key not in trace else torch.cat((trace[key], value[None]))
        return self._synthesise(unpack(decoded[0], decoded[1], height, width), self.gains(milli))

    def _compress_exact(self, x, milli: int, y=None):
        """Encode with the exact hyper path; returns (strings, the decoder's x_hat).  ``y``: the (gained)
        latent to code instead of ``g_a(x)`` (a refined one, :meth:`refine_latent`)."""
        import torch

        from core.models.exact import gains_as_float

        m = self.model
        gains = self.gains(milli) if self.variable_rate else None
        if y is None:
            y = m.g_a(x)
            if gains:
                y = y * gains_as_float(gains["log_gain"])
        z = m.h_a(torch.abs(y) if self.arch == "hyperprior" else y)
        if gains:
            z = z * gains_as_float(gains["log_hyper_gain"])
        z_strings = m.entropy_bottleneck.compress(z)
        z_hat = m.entropy_bottleneck.decompress(z_strings, z.size()[-2:])
        indexes, means = self.hyper(z_hat, milli)
        y_strings = m.gaussian_conditional.compress(y, indexes, means=means)
        # what the decoder gets: float32(symbol) + mean (= round(y - mean) + mean, bit for bit)
        y_hat = m.gaussian_conditional.quantize(y, "dequantize", means)
        return [y_strings[0], z_strings[0]], self._synthesise(y_hat, gains)

    # ------------------------------------------------------------------ encoder-side latent refinement
    def lmbda_at(self, milli: int) -> float:
        """The checkpoint's λ at this setting: its one λ (fixed rate), or for a variable-rate checkpoint
        its λ ladder (one λ per gain level, metadata ``lmbda``) interpolated in log λ at the same position
        between levels as the gains (which are interpolated in log gain)."""
        lam = self.meta.get("lmbda")
        if lam is None:
            raise ValueError(f"{self.model_id}: its metadata has no λ ('lmbda'): cannot refine its latents")
        if not self.variable_rate:
            return float(lam)
        if len(lam) != self.levels:
            raise ValueError(f"{self.model_id}: λ ladder has {len(lam)} values for {self.levels} gain levels")
        position = (milli - 1000) / (1000 * (VR_POINTS - 1)) * (self.levels - 1)
        lo = min(int(math.floor(position)), self.levels - 2)
        t = position - lo
        return float(math.exp((1 - t) * math.log(lam[lo]) + t * math.log(lam[lo + 1])))

    def refine_latent(self, x, milli: int, steps: int, height: int, width: int, lr: float | None = None,
                      history: list | None = None):
        """Encoder-side latent refinement (Campos et al. 2019; Yang et al., NeurIPS 2020 "Improving inference
        for neural image compression"): ``steps`` Adam steps on the gained latent ``y`` (starting from
        ``g_a(x)`` × gain) that lower the checkpoint's own rate–distortion objective

            bits(ŷ | ẑ) + bits(ẑ), divided by height · width,  +  λ · D(x, g_s(ŷ))

        with ẑ = round(h_a(y) − median) + median (the entropy bottleneck's coding), the Gaussian conditional's
        scales/means from the float hyper-decoder on ẑ, ŷ = round(y − mean) + mean (straight-through
        rounding: the forward value is exactly the quantised latent the coder sees, the gradient passes
        through), D the training distortion of the metadata's ``loss`` (``core.train.distortion``: 1 − MS-SSIM,
        255²·MSE or the Zhao mix) on the clamped reconstruction cropped to the image (the padded frame when
        the image is too small for MS-SSIM), and λ :meth:`lmbda_at`.  Each iterate's objective is that of
        its hard-quantised latents, so the iterate with the lowest one (the start included) is returned:
        refinement never picks a latent that the model itself rates worse than ``g_a(x)``.

        Deterministic: no noise, fixed learning-rate schedule (cosine from ``lr`` to 0), and oneDNN off like
        the synthesis (``_synthesis``), whose plain kernels do not change their summation order with the
        thread count (same bytes on 1 and 2 threads, tested).
        Runs with autograd on even inside ``torch.inference_mode`` callers; only ``y`` gets gradients
        (``torch.autograd.grad``), the shared model's parameters are never touched.  ``history`` (a list)
        receives each iterate's objective (bpp estimate, distortion, objective).
        """
        import torch

        from core.models.exact import gains_as_float
        from core.train import distortion, ms_ssim_torch  # noqa: F401  (torch + pytorch_msssim, loaded lazily)

        m = self.model
        lr = REFINE_LR if lr is None else float(lr)
        lam = self.lmbda_at(milli)
        kind = self.meta.get("loss") or "msssim"
        alpha = float(self.meta.get("alpha") or 0.84)
        gains = self.gains(milli) if self.variable_rate else None
        # .clone() outside inference mode: the cached gains may have been made inside it (inference tensors)
        with torch.inference_mode(False):
            g = {k: gains_as_float(v).clone() for k, v in gains.items()} if gains else None
        crop = min(height, width) >= 33 or kind == "mse"  # MS-SSIM needs a short side of 33 px
        pixels = float(height * width)
        eb, gc = m.entropy_bottleneck, m.gaussian_conditional

        def ste(v):
            return v + (torch.round(v) - v).detach()

        def objective(y):
            z = m.h_a(torch.abs(y) if self.arch == "hyperprior" else y)
            if g:
                z = z * g["log_hyper_gain"]
            c = z.shape[1]
            zv = z.permute(1, 0, 2, 3).reshape(c, 1, -1)
            medians = eb._get_medians().detach()
            zv = ste(zv - medians) + medians
            z_lik, _, _ = eb._likelihood(zv)
            z_hat = zv.reshape(c, z.shape[0], *z.shape[2:]).permute(1, 0, 2, 3)
            params = m.h_s(z_hat * g["log_hyper_inv_gain"] if g else z_hat)
            if self.arch == "hyperprior":
                scales, means = params, None
                y_hat = ste(y)
            else:
                scales, means = params.chunk(2, 1)
                if self.arch in CONTEXT_ARCHS:  # the non-anchors' parameters from the anchors' residuals
                    scales, means = m.context_parameters_of(y, scales, means, ste)
                y_hat = ste(y - means) + means
            y_lik = gc._likelihood(y_hat, scales, means)
            if gc.use_likelihood_bound:
                y_lik = gc.likelihood_lower_bound(y_lik)
            if eb.use_likelihood_bound:
                z_lik = eb.likelihood_lower_bound(z_lik)
            bpp = -(torch.log2(y_lik).sum() + torch.log2(z_lik).sum()) / pixels
            x_hat = m.g_s(y_hat * g["log_inv_gain"] if g else y_hat).clamp(0, 1)
            if crop:
                dist = distortion(kind, x[..., :height, :width], x_hat[..., :height, :width], alpha)
            else:
                dist = distortion(kind, x, x_hat, alpha)
            return bpp + lam * dist, bpp, dist

        with torch.inference_mode(False), torch.enable_grad(), _without_onednn():
            x = x.detach().clone()
            with torch.no_grad():
                y0 = m.g_a(x)
                if g:
                    y0 = y0 * g["log_gain"]
            y = y0.clone().requires_grad_(True)
            opt = torch.optim.Adam([y], lr=lr)
            best, best_y = math.inf, y0
            for step in range(steps + 1):
                loss, bpp, dist = objective(y)
                value = float(loss.detach())
                if history is not None:
                    history.append((float(bpp.detach()), float(dist.detach()), value))
                if value < best:
                    best, best_y = value, y.detach().clone()
                if step == steps:
                    break
                for group in opt.param_groups:  # cosine decay to 0 over the steps
                    group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
                (grad,) = torch.autograd.grad(loss, [y])
                y.grad = grad
                opt.step()
        return best_y

    def _synthesise(self, y_hat, gains):
        from core.models.exact import gains_as_float

        if gains:
            y_hat = y_hat * gains_as_float(gains["log_inv_gain"])
        return _synthesis(self.model.g_s, y_hat).clamp_(0, 1)

    def _decompress_exact(self, strings, shape, milli: int, trace: dict | None = None):
        m = self.model
        z_hat = m.entropy_bottleneck.decompress([strings[1]], shape)
        indexes, means = self.hyper(z_hat, milli)
        if trace is not None:
            trace.update(indexes=indexes, means=means)
        if means is None:
            y_hat = m.gaussian_conditional.decompress([strings[0]], indexes, z_hat.dtype)
        else:
            y_hat = m.gaussian_conditional.decompress([strings[0]], indexes, means=means)
        return self._synthesise(y_hat, self.gains(milli) if self.variable_rate else None)

    def latent_shape(self, hp: int, wp: int):
        """The ``shape`` argument of the model's ``decompress`` for a padded hp×wp input."""
        import torch

        if self.arch == "factorized":
            return torch.Size([hp // 16, wp // 16])
        if self.arch == "checkerboard":
            return {"y": torch.Size([int(self.meta["N"]), hp // 16, wp // 16]), "hyper": torch.Size([hp // 64, wp // 64])}
        return torch.Size([hp // 64, wp // 64])

    def decode(self, data: bytes, trace: dict | None = None) -> np.ndarray:
        """Decode a stream from :meth:`encode` (checks model id and checkpoint hash)."""
        header, strings = unpack(data)
        return self.decode_parsed(header, strings, trace)

    def decode_parsed(self, header: Header, strings: list[bytes], trace: dict | None = None) -> np.ndarray:
        """Decode a parsed stream; ``trace`` (a dict) receives the table ``indexes`` and ``means`` of the
        exact hyper path (tests)."""
        import torch

        from core.models import stride

        if header.model_id != self.model_id:
            raise CodecError(f"stream was made by model {header.model_id!r}, not {self.model_id!r}")
        if header.checkpoint_hash != self.checkpoint_hash:
            raise CodecError(f"stream was made with a different checkpoint of {self.model_id!r} "
                             f"(hash {header.checkpoint_hash.hex()} ≠ {self.checkpoint_hash.hex()})")
        if header.channels != self.channels:
            raise CodecError(f"stream says {header.channels} channels, model {self.model_id!r} has {self.channels}")
        expected = {"factorized": 1, "checkerboard": 3, "gained-checkerboard": 3}.get(self.arch, 2)
        if len(strings) != expected:
            raise CodecError(f"{self.arch} stream needs {expected} strings, got {len(strings)}")
        s = stride(self.arch)
        hp, wp = header.height + (-header.height % s), header.width + (-header.width % s)
        if self.variable_rate:
            if not header.setting_milli:
                raise CodecError(f"stream for variable-rate model {self.model_id!r} carries no rate setting")
            try:
                rate, _ = vr_rate(header.setting_milli / 1000, self.levels)
            except ValueError as exc:
                raise CodecError(f"stream header: {exc}") from None
        model = self.model
        with self._lock:  # every entropy model refuses strings too short for the shape (see min_string_bytes)
            for module in model.modules():
                _guard_entropy_model(module)
        try:
            with torch.inference_mode():
                if header.version >= 3 and self.arch in CONTEXT_ARCHS:
                    x_hat = self._decompress_context(strings, self.latent_shape(hp, wp), header.setting_milli, trace)
                elif header.version >= 3 and self.arch in EXACT_ARCHS:
                    x_hat = self._decompress_exact(strings, self.latent_shape(hp, wp), header.setting_milli, trace)
                elif header.version >= 3:
                    x_hat = model.decompress([[b] for b in strings], self.latent_shape(hp, wp))["x_hat"]
                elif self.variable_rate:  # version 2: the float hyper path these streams were written with
                    x_hat = model.decompress([[b] for b in strings], self.latent_shape(hp, wp), rate)["x_hat"]
                else:
                    x_hat = model.decompress([[b] for b in strings], self.latent_shape(hp, wp))["x_hat"]
        except ImplausibleStream as exc:
            raise ImplausibleStream(f"learned-codec stream claims {header.height}x{header.width} pixels, but "
                                    f"{exc} (crafted or damaged header)") from None
        arr = _to_pixels(x_hat, header.height, header.width, header.channels, header.bit_depth, header.window)
        results = _VERIFIED.get()
        if results is not None:
            results.append((self.model_id, header.recon_hash, reconstruction_hash(arr)))
        return arr


def intensity_window(pixels: np.ndarray, bit_depth: int) -> tuple[int, int] | None:
    """The intensities (lo, hi) a learned codec maps to [0, 1], or None for the full range 0..2**bit_depth − 1.

    Images deeper than :data:`WINDOW_ABOVE_BITS` bits use their own minimum and maximum (all channels
    together, so colour balance is kept): such data often fills a fraction of its container (12-bit camera or
    MRI data in 16 bits; the stage-4 MRI test slices peak at 28–78 % of theirs), and the models, trained on
    full-range 8-bit images, code a dim image at a fixed error in units of the container's range.  Measured on
    the 18 MRI test slices (``python -m bench.intensity_window``): ``learned-msssim`` 52 % fewer bits at equal PSNR,
    33 % at equal MS-SSIM; a window on 8-bit images cost +0.3 % / +0.7 % on the 10 EPFL test slices (range about
    40..225; ``--dataset epfl_hippocampus_fibsem --window-above-bits 7``), so 8-bit images keep the plain ÷ 255
    and their streams (version 3).  A flat image gets a window one level wide.
    """
    if bit_depth <= WINDOW_ABOVE_BITS:
        return None
    peak = (1 << bit_depth) - 1
    lo, hi = int(pixels.min()), int(pixels.max())
    if hi == lo:
        lo, hi = (lo, lo + 1) if lo < peak else (lo - 1, lo)
    return None if (lo, hi) == (0, peak) else (lo, hi)


def to_unit_range(pixels: np.ndarray, bit_depth: int, window: tuple[int, int] | None) -> np.ndarray:
    """``pixels`` as float32 in [0, 1], as the networks see them: ÷ (2**bit_depth − 1), or (pixels − lo) / (hi − lo)
    through an intensity ``window`` (:func:`intensity_window`).  :func:`_to_pixels` is its inverse."""
    if window is None:
        return pixels.astype(np.float32) / float((1 << bit_depth) - 1)
    return (pixels.astype(np.float32) - window[0]) / float(window[1] - window[0])


def _to_pixels(x_hat, height: int, width: int, channels: int, bit_depth: int,
               window: tuple[int, int] | None = None) -> np.ndarray:
    """The network's output (1, C, Hp, Wp) in [0, 1] → the image array the codec returns (through the
    stream's intensity ``window`` when it has one: the result lies in [lo, hi])."""
    x = x_hat[0, :, :height, :width].clamp(0, 1).numpy()
    if window is None:
        arr = np.rint(x * ((1 << bit_depth) - 1))
    else:
        lo, hi = window
        arr = np.rint(x.astype(np.float64) * (hi - lo) + lo)
    arr = arr.astype(np.uint8 if bit_depth <= 8 else np.uint16)
    return arr[0] if channels == 1 else np.ascontiguousarray(arr.transpose(1, 2, 0))


class LearnedCodec(Codec):
    """A family of checkpoints: one per (channels, quality); the image's channel count picks the model."""

    family = "learned"
    lossless = False
    bit_depths = frozenset(range(8, 17))

    def __init__(self, name: str, models: list[LearnedModel], label: str | None = None, refine_steps: int = 0):
        if not models:
            raise ValueError(f"learned codec {name!r} has no checkpoints")
        self.name = name
        self._by_key: dict[tuple[int, int | None], LearnedModel] = {}
        self.variable_rate = all(m.variable_rate for m in models)
        if not self.variable_rate and any(m.variable_rate for m in models):
            raise ValueError(f"{name}: mixes variable-rate and fixed-rate checkpoints")
        for m in models:
            key = (m.channels, None if m.variable_rate else int(m.meta["quality"]))
            if key in self._by_key:
                raise ValueError(f"{name}: two checkpoints for channels={key[0]}, quality={key[1]}")
            self._by_key[key] = m
        self._by_id = {m.model_id: m for m in models}
        self.channels = frozenset(c for c, _ in self._by_key)
        if self.variable_rate:
            self.default_settings = vr_settings()
        else:
            self.default_settings = tuple(sorted({q for _, q in self._by_key}))
        refine_steps = int(refine_steps)
        if refine_steps < 0:
            raise ValueError(f"{name}: refine_steps must be >= 0, got {refine_steps}")
        if refine_steps and any(m.arch not in EXACT_ARCHS + CONTEXT_ARCHS for m in models):
            raise ValueError(f"{name}: latent refinement needs the architectures {EXACT_ARCHS + CONTEXT_ARCHS}")
        #: Encoder-side latent refinement steps (0 = off, the default everywhere; :meth:`LearnedModel.refine_latent`).
        self.refine_steps = refine_steps
        # a fixed encoder parameter: in ``version`` (so the runner never mixes refined and plain rows), and only
        # when on, so the version of the default codec (and every stored row) is unchanged
        self.params = {"refine_steps": refine_steps} if refine_steps else {}
        self._version = self._version_of(models)
        archs = sorted({m.arch for m in models})
        self.label = (label or f"{name} ({'/'.join(archs)})") + (f", refined {refine_steps} steps" if refine_steps else "")
        self.knob = (f"rate knob 1..{VR_POINTS}, any value in between (higher = more bytes)" if self.variable_rate
                     else f"rate point 1..{max(self.default_settings)} (higher = more bytes)")

    def _version_of(self, models: list[LearnedModel]) -> str:
        """The hash of ``models``' sha256 (from their metadata, so registering reads no weights file) and of
        the one decoding parameter that lives in the JSON beside the weights rather than in them
        (``context_bound``, hashed only where set, so checkpoints without one keep their version), the stream
        version and the refinement."""
        digests = "".join(f"{m.model_id}:{m.meta.get('weights_sha256', '')}"
                          + (f":context_bound={float(m.meta['context_bound'])!r}"
                             if m.meta.get("context_bound") is not None else "") + ";"
                          for m in sorted(models, key=lambda m: m.model_id))
        # stream v3: integer hyper-decoder (core.models.exact) and plain float32 synthesis change the outputs
        version = ("weights sha256 " + hashlib.sha256(digests.encode()).hexdigest()[:16]
                   + "; stream v3, exact integer hyper-decoder")
        if any(m.arch in CONTEXT_ARCHS for m in models):
            version += " and checkerboard context"
        if self.refine_steps:
            version += f"; refine_steps={self.refine_steps} lr={REFINE_LR}"
        return version

    @property
    def version(self) -> str:
        """The hash of every checkpoint's sha256 (gray and colour)."""
        return self._version

    def version_for(self, channels: int, bit_depth: int | None = None) -> str:
        """The hash of the checkpoints that code ``channels``-channel images only (new weights recompute the
        rows they code, not the other channel count's); the whole codec's version where none does.  Images
        deeper than :data:`WINDOW_ABOVE_BITS` bits add the intensity window (stream version 4), so its
        introduction recomputed their rows only."""
        models = [m for m in self._by_id.values() if m.channels == channels]
        version = self._version_of(models) if models else self._version
        if bit_depth is not None and bit_depth > WINDOW_ABOVE_BITS:
            version += "; intensity window (stream v4)"
        return version

    def with_refinement(self, steps: int) -> "LearnedCodec":
        """This codec with ``steps`` encoder-side latent-refinement steps (0: plain), sharing its loaded models
        and its sweep; the registry's instance is left as it is.  Slow: each step is a forward and backward
        pass of the whole model."""
        if int(steps) == self.refine_steps:
            return self
        base_label = self.label.split(", refined ")[0]
        codec = LearnedCodec(self.name, self.models(), base_label, refine_steps=steps)
        codec.default_settings = self.default_settings
        return codec

    def models(self) -> list[LearnedModel]:
        """Every checkpoint of this codec (gray and colour, every rate point)."""
        return list(self._by_id.values())

    def model_for(self, channels: int, setting) -> LearnedModel:
        """The checkpoint used for ``channels`` at rate point ``setting``."""
        if self.variable_rate:
            vr_rate(setting, 2)  # range check only
            model = self._by_key.get((channels, None))
            if model is None:
                raise UnsupportedInput(f"{self.name}: no {channels}-channel checkpoint "
                                       f"(have {sorted(c for c, _ in self._by_key)})")
            return model
        try:
            q = int(setting)
        except (TypeError, ValueError):
            raise ValueError(f"{self.name}: setting must be a rate point 1..K, got {setting!r}") from None
        if q != setting:
            raise ValueError(f"{self.name}: setting must be an integer rate point, got {setting!r}")
        model = self._by_key.get((channels, q))
        if model is None:
            have = sorted(k for c, k in self._by_key if c == channels)
            raise UnsupportedInput(f"{self.name}: no {channels}-channel checkpoint at rate point {q} (have {have})")
        return model

    def _encode(self, pixels, setting, bit_depth):
        channels = 1 if pixels.ndim == 2 else pixels.shape[2]
        model = self.model_for(channels, setting)
        return model.encode(pixels, bit_depth, setting if model.variable_rate else None, self.refine_steps)

    def encode_with_reconstruction(self, pixels, setting=None, bit_depth=None):
        """:meth:`encode` and the pixels its model reconstructed on the way (the ones the stream's reconstruction
        hash is taken of, which :meth:`decode` reproduces): no second decode."""
        sink: list = []
        token = _RECONSTRUCTIONS.set(sink)
        try:
            data = self.encode(pixels, setting, bit_depth)
        finally:
            _RECONSTRUCTIONS.reset(token)
        return data, (sink[0] if len(sink) == 1 else self.decode(data))

    def _decode(self, data):
        header, strings = unpack(data)
        model = self._by_id.get(header.model_id)
        if model is None:
            raise CodecError(f"{self.name}: stream needs checkpoint {header.model_id!r}, which this codec lacks")
        return model.decode_parsed(header, strings)


def load_codecs(folder: str | Path = WEIGHTS_DIR) -> dict[str, LearnedCodec]:
    """Group the checkpoints of ``folder`` (``*.json`` with a ``codec`` field and a ``.pt`` beside) into codecs."""
    groups: dict[str, list[LearnedModel]] = {}
    for meta_path in sorted(Path(folder).glob("*.json")):
        meta = json.loads(meta_path.read_text())
        if not isinstance(meta, dict):  # not checkpoint metadata (e.g. a measurement beside the weights)
            continue
        fixed_or_variable = meta.get("quality") is not None or meta.get("levels")
        if not meta.get("codec") or not fixed_or_variable or not meta_path.with_suffix(".pt").exists():
            continue
        groups.setdefault(meta["codec"], []).append(LearnedModel(meta_path.with_suffix(".pt"), meta))
    return {name: LearnedCodec(name, models) for name, models in groups.items()}


def shipped_codecs() -> dict[str, "LearnedCodec"]:
    """The learned codecs of the shipped checkpoints in ``data/weights`` (what the registry lists)."""
    return load_codecs() if WEIGHTS_DIR.is_dir() else {}
