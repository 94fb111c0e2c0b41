"""Large images take one tiling path everywhere (core.pipeline.build_encoder → core.tiling.TiledCodec): the
file CLI's learned-codec memory stays bounded.  Peak RSS is measured in a child process."""
from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.codecs import available_codecs
from core.codecs.bitstream import unwrap_file
from core.io import as_bioimage, write_image

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
try:
    import torch  # noqa: F401
except ImportError:  # pragma: no cover
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="learned codecs need torch + compressai")


def _run(args, memory_gb=16, env=None):
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (memory_gb << 30, memory_gb << 30))

    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600, preexec_fn=limit,
                          env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}), None
# ============================================================================ large images: one tiling path
_PEAK_RSS = """
import resource, subprocess, sys
proc = subprocess.run([sys.executable, "-m", "core.codecs", *sys.argv[1:]], capture_output=True, text=True)
print(proc.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, proc.stderr.strip()[-300:])
"""


def _peak_rss_gb(*args) -> float:
    """Run ``python -m core.codecs ARGS`` in a child and return its peak resident set size (GB)."""
    proc, _ = _run([PYTHON, "-c", _PEAK_RSS, *map(str, args)], memory_gb=16, env={"OMP_NUM_THREADS": "1"})
    code, kb, err = proc.stdout.split(" ", 2)
    assert code == "0", err
    return int(kb) / 2**20


@needs_torch
def test_file_cli_tiles_large_learned_images_and_stays_within_2_gb(tmp_path):
    """The file CLI builds its codec with core.pipeline.build_encoder, the runner's tiling path: a 6000² image
    through learned-msssim is 36 tiles of 1000 px (+32 px context).  Measured by hand on a generated
    6000×6000 EM-like image (sinusoid + Gaussian noise, 8-bit PNG), OMP_NUM_THREADS=1, 2-core CPU shared with
    three other busy processes, each command's peak read from resource.getrusage(RUSAGE_CHILDREN).ru_maxrss::

        python -m core.codecs compress em.png em.bcc --codec learned-msssim --setting 8
            -> 3,653,444 bytes (0.81 bpp), peak RSS 1.16 GB, 235 s
        python -m core.codecs decompress em.bcc em_out.png --verify
            -> verify: pass (36 learned streams), peak RSS 1.18 GB, 127 s

    (issue #14 measured 9.67 GB / 9.59 GB before the CLI tiled).  Here
    a 2049 × 256 image (just above learned_max_side = 2048: 3 tiles) keeps the test short; it must go
    through the same tiled path, and its peak stay under 2 GB as well."""
    from core.pipeline import build_encoder
    from core.tiling import TILED_MAGIC, TiledCodec

    big = build_encoder("learned-msssim", "joint", 1, 6000, 6000)
    assert isinstance(big, TiledCodec) and (big.tile, big.overlap) == (1024, 32)
    if "learned-msssim" not in available_codecs():
        pytest.skip("no shipped learned-msssim")
    shape = (2049, 256)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    image = np.clip(120 + 50 * np.sin(xx / 9) * np.cos(yy / 13) + rng.normal(0, 12, shape), 0, 255)
    write_image(tmp_path / "em.png", as_bioimage(image.astype(np.uint8)))
    compress = _peak_rss_gb("compress", tmp_path / "em.png", tmp_path / "em.bcc", "--codec", "learned-msssim",
                            "--setting", "8")
    payload = unwrap_file((tmp_path / "em.bcc").read_bytes())[3]
    assert payload[:4] == TILED_MAGIC and struct.unpack(">I", payload[17:21])[0] == 3  # 3 tiles
    decompress = _peak_rss_gb("decompress", tmp_path / "em.bcc", tmp_path / "out.png", "--verify")
    assert compress < 2.0 and decompress < 2.0, (compress, decompress)
