"""Compress and decompress your own files with any registered codec (learned or classical).

    python -m core.codecs compress IN OUT --codec NAME [--setting S | --bpp TARGET] [--colour-mode per_channel]
                                              [--bit-depth B] [--page N] [--effort STEPS]
    python -m core.codecs decompress IN OUT [--verify]
    python -m core.codecs list

IN may be a file or a folder (every image in it, non-recursive, with a progress
bar); OUT is then a folder.  Compressed files get the suffix ``.bcc`` and hold
the ``BCF1`` wrapper of :mod:`core.codecs.bitstream` (magic ``b"BCF1"``,
version, codec name, setting, colour mode) around the codec's own bytes (for
learned codecs the ``BCLC`` stream: magic, version, model id, checkpoint hash,
H, W, channels, bit depth, entropy-coded strings, CRC-32).  ``decompress``
reads the codec from the wrapper and writes the image (PNG or TIFF by OUT's
suffix; a folder gets ``NAME.png`` for 8-bit and ``NAME.tif`` for 16-bit).

``--bpp TARGET`` picks the setting whose file rate (8 · bytes of the whole file / (H · W)) is
closest to TARGET (:mod:`core.rate_search`, the dashboard's rule too: bisection on the knob,
continuous for variable-rate learned codecs) and prints the achieved bpp and its deviation.
``--bit-depth`` declares the significant bits of 16-bit input (default: as read); ``--page N`` picks
one plane of a stack (multi-page TIFF, 3-D MRC; a stack without it is refused with its plane count).
``--effort STEPS`` (learned codecs with a hyperprior only; default 0 = off) refines the latents for STEPS
gradient steps on the model's own rate–distortion objective before coding
(:meth:`core.codecs.learned.LearnedModel.refine_latent`): fewer bits for the same quality, the same decoder
and stream format, but **slow** — each step is a forward and backward pass of the whole network (about
0.25 s per step per 256² on one CPU thread).

``decompress --verify`` recomputes the reconstruction hash of every learned stream in the file (each
tile and plane; :func:`core.codecs.bitstream.reconstruction_hash`, written by the encoder from the
pixels it reconstructed) and prints ``verify: pass`` (exit 0) or ``verify: FAIL ...`` (exit 1); a file
without such hashes (classical codecs, version-2 learned streams) cannot be verified (exit 3).

Any failure — unreadable input, unsupported input, a corrupt or crafted stream, a
library error, running out of memory — is reported as one line ``error: ...`` on
stderr with exit status 2 (130 when interrupted), never a traceback
(``BIOCODEC_DEBUG=1`` prints the traceback as well).
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from core.codecs.bitstream import unwrap_file, wrap_file
from core.codecs.registry import available_codecs, get_codec
from core.io import SUPPORTED_SUFFIXES, as_bioimage, read_image, write_image
from core.metrics import bits_per_pixel
from core.pipeline import build_decoder, build_encoder, effective_colour_mode
from core.setting_text import parse_setting

SUFFIX = ".bcc"


def compress_file(src: Path, dst: Path, codec_name: str, setting=None, bpp: float | None = None,
                  colour_mode: str = "joint", bit_depth: int | None = None, page: int | None = None,
                  effort: int = 0) -> dict:
    """Compress one image file (``page``: the plane of a stack; ``effort``: latent-refinement steps of a
    learned codec); returns ``{"setting", "bytes", "bpp", "note", "in_range"}`` (bpp of the whole file;
    ``in_range``: False when a ``bpp`` target lies outside the codec's rates on this image)."""
    image = read_image(src, bit_depth=bit_depth, page=page)
    h, w = image.pixels.shape[:2]
    colour_mode = effective_colour_mode(colour_mode, image.channels)  # what the stream records
    base = get_codec(codec_name)
    if effort:
        if effort < 0:
            raise ValueError(f"--effort must be >= 0, got {effort}")
        if not hasattr(base, "with_refinement"):
            raise ValueError(f"--effort (latent refinement) applies to learned codecs only, not {codec_name}")
        base = base.with_refinement(effort)
    codec = build_encoder(base, colour_mode, image.channels, h, w)
    note, in_range = "", True
    if bpp is not None:
        if setting is not None:
            raise ValueError("give --setting or --bpp, not both")
        from core.rate_search import search_setting

        def encode_only(image, codec, s):  # what the search needs: the file's bpp (and its bytes)
            data = wrap_file(codec_name, s, codec.encode(image.pixels, s, image.bit_depth), colour_mode)
            return _Encoded(data, {"bpp": bits_per_pixel(len(data), h, w)})

        found = search_setting(image, codec, bpp, evaluate_fn=encode_only)
        chosen, data = found.setting, found.evaluation.encoded
        achieved, in_range = found.evaluation.metrics["bpp"], found.in_range
        note = f"target {bpp} bpp, achieved {achieved:.4f} bpp ({100 * (achieved / bpp - 1):+.1f} %)"
        if found.note:
            note += f"; {found.note}"
    else:
        if setting is None and not codec.lossless:
            setting = codec.default_settings[len(codec.default_settings) // 2]
        chosen = setting
        data = wrap_file(codec_name, setting, codec.encode(image.pixels, setting, image.bit_depth), colour_mode)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data)
    return {"setting": chosen, "bytes": len(data), "bpp": bits_per_pixel(len(data), h, w), "note": note,
            "in_range": in_range}


class _Encoded:
    """A trial of the --bpp search: the file bytes and their bpp."""

    def __init__(self, encoded: bytes, metrics: dict):
        self.encoded, self.metrics = encoded, metrics


def decompress_file(src: Path, dst: Path | None = None, verify: list | None = None):
    """Decompress one ``.bcc`` file; writes ``dst`` when given and returns the pixel array.

    ``verify`` (a list): receives ``(status, line)`` of :func:`verify_result` for this file."""
    name, _setting, mode, payload = unwrap_file(src.read_bytes())
    if verify is None:
        pixels = build_decoder(name, mode, payload).decode(payload)
    else:
        from core.codecs.learned import verifying

        with verifying() as results:
            pixels = build_decoder(name, mode, payload).decode(payload)
        verify.append(verify_result(name, results))
    if dst is not None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        write_image(dst, as_bioimage(pixels))
    return pixels


VERIFY_FAILED, CANNOT_VERIFY = 1, 3


def verify_result(name: str, results: list) -> tuple[int, str]:
    """(exit status, line) for the reconstruction-hash checks of one decoded file."""
    if not results:
        return CANNOT_VERIFY, f"verify: not possible: {name} streams carry no reconstruction hash"
    if any(not expected for _, expected, _ in results):
        return CANNOT_VERIFY, "verify: not possible: version-2 learned stream (written before reconstruction hashes)"
    bad = [(model, expected, got) for model, expected, got in results if expected != got]
    if bad:
        model, expected, got = bad[0]
        return VERIFY_FAILED, (f"verify: FAIL: {len(bad)} of {len(results)} learned stream(s) decode to pixels other "
                               f"than the encoder's ({model}: hash {got.hex()}, stream says {expected.hex()})")
    return 0, f"verify: pass ({len(results)} learned stream(s); reconstruction hash matches)"


def _inputs(path: Path, suffixes) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix.lower() in suffixes)
    if path.is_file():
        return [path]
    raise FileNotFoundError(f"no such file or folder: {path}")


