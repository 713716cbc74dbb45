"""The embedded default, trained in full (minutes): run with `make test-slow`."""

import pytest

from model.speed import int8_supported
from model.run import load_run
from model.train import hold_out, make_config, perplexity, quality_rates, train
from tests.conftest import PROVERBS


@pytest.mark.slow
def test_embedded_default_reads_like_proverbs(tmp_path):
    cfg = make_config("tiny", corpus=str(PROVERBS), checkpoint_dir=str(tmp_path), run_name="default")
    result = train(cfg, progress=False)
    assert result.usable_rate >= 0.8, result
    assert result.copy_rate <= 0.1, result
    usable, copies = quality_rates(result.folder, 100, prefix="thou shalt")
    assert usable >= 0.8 and copies <= 0.1
    # the faster sampling formats keep the held-out perplexity within 2% of float32's (bench/quality.py)
    held_out = hold_out(load_run(result.folder).blocks, 0.1, 1234)[1]
    base = perplexity(load_run(result.folder), held_out)
    for dtype in ["bfloat16"] + ["int8"] * int8_supported():
        assert perplexity(load_run(result.folder, "cpu", dtype), held_out) == pytest.approx(base, rel=0.02), dtype
