"""TensorFlow GPT-2 import (model/importer.py, model/tfcheckpoint.py) against logits computed by TensorFlow itself.

The fixture (tests/fixtures/tf_gpt2, see its README) is a narrow GPT-2 saved by TensorFlow in OpenAI's layout and
fine-tuned by gpt-2-simple into its checkpoint/run1 layout; expected.json holds TensorFlow's logits for both.
"""

import dataclasses
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, GPT2LMHeadModel

from model.errors import ModelError
from model.importer import find_checkpoint, load_tf_gpt2
from model.tokenizer import GPT2_VOCAB
from model.tfcheckpoint import TFCheckpoint, read_checkpoint, snappy_decompress

FIXTURES = Path(__file__).parent / "fixtures"
EXPECTED = json.loads((FIXTURES / "tf_gpt2" / "expected.json").read_text())
LAYOUTS = {"openai": "model.ckpt", "run1": "model-20"}  # layout -> checkpoint prefix
TOLERANCE = 1e-4


def model_folder(root: Path, layout: str) -> Path:
    """A complete model folder: the fixture's checkpoint plus the GPT-2 vocabulary, which is stored once."""
    folder = root / layout
    shutil.copytree(FIXTURES / "tf_gpt2" / layout, folder)
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copy(GPT2_VOCAB / name, folder)
    return folder


@pytest.fixture(scope="module", params=list(LAYOUTS))
def imported(request, tmp_path_factory):
    layout = request.param
    model, tokenizer = load_tf_gpt2(model_folder(tmp_path_factory.mktemp("tf"), layout), progress=False)
    return layout, model, tokenizer


@pytest.fixture
def folder(tmp_path):
    return model_folder(tmp_path, "run1")


def all_logits(model, ids) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].double().numpy()


def max_diff_to_tensorflow(model, layout) -> float:
    diffs = []
    for prompt, expected in zip(EXPECTED["prompts"], EXPECTED[layout]):
        logits = all_logits(model, prompt["ids"])
        top = np.take_along_axis(logits, np.array(expected["top_ids"]), axis=1)
        lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
        diffs += [np.abs(logits[:, EXPECTED["check_ids"]] - expected["logits_at_check_ids"]).max(),
                  np.abs(top - expected["top_logits"]).max(), np.abs(logits.max(1) - top[:, 0]).max(),
                  np.abs(lse - expected["logsumexp"]).max()]
    return max(diffs)


def test_import_gives_tensorflows_logits(imported):
    layout, model, _ = imported
    assert max_diff_to_tensorflow(model, layout) < TOLERANCE


def test_fixture_models_differ():
    """The fine-tuned weights moved away from the initial ones, so both layouts test something of their own."""
    assert EXPECTED["finetune"]["min_mean_abs_change"] > 0.01
    first = np.array(EXPECTED["openai"][0]["logits_at_check_ids"])
    assert np.abs(first - EXPECTED["run1"][0]["logits_at_check_ids"]).max() > 0.1


def test_model_survives_save_pretrained(imported, tmp_path):
    layout, model, tokenizer = imported
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    reloaded = GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    ids = EXPECTED["prompts"][1]["ids"]
    assert np.abs(all_logits(reloaded, ids) - all_logits(model, ids)).max() < 1e-6
    assert max_diff_to_tensorflow(reloaded, layout) < TOLERANCE
    assert AutoTokenizer.from_pretrained(tmp_path).encode("Hello world") == [15496, 995]


def test_tokenizer_encodes_like_openai(imported):
    _, _, tokenizer = imported
    assert len(tokenizer) == 50257
    assert tokenizer.encode("Hello world") == [15496, 995]
    assert tokenizer.encode(" Hello world") == [18435, 995]
    assert tokenizer.eos_token_id == 50256
    for prompt in EXPECTED["prompts"]:  # ids from gpt-2-simple's copy of OpenAI's encoder.py
        assert tokenizer.encode(prompt["text"]) == prompt["ids"]
        assert tokenizer.decode(prompt["ids"]) == prompt["text"]


def test_progress_bar(folder, capsys):
    load_tf_gpt2(folder, progress=True)
    assert "Importing TF GPT-2" in capsys.readouterr().err


def test_checkpoint_found_without_checkpoint_file(folder):
    """gpt-2-simple names the latest step in `checkpoint`; without it, the highest model-<step> is taken."""
    (folder / "checkpoint").unlink()
    for suffix in (".index", ".data-00000-of-00001"):  # an older step, which must not be picked
        shutil.copy(folder / f"model-20{suffix}", folder / f"model-3{suffix}")
    assert find_checkpoint(folder) == folder / "model-20"
    model, _ = load_tf_gpt2(folder, progress=False)
    assert max_diff_to_tensorflow(model, "run1") < TOLERANCE


def test_checkpoint_file_with_foreign_absolute_path(tmp_path):
    """TF writes absolute paths when saved with one (e.g. /content/checkpoint/run1 on Colab): only the name counts."""
    folder = model_folder(tmp_path, "openai")
    assert "/tmp" in (folder / "checkpoint").read_text()  # as the fixture was written
    assert find_checkpoint(folder) == folder / "model.ckpt"


# --- errors a person can act on ---


