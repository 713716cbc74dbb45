"""The embedded default, trained in full (minutes): run with `make test-slow`."""

import pytest

from model.train import make_config, quality_rates, train

from tests.conftest import PROVERBS


@pytest.mark.slow
def test_embedded_default_reads_like_proverbs(tmp_path):
    result = train(make_config("tiny", corpus=str(PROVERBS), checkpoint_dir=str(tmp_path), run_name="default"), progress=False)
    assert result.usable_rate >= 0.8, result
    assert result.copy_rate <= 0.1, result
    usable, copies = quality_rates(result.folder, 100, prefix="thou shalt")
    assert usable >= 0.8 and copies <= 0.1
