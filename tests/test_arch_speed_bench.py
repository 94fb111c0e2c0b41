"""bench.arch_speed: every architecture goes through the real codec path (a decodable stream) and the
report's ratios are to the shipped architecture measured in the same run."""
from __future__ import annotations

import re

import numpy as np

from bench import arch_speed
from core.models import ARCHS, is_variable_rate


def test_untrained_checkpoints_of_every_architecture_round_trip(tmp_path):
    image = arch_speed.test_image(64, 1)
    assert image.dtype == np.uint8 and np.array_equal(image, arch_speed.test_image(64, 1))
    for arch in ARCHS:
        codec = arch_speed.untrained_codec(arch, 1, tmp_path)
        data = codec.encode(image, 8 if is_variable_rate(arch) else 1, 8)
        assert codec.decode(data).shape == image.shape and len(data) > 0


def test_the_report_lists_every_architecture_with_the_shipped_one_as_unit(capsys):
    assert arch_speed.main(["--size", "64", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    for arch in ARCHS:
        assert re.search(rf"│ {arch} +│ untrained", out)
    base = re.search(r"│ gained-mean-scale +│ untrained +│ +8 │ +\d+ │ +([\d.]+) │ +\d+ │ +([\d.]+) │", out)
    assert base and base.groups() == ("1.00", "1.00")
