import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from model.errors import ModelError
from model.run import load_run, load_state
from model.train import Trainer, make_config, train

from tests.conftest import PROVERBS, ROOT, tiny_config


def weights(folder):
    return load_file(folder / "model.safetensors")


def test_training_lowers_loss_and_writes_a_run_folder(trained_run):
    meta = json.loads((trained_run / "proverbot.json").read_text())
    assert meta["step"] == 40 and meta["separator"] == "==========" and len(meta["checkpoint_id"]) == 12
    for name in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "corpus.txt", "training_state.pt"):
        assert (trained_run / name).is_file(), name
    # plain transformers can load it
    model = AutoModelForCausalLM.from_pretrained(trained_run)
    tokenizer = AutoTokenizer.from_pretrained(trained_run)
    assert model.config.n_layer == 2 and tokenizer.encode("the fear of the lord")
    # the trained model predicts the corpus far better than chance (ln 512 = 6.24)
    run = load_run(trained_run)
    ids = torch.tensor([tokenizer.encode("the fear of the lord is the beginning of knowledge")])
    loss = run.model(input_ids=ids, labels=ids).loss.item()
    assert loss < 5.0


def test_resume_continues_exactly(tmp_path):
    options = dict(steps=12, val_every=0, save_every=1000)
    straight = train(tiny_config(tmp_path / "a", **options), progress=False)
    train(tiny_config(tmp_path / "b", **{**options, "steps": 6}), progress=False)
    resumed = train(tiny_config(tmp_path / "b", **options), progress=False)
    assert straight.step == resumed.step == 12
    a, b = weights(straight.folder), weights(resumed.folder)
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert load_state(resumed.folder)["step"] == 12


def test_existing_run_is_not_replaced_by_accident(run_copy):
    checkpoints = run_copy.parent
    with pytest.raises(ModelError, match="already exists.*--restore-from latest.*--overwrite"):
        Trainer(tiny_config(checkpoints, run_name=run_copy.name, restore_from="fresh"))
    before = weights(run_copy)
    train(tiny_config(checkpoints, run_name=run_copy.name, restore_from="fresh", overwrite=True, steps=2), progress=False)
    assert json.loads((run_copy / "proverbot.json").read_text())["step"] == 2
    assert not torch.equal(before["transformer.h.0.mlp.c_fc.weight"], weights(run_copy)["transformer.h.0.mlp.c_fc.weight"])


def test_bad_options_are_listed():
    with pytest.raises(ModelError) as err:
        Trainer(make_config("tiny", corpus=str(PROVERBS), batch_size=0, learning_rate=5, optimizer="rmsprop"))
    message = str(err.value)
    assert "batch_size must be at least 1" in message and "learning_rate" in message and "optimizer" in message
    with pytest.raises(ModelError, match="Unknown training option"):
        make_config("tiny", stepz=3)


def test_epochs_set_the_number_of_steps(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, epochs=2, steps=-1))
    expected = 2 * len(trainer.train_data) / (trainer.cfg.batch_size * trainer.block_size)
    assert trainer.total_steps() == pytest.approx(expected, abs=1)


def test_only_train_transformer_layers_and_sgd(run_copy):
    before = weights(run_copy)
    train(tiny_config(run_copy.parent, run_name=run_copy.name, steps=43, only_train_transformer_layers=True,
                      optimizer="sgd", learning_rate=0.1), progress=False)
    after = weights(run_copy)
    assert torch.equal(before["transformer.wte.weight"], after["transformer.wte.weight"])
    assert torch.equal(before["transformer.ln_f.weight"], after["transformer.ln_f.weight"])
    assert not torch.equal(before["transformer.h.1.attn.c_attn.weight"], after["transformer.h.1.attn.c_attn.weight"])


def test_max_checkpoints_keeps_older_ones(tmp_path):
    result = train(tiny_config(tmp_path, steps=6, save_every=2, val_every=0, max_checkpoints=3), progress=False)
    kept = sorted(p.name for p in result.folder.glob("step-*"))
    assert kept == ["step-0000002", "step-0000004"]  # and step 6 in the run folder: 3 checkpoints, no duplicate
    assert json.loads((result.folder / "step-0000004" / "proverbot.json").read_text())["step"] == 4


def test_patience_stops_and_keeps_best_weights(tmp_path):
    result = train(tiny_config(tmp_path, steps=400, learning_rate=3e-2, val_every=5, patience=2, n_embd=32), progress=False)
    assert result.stopped == "patience" and result.step < 400


def test_ctrl_c_saves_a_checkpoint(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "chatbot.cli", "train", "--corpus", str(PROVERBS), "--checkpoint-dir", str(tmp_path),
               "--steps", "-1", "--val-every", "0", "--eval-samples", "0", "--save-every", "100000"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = ""
    deadline = time.monotonic() + 120
    while " 3/" not in output.replace("\r", "\n") and " 3it" not in output and time.monotonic() < deadline:
        output += process.stdout.read(1)
    process.send_signal(signal.SIGINT)
    output += process.communicate(timeout=120)[0]
    assert process.returncode == 0, output
    assert "Interrupted (SIGINT): saving a checkpoint" in output
    state = load_state(tmp_path / "run1")
    assert state["step"] >= 3