def error_message(exc: BaseException) -> str:
    """One line saying what went wrong, for ``error: ...``."""
    if isinstance(exc, KeyError) and exc.args:
        text = str(exc.args[0])  # str(KeyError) adds quotes
    elif isinstance(exc, MemoryError):
        text = f"out of memory{f' ({exc})' if str(exc) else ''}"
    elif type(exc).__module__ == "builtins" and isinstance(exc, (ValueError, OSError)) \
            or type(exc).__module__.startswith("core."):  # CodecError, UnsupportedInput, ImageReadError, ...
        text = str(exc) or type(exc).__name__
    else:  # a library's own exception type, or something unexpected: say what it was
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return " ".join(text.split())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.codecs", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compress", help="image file(s) → .bcc file(s)")
    c.add_argument("input", type=Path)
    c.add_argument("output", type=Path)
    c.add_argument("--codec", required=True)
    g = c.add_mutually_exclusive_group()
    g.add_argument("--setting", help="the codec's rate knob (default: middle of its sweep)")
    g.add_argument("--bpp", type=float, help="the setting whose rate is closest to this target (bits per pixel)")
    c.add_argument("--colour-mode", choices=("joint", "per_channel"), default="joint")
    c.add_argument("--bit-depth", type=int, help="significant bits of 16-bit input")
    c.add_argument("--page", type=int, help="the plane of a stack to compress (multi-page TIFF, 3-D MRC): 0..N-1")
    c.add_argument("--effort", type=int, default=0, metavar="STEPS",
                   help="learned codecs: refine the latents for STEPS gradient steps on the model's rate-distortion "
                        "objective before coding (fewer bits at the same quality, same decoder). SLOW: about 0.25 s "
                        "per step per 256x256 pixels on one CPU thread; 25 steps made a 512x512 encode 20-35x slower. "
                        "Default 0 (off)")
    d = sub.add_parser("decompress", help=".bcc file(s) → image file(s)")
    d.add_argument("input", type=Path)
    d.add_argument("output", type=Path)
    d.add_argument("--verify", action="store_true",
                   help="check every learned stream's reconstruction hash: prints pass/FAIL, exit 1 on a mismatch")
    sub.add_parser("list", help="registered codecs")
    args = p.parse_args(argv)
    from tqdm import tqdm

    current = None  # the file being worked on, named in the error line
    try:
        if args.cmd == "list":
            for name in available_codecs():
                codec = get_codec(name)
                print(f"{name:22s} {codec.family:9s} {codec.knob or 'lossless'}  settings={list(codec.default_settings)}")
            return 0
        if args.cmd == "compress":
            files = _inputs(args.input, SUPPORTED_SUFFIXES)
            many = args.input.is_dir()
            for f in tqdm(files, disable=not many, desc="compress"):
                current = f
                dst = args.output / (f.stem + SUFFIX) if many else args.output
                info = compress_file(f, dst, args.codec, parse_setting(args.setting), args.bpp,
                                     args.colour_mode, args.bit_depth, args.page, args.effort)
                if not many:
                    print(f"{dst}: {info['bytes']} bytes, {info['bpp']:.4f} bpp, setting {info['setting']}"
                          + (f" ({info['note']})" if info["note"] else ""))
            return 0
        files = _inputs(args.input, {SUFFIX})
        many = args.input.is_dir()
        status = 0
        for f in tqdm(files, disable=not many, desc="decompress"):
            current = f
            checks = [] if args.verify else None
            if many:
                pixels = decompress_file(f, verify=checks)
                dst = args.output / (f.stem + (".png" if pixels.dtype.itemsize == 1 else ".tif"))
                args.output.mkdir(parents=True, exist_ok=True)
                write_image(dst, as_bioimage(pixels))
            else:
                decompress_file(f, args.output, verify=checks)
            for code, line in checks or ():
                print(f"{f}: {line}" if many else line, file=sys.stderr if code else sys.stdout)
                status = max(status, code)
        return status
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 — every failure is one line, never a traceback
        if os.environ.get("BIOCODEC_DEBUG"):
            traceback.print_exc()
        message = error_message(exc)
        if current is not None and str(current) not in message:
            message = f"{current}: {message}"
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