@pytest.mark.parametrize("name", ["hparams.json", "encoder.json", "vocab.bpe"])
def test_missing_model_file(folder, name):
    (folder / name).unlink()
    with pytest.raises(ModelError, match=re.escape(f"{name} is missing in {folder}")):
        load_tf_gpt2(folder, progress=False)


def test_missing_data_file(folder):
    (folder / "model-20.data-00000-of-00001").unlink()
    with pytest.raises(ModelError, match=r"data file .*model-20\.data-00000-of-00001 is missing"):
        load_tf_gpt2(folder, progress=False)


def test_truncated_data_file(folder):
    data = folder / "model-20.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    with pytest.raises(ModelError, match=r"model-20\.data-00000-of-00001 is truncated"):
        load_tf_gpt2(folder, progress=False)


def test_garbage_index(folder):
    (folder / "model-20.index").write_bytes(b"not an sstable at all" * 10)
    with pytest.raises(ModelError, match=r"model-20\.index is not a readable TensorFlow checkpoint index"):
        load_tf_gpt2(folder, progress=False)


def test_corrupted_index_block(folder):
    index = folder / "model-20.index"
    data = bytearray(index.read_bytes())
    data[20] ^= 0xFF  # inside the first data block
    index.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="fails its checksum"):
        load_tf_gpt2(folder, progress=False)


def test_folder_without_checkpoint(folder):
    for path in folder.glob("model-20.*"):
        path.unlink()
    with pytest.raises(ModelError, match=rf"No TensorFlow checkpoint .* in {re.escape(str(folder))}"):
        load_tf_gpt2(folder, progress=False)


def test_not_a_model_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelError, match=re.escape(f"hparams.json is missing in {tmp_path}")):
        load_tf_gpt2(tmp_path, progress=False)
    with pytest.raises(ModelError, match="is not a folder"):
        load_tf_gpt2(tmp_path / "notes.txt", progress=False)


@pytest.mark.parametrize("change, message", [
    ({"n_embd": 16}, r"tensor model/wte has shape \[50257, 8\], hparams.json needs \[50257, 16\]"),
    ({"n_layer": 3}, "has no tensor model/h2/ln_1/g"),
    ({"n_layer": 1}, "has layers model/h1/ beyond hparams.json's n_layer=1"),
    ({"n_vocab": 50000}, "encoder.json .* has 50257 tokens, more than hparams.json's n_vocab=50000"),
])
def test_hparams_that_do_not_fit_the_checkpoint(folder, change, message):
    hparams = json.loads((folder / "hparams.json").read_text())
    (folder / "hparams.json").write_text(json.dumps({**hparams, **change}))
    with pytest.raises(ModelError, match=message):
        load_tf_gpt2(folder, progress=False)


# --- the checkpoint reader on its own ---


def test_read_checkpoint_lists_every_tensor():
    tensors = read_checkpoint(FIXTURES / "tf_gpt2" / "openai" / "model.ckpt")
    assert len(tensors) == 4 + 2 * 12
    assert tensors["model/wte"].shape == (50257, 8) and tensors["model/wte"].dtype == np.float32
    assert tensors["model/h1/attn/c_attn/w"].shape == (1, 8, 24)


def test_half_precision_dtypes():
    """float16 and bfloat16 tensors, read from float32 bytes relabelled through the index entry."""
    ckpt = TFCheckpoint(FIXTURES / "tf_gpt2" / "openai" / "model.ckpt")
    x = ckpt.read("model/ln_f/g")
    entry = ckpt.entries["model/ln_f/g"]
    ckpt.entries["half"] = dataclasses.replace(entry, dtype=19, shape=(2 * x.size,))
    ckpt.entries["bfloat16"] = dataclasses.replace(entry, dtype=14, shape=(2 * x.size,))
    assert np.array_equal(ckpt.read("half"), np.frombuffer(x.tobytes(), "<f2"))
    bf16 = ckpt.read("bfloat16")
    assert bf16.dtype == np.float32
    assert np.array_equal(bf16[1::2], (x.view(np.uint32) & 0xFFFF0000).view(np.float32))


def test_unsupported_dtype_is_named():
    ckpt = TFCheckpoint(FIXTURES / "tf_gpt2" / "openai" / "model.ckpt")
    ckpt.entries["text"] = dataclasses.replace(ckpt.entries["model/ln_f/g"], dtype=7)
    with pytest.raises(ModelError, match=r"Tensor text in .*model\.ckpt\.index is string: not supported"):
        ckpt.read("text")


def test_missing_index(tmp_path):
    with pytest.raises(ModelError, match=re.escape(f"index {tmp_path / 'model.ckpt.index'} is missing")):
        TFCheckpoint(tmp_path / "model.ckpt")


def test_snappy_blocks():
    # length 11, literal "abcd", copy 4 back x 4 (1-byte offset form), literal "xyz"
    stream = bytes([11, 3 << 2]) + b"abcd" + bytes([(0 << 2) | 1, 4, 2 << 2]) + b"xyz"
    assert snappy_decompress(stream) == b"abcdabcdxyz"
    overlapping = bytes([6, 0]) + b"a" + bytes([(1 << 2) | 1, 1])  # "a", then copy 5 from 1 back
    assert snappy_decompress(overlapping) == b"aaaaaa"
