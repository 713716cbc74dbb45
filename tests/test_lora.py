"""LoRA (model/lora.py): training an adapter on the session's tiny run as its base, sampling, resuming, merging
(`proverbot export --merge`), and the bad input around it."""

import asyncio
import json
import shutil

import pytest
import torch
from peft import AutoPeftModelForCausalLM
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, GPT2LMHeadModel

from chatbot.cli import main
from model.candidates import SampleRequest
from model.errors import ModelError
from model.run import export_merged, file_hash, load_run
from model.sample import Sampler
from model.train import Trainer, make_config, train
from model.worker import ModelWorker
from tests.conftest import PROVERBS
from tests.test_importer import model_folder

QUICK = dict(steps=4, batch_size=2, accumulate_gradients=1, learning_rate=1e-2, val_every=0, sample_every=1000,
             save_every=1000, print_every=1, eval_samples=0, device="cpu")
BATCH = torch.tensor([[5, 17, 42, 99, 3, 250, 7, 11], [300, 2, 64, 128, 9, 77, 401, 13]])


def lora_config(base, checkpoint_dir, **options):
    return make_config(str(base), corpus=str(PROVERBS), checkpoint_dir=str(checkpoint_dir), lora=True,
                       **{"lora_rank": 4, "run_name": "lora", **QUICK, **options})


@pytest.fixture(scope="session")
def lora_run(trained_run, tmp_path_factory):
    """A LoRA run on the session's tiny run; tests must not change it."""
    return train(lora_config(trained_run, tmp_path_factory.mktemp("lora")), progress=False).folder


def logits(model, ids=BATCH) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=ids).logits


def test_only_the_adapter_trains_also_with_gradient_checkpointing_and_the_run_names_its_base(trained_run, tmp_path):
    base_hash = file_hash(trained_run / "model.safetensors")
    trainer = Trainer(lora_config(trained_run, tmp_path, steps=2, gradient_checkpointing=True), progress=False)
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    optimized = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    trainer.train()
    changed = [name for name, p in trainer.model.named_parameters() if not torch.equal(before[name], p)]
    assert changed and all(".lora_" in name for name in changed)
    assert any(".lora_B." in name for name in changed)  # B starts at zero: the adapter now does something
    trainable = [p for p in trainer.model.parameters() if p.requires_grad]
    assert len(optimized) == len(trainable) == 2 * 4 * 2  # 2 blocks x c_attn, c_proj, c_fc, mlp.c_proj x A and B
    folder = tmp_path / "lora"
    assert not (folder / "model.safetensors").exists() and (folder / "adapter_config.json").is_file()
    assert all(".lora_" in key for key in load_file(folder / "adapter_model.safetensors"))
    meta = json.loads((folder / "proverbot.json").read_text())
    base_meta = json.loads((trained_run / "proverbot.json").read_text())
    assert meta["base"] == str(trained_run.resolve()) and meta["base_checkpoint_id"] == base_meta["checkpoint_id"]
    assert file_hash(trained_run / "model.safetensors") == base_hash


def test_a_lora_run_samples_through_the_bot_and_the_cli(lora_run, trained_run, capsys):
    run = load_run(lora_run)
    assert type(run.model) is GPT2LMHeadModel  # merged: the sampler sees a plain GPT-2
    assert (logits(run.model) - logits(load_run(trained_run).model)).abs().max() > 1e-3  # the adapter counts

    async def sample():
        async with ModelWorker(lambda: Sampler(run)) as worker:
            return await worker.sample(SampleRequest(count=2, seed=1, length=20))

    batch = asyncio.run(sample())
    assert batch.samples >= 2 and batch.run_name == "lora"
    assert main(["generate", "--checkpoint-dir", str(lora_run.parent), "--run-name", "lora", "--nsamples", "2",
                 "--length", "10", "--seed", "1", "--device", "cpu", "--dtype", "float32"]) == 0
    assert capsys.readouterr().out.count("====================") == 1


