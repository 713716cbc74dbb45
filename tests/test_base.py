import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, GPT2LMHeadModel

from model.base import load_base, pick_device
from model.errors import ModelError
from model.run import load_run
from model.candidates import SampleRequest
from model.sample import Sampler
from model.tokenizer import GPT2_VOCAB
from model.train import train

from tests.conftest import tiny_config
from tests.test_sample import ForceTokens

TF_FIXTURE = Path(__file__).parent / "fixtures" / "tf_gpt2" / "openai"


def tf_folder(tmp_path):
    folder = tmp_path / "124M"
    shutil.copytree(TF_FIXTURE, folder)
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copy(GPT2_VOCAB / name, folder)
    return folder


def test_fine_tune_a_hugging_face_folder(trained_run, tmp_path):
    base = tmp_path / "hf"
    GPT2LMHeadModel.from_pretrained(trained_run).save_pretrained(base)
    AutoTokenizer.from_pretrained(trained_run).save_pretrained(base)
    cfg = tiny_config(tmp_path / "ck", steps=3, val_every=0)
    cfg.base = str(base)
    result = train(cfg, progress=False)
    assert load_run(result.folder).model.config.n_embd == 64


def test_fine_tune_an_openai_tensorflow_folder_and_sample_with_gpt2_separator(tmp_path):
    cfg = tiny_config(tmp_path / "ck", steps=2, val_every=0, block_size=32, batch_size=2, run_name="imported")
    cfg.base = str(tf_folder(tmp_path))
    result = train(cfg, progress=False)
    sampler = Sampler(load_run(result.folder))
    assert len(sampler.start_ids) > 1  # GPT-2's BPE: the separator line is several tokens
    sep = sampler.tokenizer.encode("\n==========\n")
    words = sampler.tokenizer.encode(" a wise son")
    force = ForceTokens([words + sep], prompt_length=len(sampler.start_ids))
    (sample,) = sampler.generate(SampleRequest(length=40), logits_processor=[force])
    assert sample.text == "a wise son"
    assert force.steps < len(words) + len(sep) + 1  # stopped on the separator, not at length 40


def test_bad_bases_are_explained(tmp_path):
    with pytest.raises(ModelError, match="Unknown base 'gpt3'"):
        load_base("gpt3")
    with pytest.raises(ModelError, match="not a model folder: expected config.json"):
        load_base(str(tmp_path))


def test_asking_for_cuda_without_one():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ModelError, match="no CUDA GPU"):
        pick_device("cuda")
    assert pick_device("auto").type == "cpu"


@pytest.mark.parametrize("name", ["gpu", "tpu", "cuda:x", ""])
def test_an_unknown_device_is_one_clear_error(name):
    with pytest.raises(ModelError, match="is not a device; use auto, cpu, cuda"):
        pick_device(name)


def test_the_cpu_is_always_there():
    assert pick_device("cpu") == torch.device("cpu")
