import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

import model.run
import model.train
from model.errors import ModelError
from model.run import load_run, load_state, save_run
from model.signals import StopSignals
from model.train import Trainer, make_config, train
from tests.conftest import PROVERBS, ROOT, tiny_config


def weights(folder):
    return load_file(folder / "model.safetensors")


def test_training_lowers_loss_and_writes_a_run_folder(trained_run):
    meta = json.loads((trained_run / "proverbot.json").read_text())
    assert meta["step"] == 40 and meta["separator"] == "==========" and len(meta["checkpoint_id"]) == 12
    for name in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "corpus.txt",
                 "training_state.pt"):
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
    options = {"steps": 12, "val_every": 0, "save_every": 1000}
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
    train(tiny_config(checkpoints, run_name=run_copy.name, restore_from="fresh", overwrite=True, steps=2),
          progress=False)
    assert json.loads((run_copy / "proverbot.json").read_text())["step"] == 2
    name = "transformer.h.0.mlp.c_fc.weight"
    assert not torch.equal(before[name], weights(run_copy)[name])


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
    cfg = tiny_config(tmp_path, steps=400, learning_rate=3e-2, val_every=5, patience=2, n_embd=32)
    result = train(cfg, progress=False)
    assert result.stopped == "patience" and result.step < 400


def train_in_child(tmp_path, options: list[str], signum: int) -> tuple[int, str, int]:
    """`proverbot train` in a child process, sent `signum` once it printed a validation line (after its first steps):
    (exit status, its output, the step of that line). The output is read by a thread and polled, within bounds."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "chatbot.cli", "train", "--corpus", str(PROVERBS),
               "--checkpoint-dir", str(tmp_path), *options]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = queue.Queue()

    def read():
        for line in process.stdout:  # text mode: each tqdm update (ended by \r) is a line too
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    output, match, deadline = [], None, time.monotonic() + 180
    while match is None and time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):
            line = lines.get(timeout=1)
            if line is None:
                break
            output.append(line)
            match = re.search(r"step (\d+): validation loss", line)
    assert match, "".join(output)
    process.send_signal(signum)
    process.wait(timeout=120)
    output += iter(lambda: lines.get(timeout=10), None)
    return process.returncode, "".join(output), int(match[1])


@pytest.mark.parametrize("signum, stopped", [(signal.SIGINT, "interrupted"), (signal.SIGTERM, "terminated")])
def test_ctrl_c_or_sigterm_saves_a_checkpoint_that_a_rerun_resumes(tmp_path, signum, stopped):
    options = ["--steps", "5000", "--save-every", "1000", "--batch-size", "2", "--val-every", "2", "--patience", "0",
               "--eval-samples", "0", "--device", "cpu"]
    returncode, output, first_validation = train_in_child(tmp_path, options, signum)
    assert returncode == 128 + signum, output      # saved, then the shells' status for a stop by that signal
    saved = re.search(rf"{stopped.capitalize()} \({signum.name}\): saving a checkpoint at step (\d+)", output)
    assert saved and f"({stopped})" in output, output
    step = int(saved[1])
    assert step >= first_validation and load_state(tmp_path / "run1")["step"] == step  # nothing lost since step 0
    assert json.loads((tmp_path / "run1" / "proverbot.json").read_text())["step"] == step
    rerun = Trainer(make_config("tiny", corpus=str(PROVERBS), checkpoint_dir=str(tmp_path), batch_size=2, device="cpu"))
    assert rerun.step == step


def test_a_signal_during_a_save_lets_it_finish_and_stops_after_it(tmp_path, monkeypatch):
    saves, previous = [], signal.getsignal(signal.SIGTERM)

    def save_run_and_get_sigterm(run, *args):
        signal.raise_signal(signal.SIGTERM)  # `docker stop` while the checkpoint is being written
        saves.append(run.meta["step"])
        return save_run(run, *args)

    monkeypatch.setattr(model.train, "save_run", save_run_and_get_sigterm)
    result = train(tiny_config(tmp_path, steps=30, save_every=3, val_every=0), progress=False)
    assert result.stopped == "terminated" and result.step == 3
    assert saves == [3]  # finished, and not written a second time
    assert load_state(result.folder)["step"] == 3 and load_run(result.folder).meta["step"] == 3
    assert signal.getsignal(signal.SIGTERM) is previous


def test_stop_signals_cut_interruptible_work_only_and_restore_the_handlers():
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    with StopSignals() as signals:
        signal.raise_signal(signal.SIGINT)  # outside interruptible(): noted only
        assert signals.stopped == "interrupted"
        with pytest.raises(KeyboardInterrupt), signals.interruptible():
            pytest.fail("interruptible work starts after a stop signal")
    with StopSignals() as signals, pytest.raises(KeyboardInterrupt), signals.interruptible():
        signal.raise_signal(signal.SIGTERM)
        pytest.fail("the signal did not cut the work short")
    assert signals.stopped == "terminated"
    assert {signum: signal.getsignal(signum) for signum in previous} == previous
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with StopSignals() as signals:
            signal.raise_signal(signal.SIGTERM)  # ignored when training started: stays ignored
        assert signals.received is None
    finally:
        signal.signal(signal.SIGTERM, previous[signal.SIGTERM])


def test_a_save_killed_while_moving_its_files_is_completed_on_resume(run_copy, monkeypatch):
    monkeypatch.setattr(model.run, "finish_save", lambda folder: None)  # killed before the moves...
    train(tiny_config(run_copy.parent, run_name=run_copy.name, steps=42, val_every=0), progress=False)
    staged = run_copy / ".staging"
    os.replace(staged / "model.safetensors", run_copy / "model.safetensors")  # ... or after the first one
    new_weights = weights(run_copy)
    monkeypatch.undo()
    assert json.loads((run_copy / "proverbot.json").read_text())["step"] == 40  # the previous checkpoint's
    resumed = Trainer(tiny_config(run_copy.parent, run_name=run_copy.name, steps=50))
    assert resumed.step == 42 and not staged.exists()
    assert json.loads((run_copy / "proverbot.json").read_text())["step"] == 42
    assert all(torch.equal(value, weights(run_copy)[name]) for name, value in new_weights.items())