def test_a_lora_run_resumes_exactly(trained_run, tmp_path):
    straight = train(lora_config(trained_run, tmp_path / "a", lora_dropout=0.1), progress=False)
    train(lora_config(trained_run, tmp_path / "b", lora_dropout=0.1, steps=2), progress=False)
    resumed = train(lora_config(trained_run, tmp_path / "b"), progress=False)  # no lora_dropout: the adapter's
    assert straight.step == resumed.step == 4
    a = load_file(straight.folder / "adapter_model.safetensors")
    b = load_file(resumed.folder / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def test_merged_export_matches_the_adapter_and_loads_in_transformers(lora_run, tmp_path, capsys):
    output = tmp_path / "new" / "merged"  # missing folders are made
    assert main(["export", str(lora_run), "--merge", str(output)]) == 0
    assert f"into {output}" in capsys.readouterr().out
    adapter_model = load_run(lora_run, merge_adapter=False).model
    expected = logits(adapter_model)
    assert type(adapter_model) is not GPT2LMHeadModel
    plain = AutoModelForCausalLM.from_pretrained(output)
    assert type(plain) is GPT2LMHeadModel
    assert (logits(plain) - expected).abs().max() < 1e-4
    assert not [key for key in load_file(output / "model.safetensors") if "lora" in key or "base_layer" in key]
    for name in ("config.json", "generation_config.json", "tokenizer.json", "proverbot.json", "corpus.txt"):
        assert (output / name).is_file(), name
    assert [p.name for p in output.parent.iterdir()] == ["merged"]  # the temporary folder is gone
    assert load_run(output).meta["merged_from"] == str(lora_run.resolve())  # a proverbot run as well
    peft_model = AutoPeftModelForCausalLM.from_pretrained(lora_run)  # peft's own loader reads the run folder
    assert (logits(peft_model) - expected).abs().max() < 1e-5


def test_train_merge_writes_the_merged_folder_at_the_end(trained_run, tmp_path, capsys):
    output = tmp_path / "merged"
    argv = ["train", "--corpus", str(PROVERBS), "--base", str(trained_run), "--lora", "--lora-rank", "2",
            "--steps", "2", "--batch-size", "2", "--accumulate-gradients", "1", "--eval-samples", "0",
            "--checkpoint-dir", str(tmp_path), "--run-name", "lora", "--device", "cpu", "--merge", str(output)]
    assert main(argv) == 0
    assert "Merged" in capsys.readouterr().out
    assert (logits(AutoModelForCausalLM.from_pretrained(output))
            - logits(load_run(tmp_path / "lora", merge_adapter=False).model)).abs().max() < 1e-4


def test_lora_on_an_imported_tensorflow_checkpoint(tmp_path, capsys):
    source = model_folder(tmp_path / "tf", "run1")  # gpt-2-simple's layout, GPT-2's vocabulary, 8 wide
    checkpoints = tmp_path / "checkpoints"
    assert main(["import", str(source), "--run-name", "imported", "--checkpoint-dir", str(checkpoints)]) == 0
    result = train(lora_config(checkpoints / "imported", checkpoints, lora_rank=8, steps=2, block_size=32,
                               batch_size=2), progress=False)
    run = load_run(result.folder)
    assert len(run.tokenizer) == 50257 and run.model.config.n_embd == 8
    assert Sampler(run).generate(SampleRequest(nsamples=1, length=5, seed=0))


# -- bad input: one line each, nothing written ------------------------------------------------------------------

def train_argv(base, checkpoint_dir, *options):
    return ["train", "--corpus", str(PROVERBS), "--base", str(base), "--steps", "2", "--eval-samples", "0",
            "--checkpoint-dir", str(checkpoint_dir), "--run-name", "x", "--device", "cpu", *options]


@pytest.mark.parametrize("options, status, message", [
    (["--lora-rank", "4"], 1, "lora_rank needs lora (--lora)"),
    (["--lora-alpha", "16", "--lora-dropout", "0.1"], 1, "lora_alpha and lora_dropout need lora (--lora)"),
    (["--lora", "--lora-rank", "0"], 2, "argument --lora-rank: must be at least 1, got 0"),
    (["--lora", "--lora-rank", "65"], 1, "lora_rank must be at most 64, the width of the base's layers (got 65)"),
    (["--lora", "--lora-alpha", "0"], 1, "lora_alpha must be a number above 0 (got 0.0)"),
    (["--lora", "--lora-dropout", "1"], 1, "lora_dropout must be at least 0 and below 1 (got 1.0)"),
    (["--lora", "--only-train-transformer-layers"], 1, "lora trains its adapters only"),
    (["--lora", "--base", "tiny"], 1, "lora fine-tunes a pretrained base"),
    (["--merge", "OUT"], 1, "--merge writes a LoRA run merged into its base: it goes with --lora"),
])
def test_bad_lora_options(trained_run, tmp_path, capsys, options, status, message):
    checkpoints = tmp_path / "checkpoints"
    options = [str(tmp_path / "out") if option == "OUT" else option for option in options]
    assert main(train_argv(trained_run, checkpoints, *options)) == status
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert status == 2 or len(err.strip().splitlines()) == 1
    assert not (checkpoints / "x").exists() and not (tmp_path / "out").exists()


def test_train_merge_into_a_used_folder_is_refused_before_training(trained_run, tmp_path, capsys):
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine")
    assert main(train_argv(trained_run, tmp_path / "checkpoints", "--lora", "--merge", str(used))) == 1
    assert f"{used} already exists and is not an empty folder" in capsys.readouterr().err
    assert not (tmp_path / "checkpoints" / "x").exists() and [p.name for p in used.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("case, message", [
    ("no adapter", "has no LoRA adapter, so there is nothing to merge"),
    ("output has files", "already exists and is not an empty folder"),
    ("output is a file", "already exists and is not an empty folder"),
    ("parent is a file", "is a file, not a folder"),
    ("no such run", "No trained run 'nothere'"),
])
def test_bad_exports(lora_run, trained_run, tmp_path, capsys, case, message):
    run, output = str(lora_run), tmp_path / "merged"
    if case == "no adapter":
        run = str(trained_run)
    elif case == "output has files":
        output.mkdir()
        (output / "keep.txt").write_text("mine")
    elif case == "output is a file":
        output.write_text("mine")
    elif case == "parent is a file":
        (tmp_path / "file").write_text("mine")
        output = tmp_path / "file" / "merged"
    elif case == "no such run":
        run = "nothere"
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["export", run, "--checkpoint-dir", str(lora_run.parent), "--merge", str(output)]) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_an_export_cut_short_leaves_nothing(lora_run, tmp_path, monkeypatch):
    def disk_full(path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("model.run.file_hash", disk_full)
    with pytest.raises(ModelError, match=r"Cannot write .*merged \(No space left on device\)"):
        export_merged(lora_run, tmp_path / "merged")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def lora_copy(lora_run, tmp_path):
    folder = tmp_path / "checkpoints" / "lora"
    shutil.copytree(lora_run, folder)
    return folder


def edit_meta(folder, **changes):
    path = folder / "proverbot.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize("name, damage", [("adapter_model.safetensors", b"\x00" * 10), ("adapter_config.json", b"{")])
def test_a_damaged_adapter_file_is_named(lora_copy, name, damage):
    (lora_copy / name).write_bytes(damage)
    with pytest.raises(ModelError, match=f"The checkpoint cannot be loaded: .*{name} is corrupt or incomplete"):
        load_run(lora_copy)


@pytest.mark.parametrize("changes, message", [
    ({"base": "/nonexistent/base"}, "is a LoRA adapter on /nonexistent/base, which is not there any more"),
    ({"base_checkpoint_id": "000000000000"}, "has been trained further since: the adapter does not fit it any more"),
    ({"base": None}, "names no base"),
])
def test_a_lora_run_whose_base_is_gone_or_changed(lora_copy, changes, message):
    edit_meta(lora_copy, **changes)
    with pytest.raises(ModelError, match=message):
        load_run(lora_copy)


def test_resuming_with_other_lora_options_is_refused(lora_copy, trained_run):
    config = lora_config(trained_run, lora_copy.parent, lora_rank=8, lora_dropout=0.2)
    with pytest.raises(ModelError, match=r"leave out lora_rank 8 \(the adapter's: 4\); lora_dropout 0.2"):
        Trainer(config, progress=False)
    with pytest.raises(ModelError, match="is a full fine-tune, not a LoRA run"):
        Trainer(lora_config(trained_run, trained_run.parent, run_name=trained_run.name), progress=False)


def test_a_lora_run_is_not_a_base(lora_copy, tmp_path, capsys):
    assert main(train_argv(lora_copy, tmp_path, "--lora")) == 1
    assert "is a LoRA run, not a whole model: merge it first (proverbot export lora --merge OUTPUT)" in \
        capsys.readouterr().err
