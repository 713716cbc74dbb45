"""Number formats: which one "auto" picks, and sampling from int8 and bfloat16 weights of the session's tiny run."""

import pytest
import torch
from transformers.pytorch_utils import Conv1D

from model import speed
from model.errors import ModelError
from model.run import load_run
from model.candidates import SampleRequest
from model.sample import Sampler
from model.speed import int8_supported, sample_dtype, train_autocast
from model.train import hold_out, perplexity

CPU = torch.device("cpu")
needs_int8 = pytest.mark.skipif(not int8_supported(), reason="int8 sampling needs an x86 build of torch (fbgemm)")


@pytest.fixture
def native_bf16(monkeypatch):
    def set_native(value: bool):
        monkeypatch.setattr(speed, "cpu_has_native_bf16", lambda: value)

    return set_native


def test_auto_picks_bfloat16_only_where_the_cpu_has_it(native_bf16):
    native_bf16(True)
    assert sample_dtype("auto", CPU) == "bfloat16"
    assert train_autocast("auto", CPU) == torch.bfloat16
    native_bf16(False)
    assert sample_dtype("auto", CPU) == ("int8" if int8_supported() else "float32")
    assert train_autocast("auto", CPU) is None
    assert sample_dtype("float32", CPU) == "float32" and sample_dtype("bfloat16", CPU) == "bfloat16"
    assert train_autocast("float32", CPU) is None and train_autocast("bfloat16", CPU) == torch.bfloat16


def test_auto_on_cuda_picks_bfloat16_where_the_gpu_has_it(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert sample_dtype("auto", cuda) == "bfloat16" and train_autocast("auto", cuda) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert sample_dtype("auto", cuda) == "float32"
    assert train_autocast("auto", cuda) == torch.float16  # with loss scaling (the Trainer's GradScaler)
    assert train_autocast("float32", cuda) is None


def test_bad_dtypes_are_refused():
    with pytest.raises(ModelError, match="Unknown sampling dtype 'float16'"):
        sample_dtype("float16", CPU)
    with pytest.raises(ModelError, match="int8 sampling needs an x86 CPU"):
        sample_dtype("int8", torch.device("cuda"))
    with pytest.raises(ModelError, match="Unknown training dtype"):
        train_autocast("int8", CPU)


@needs_int8
def test_int8_run_samples_like_float32(trained_run):
    fp32, int8 = load_run(trained_run), load_run(trained_run, "cpu", "int8")
    assert int8.dtype == "int8" and not any(isinstance(m, Conv1D) for m in int8.model.modules())
    ids = torch.tensor([int8.tokenizer.encode("the fear of the lord is the beginning of knowledge")])
    with torch.inference_mode():
        a, b = fp32.model(input_ids=ids).logits, int8.model(input_ids=ids).logits
    assert torch.allclose(a.softmax(-1), b.softmax(-1), atol=0.02)
    held_out = hold_out(fp32.blocks, 0.1, 1234)[1]
    assert perplexity(int8, held_out) == pytest.approx(perplexity(fp32, held_out), rel=0.02)


@pytest.mark.parametrize("dtype", [pytest.param("int8", marks=needs_int8), "bfloat16"])
def test_same_seed_same_candidates_in_each_dtype(trained_run, dtype):
    sampler = Sampler(load_run(trained_run, "cpu", dtype))
    request = SampleRequest(count=3, seed=7, temperature=1.0, length=30, batch_size=8)
    first = sampler.candidates(request)
    assert len(first.usable) == 3 and all(c.verdict.usable for c in first.usable)
    assert [c.text for c in first.usable] == [c.text for c in sampler.candidates(request).usable]
