"""bench.torch_bf16: both precisions see the same batches from the same start, and the report says so."""
from __future__ import annotations

import re

import torch

from bench import torch_bf16


def test_synthetic_batches_are_deterministic_and_in_range():
    a = torch_bf16.synthetic_batches(2, 3, 1, 64, seed=0)
    b = torch_bf16.synthetic_batches(2, 3, 1, 64, seed=0)
    assert [t.shape for t in a] == [(3, 1, 64, 64)] * 2
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and not torch.equal(a[0], a[1])
    assert all(float(t.min()) >= 0 and float(t.max()) <= 1 for t in a)


def test_both_runs_start_equal_and_follow_close_loss_curves(capsys):
    assert torch_bf16.main(["--steps", "2", "--crop", "64", "--batch", "2", "--M", "16", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    curves = [[float(x) for x in re.search(rf"^{name} .*loss per step (.*)$", out, re.M).group(1).split()]
              for name in ("float32", "bf16")]
    assert len(curves[0]) == len(curves[1]) == 3  # warm-up + 2 timed steps
    assert abs(curves[0][0] - curves[1][0]) / curves[0][0] < 0.01  # same weights, same batch, same gain levels
    gap = float(re.search(r"largest relative loss gap bf16 vs float32: ([\d.]+)%", out).group(1))
    assert gap < 5 and re.search(r"ratio bf16 / float32: \d+\.\d\d", out)
