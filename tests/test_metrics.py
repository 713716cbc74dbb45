"""Issue 16, points 2 and 4: gradient checkpointing, learning-rate schedules, metrics.csv and `proverbot plot`,
on the tiny model (seconds each)."""

import csv
import json
import logging
import math
import os

import signal

import pytest
import torch
from safetensors.torch import load_file

from chatbot.app import training_report
from chatbot.cli import main
from model.errors import ModelError
from model.metrics import COLUMNS, METRICS, MetricsLog, Row, best_validation, read_metrics
import model.train
from model.run import load_state, save_run
from model.schedule import lr_factor
from model.train import Trainer, TrainResult, make_config, train
from tests.conftest import PROVERBS, tiny_config

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def csv_lines(folder) -> list[list[str]]:
    with open(folder / METRICS, newline="") as f:
        return list(csv.reader(f))


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


# -- learning-rate schedules ----------------------------------------------------------------------------------

def test_schedule_factors_warm_up_then_decay_to_zero():
    assert [lr_factor(s, "constant", 4, None) for s in (0, 1, 3, 4, 1000)] == [0.25, 0.5, 1.0, 1.0, 1.0]
    assert [lr_factor(s, "linear", 0, 10) for s in (0, 5, 9, 10)] == [1.0, 0.5, pytest.approx(0.1), 0.0]
    assert lr_factor(2, "cosine", 2, 10) == 1.0 and lr_factor(6, "cosine", 2, 10) == pytest.approx(0.5)
    assert lr_factor(10, "cosine", 2, 10) == pytest.approx(0.0, abs=1e-12)


def test_a_cosine_schedule_resumed_halfway_trains_exactly_as_one_run(tmp_path, monkeypatch):
    """The lr of each step (metrics.csv) follows the warm-up and the cosine; the scheduler's state is saved and a
    resumed run continues it: same learning rates, same weights, metrics.csv's header once and each step once."""
    options = dict(steps=10, lr_schedule="cosine", warmup_steps=2, learning_rate=1e-3, print_every=1, val_every=4,
                   save_every=5)
    straight = train(tiny_config(tmp_path / "a", **options), progress=False)

    def save_run_and_get_sigterm(*args):
        signal.raise_signal(signal.SIGTERM)  # `docker stop` during the save at step 5
        return save_run(*args)

    monkeypatch.setattr(model.train, "save_run", save_run_and_get_sigterm)
    assert train(tiny_config(tmp_path / "b", **options), progress=False).step == 5
    monkeypatch.undo()
    with open(tmp_path / "b" / "run1" / METRICS, "a") as f:  # a killed run logged steps past its checkpoint...
        f.write("6,3072,5.1,,0.0009,100,9.5\n7,35")              # ... the last row cut short
    resumed = train(tiny_config(tmp_path / "b", **options), progress=False)

    lines = csv_lines(resumed.folder)
    assert lines[0] == list(COLUMNS) and [line[0] for line in lines[1:]] == [str(s) for s in range(1, 11)]
    rows = read_metrics(resumed.folder / METRICS)
    assert [row.lr for row in rows] == [pytest.approx(1e-3 * lr_factor(s, "cosine", 2, 10), rel=1e-6)
                                        for s in range(10)]
    assert rows[0].lr == pytest.approx(5e-4) and rows[1].lr == rows[2].lr == pytest.approx(1e-3)
    assert rows[-1].lr == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert [row.step for row in rows if row.val_loss is not None] == [4, 8]
    assert [row.tokens for row in rows] == [step * 8 * 64 for step in range(1, 11)]
    elapsed = [row.elapsed_s for row in rows]
    assert elapsed == sorted(elapsed) and all(row.tokens_per_s > 0 for row in rows)
    straight_rows = read_metrics(straight.folder / METRICS)
    assert [(r.lr, r.loss, r.val_loss) for r in rows] == [(r.lr, r.loss, r.val_loss) for r in straight_rows]
    a, b = load_file(straight.folder / "model.safetensors"), load_file(resumed.folder / "model.safetensors")
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert load_state(resumed.folder)["scheduler"]["last_epoch"] == 10


def test_a_new_learning_rate_on_resume_takes_effect_at_the_resumed_step(run_copy):
    train(tiny_config(run_copy.parent, run_name=run_copy.name, steps=43, learning_rate=1e-4, print_every=1,
                      lr_schedule="linear"), progress=False)
    rows = [row for row in read_metrics(run_copy / METRICS) if row.step > 40]
    assert [row.lr for row in rows] == [pytest.approx(1e-4 * (1 - s / 43)) for s in (40, 41, 42)]


def test_a_fresh_run_starts_its_metrics_anew(run_copy):
    assert read_metrics(run_copy / METRICS)[-1].step == 40  # the fixture's run logged steps 10 to 40
    train(tiny_config(run_copy.parent, run_name=run_copy.name, restore_from="fresh", overwrite=True, steps=3,
                      print_every=1), progress=False)
    assert [row.step for row in read_metrics(run_copy / METRICS)] == [1, 2, 3]


# -- gradient checkpointing -----------------------------------------------------------------------------------

def block_calls(trainer) -> list[int]:
    """Counts the passes into the first block's MLP (a recompute in the backward pass is one more; it stops once it
    has what the backward pass needs, so the count is taken where the MLP starts)."""
    calls = [0]
    mlp = next(module for name, module in trainer.model.named_modules() if name.endswith("transformer.h.0.mlp"))
    mlp.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def checkpointing_runs(make_trainer) -> tuple[dict, dict]:
    """({False: losses, True: losses}, {False: MLP passes, True: MLP passes}) of 3 steps of 2 micro-batches each,
    without and with gradient checkpointing."""
    losses, calls = {}, {}
    for on in (False, True):
        trainer = make_trainer(on)
        calls[on] = block_calls(trainer)
        losses[on] = [trainer.train_step() for _ in range(3)]
    return losses, calls


@pytest.mark.parametrize("dropout, dtype", [(0.0, "float32"), (0.2, "float32"), (0.0, "bfloat16")])
def test_gradient_checkpointing_recomputes_and_trains_the_same(tmp_path, dropout, dtype):
    """Same seed, same losses with and without it (dropout masks and autocast replayed in the recompute)."""
    losses, calls = checkpointing_runs(lambda on: Trainer(tiny_config(
        tmp_path / str(on), gradient_checkpointing=on, dropout=dropout, dtype=dtype, accumulate_gradients=2)))
    assert calls == {False: [3 * 2], True: [3 * 2 * 2]}  # one forward per micro-batch, plus its recompute
    assert losses[True] == pytest.approx(losses[False], abs=1e-5)


def test_gradient_checkpointing_with_lora(trained_run, tmp_path):
    """peft's adapters on a frozen base: the gradient reaches them through the recomputed blocks (else the second
    and third steps, after Adam moved the adapters at 1e-2 without checkpointing, would differ)."""
    def lora_trainer(on):
        return Trainer(make_config(str(trained_run), corpus=str(PROVERBS), checkpoint_dir=str(tmp_path / str(on)),
                                   device="cpu", lora=True, lora_rank=4, lora_dropout=0.0, gradient_checkpointing=on,
                                   batch_size=4, accumulate_gradients=2, learning_rate=1e-2, eval_samples=0))

    losses, calls = checkpointing_runs(lora_trainer)
    assert calls == {False: [6], True: [12]} and losses[True] == pytest.approx(losses[False], abs=1e-5)


def test_gradient_checkpointing_with_only_the_transformer_layers(run_copy):
    before = load_file(run_copy / "model.safetensors")
    train(tiny_config(run_copy.parent, run_name=run_copy.name, steps=42, gradient_checkpointing=True,
                      only_train_transformer_layers=True, learning_rate=0.05), progress=False)
    after = load_file(run_copy / "model.safetensors")
    assert torch.equal(before["transformer.wte.weight"], after["transformer.wte.weight"])
    name = "transformer.h.0.attn.c_attn.weight"  # the first block: its gradient flows through a frozen embedding
    assert not torch.equal(before[name], after[name])
    config = json.loads((run_copy / "config.json").read_text())
    assert config.get("use_cache") is not False and "gradient_checkpointing" not in config  # samples as before


# -- bad options ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("options, expected", [
    ({"warmup_steps": -1}, "warmup_steps must be 0 (off) or more (got -1)"),
    ({"warmup_steps": 40, "steps": 40}, "warmup_steps must be below steps (got 40 and 40)"),
    ({"lr_schedule": "step"}, "lr_schedule must be one of constant, linear, cosine (got 'step')"),
    ({"lr_schedule": "cosine", "steps": -1}, "lr_schedule cosine decays to 0 at the last step, so it needs steps or "
                                             "epochs (got steps -1)"),
    ({"warmup_steps": "10"}, "warmup_steps must be a whole number (got '10')"),
    ({"gradient_checkpointing": "yes"}, "gradient_checkpointing must be true or false (got 'yes')"),
])
def test_bad_schedule_options_are_one_line(tmp_path, options, expected):
    with pytest.raises(ModelError) as err:
        tiny_config(tmp_path, **options)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_a_warmup_longer_than_the_epochs_is_refused(tmp_path):
    with pytest.raises(ModelError, match=r"warmup_steps must be below the run's total steps \(got 100000; epochs "
                                         r"0.5 make \d+ steps\)"):
        Trainer(tiny_config(tmp_path, steps=-1, epochs=0.5, warmup_steps=100000, lr_schedule="linear"))
    assert not (tmp_path / "run1").exists()


@pytest.mark.parametrize("argv, expected", [
    (["--warmup-steps", "-3"], "warmup_steps must be 0 (off) or more (got -3)"),
    (["--lr-schedule", "linear", "--steps", "-1"], "lr_schedule linear decays to 0 at the last step"),
    (["--warmup-steps", "5", "--steps", "5"], "warmup_steps must be below steps (got 5 and 5)"),
])
def test_bad_schedule_flags_are_one_line_and_write_nothing(capsys, tmp_path, argv, expected):
    code, _, err = run_cli(capsys, "train", "--corpus", str(PROVERBS), "--checkpoint-dir", str(tmp_path), *argv)
    assert code == 1 and len(err.strip().splitlines()) == 1 and expected in err
    assert not any(tmp_path.iterdir())


def test_an_unknown_schedule_flag_is_a_usage_error(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--corpus", str(PROVERBS), "--lr-schedule", "exponential")
    assert code == 2 and "invalid choice: 'exponential'" in err


# -- metrics.csv ----------------------------------------------------------------------------------------------

def test_each_row_is_on_disk_as_soon_as_it_is_written(tmp_path):
    path = tmp_path / METRICS
    with MetricsLog(path, step=0) as metrics:
        metrics.write(step=1, tokens=512, loss=5.5, lr=1e-3, tokens_per_s=100.0)
        assert read_metrics(path) == [Row(1, 512, 5.5, None, 1e-3, 100.0, pytest.approx(0.0, abs=5.0))]
        metrics.write(step=2, tokens=1024, val_loss=5.25)
        assert read_metrics(path)[-1].val_loss == 5.25 and read_metrics(path)[-1].loss is None


def test_unreadable_rows_are_skipped_with_a_warning_and_a_foreign_file_refused(tmp_path, caplog):
    path = tmp_path / METRICS
    path.write_bytes(",".join(COLUMNS).encode() + b"\n1,512,5.5,,0.001,100,1.0\nx,1,2\n2,1024,,5.2,,,\n-3,0,,,,,\n"
                     b'"4","2048","5.0","","","",""\n\x00\x00\x00\xff\n5,2560,4.9,,,,\n')
    with caplog.at_level(logging.WARNING, logger="model.metrics"):
        assert [row.step for row in read_metrics(path)] == [1, 2, 4, 5]  # a crash's NUL bytes: one bad line
    assert f"{path}, line 3: not a row of 7 numbers, skipped" in caplog.text and "line 5" in caplog.text
    assert "line 7" in caplog.text
    path.write_text("date,price\n2024-01-01,3\n")
    with pytest.raises(ModelError, match="is not a metrics file that proverbot wrote: its first line is "
                                         "'date,price'.*Move it away"):
        read_metrics(path)
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ModelError, match="is not a metrics file that proverbot wrote"):
        read_metrics(path)
    path.unlink()
    path.mkdir()
    with pytest.raises(ModelError, match="Cannot read .*metrics.csv: Is a directory"):
        read_metrics(path)


def test_the_best_row_is_the_one_the_trainer_keeps():
    rows = [Row(10, 1, 5.0), Row(20, 2, 4.9, 4.80), Row(30, 3, 4.8, 4.70), Row(40, 4, 4.7, 4.69995),
            Row(50, 5, 4.6, float("nan"))]
    assert best_validation(rows).step == 30  # 4.69995 is not 1e-4 better: patience would keep step 30's weights
    assert best_validation(rows[:1]) is None


def test_the_training_report_says_where_the_curves_are(trained_run):
    report = training_report(TrainResult(trained_run, 40, 3.0, 3.1, 1000.0, "steps"))
    assert f"Loss curves: {trained_run / METRICS}; draw them with `proverbot plot tiny --checkpoint-dir " \
           f"{trained_run.parent}`" in report


# -- proverbot plot -------------------------------------------------------------------------------------------

def test_plot_draws_a_png_with_the_best_validation_marked(capsys, trained_run, tmp_path):
    best = best_validation(read_metrics(trained_run / METRICS))
    output = tmp_path / "curves.png"
    code, out, _ = run_cli(capsys, "plot", "tiny", "--checkpoint-dir", str(trained_run.parent), "--output", str(output))
    assert code == 0 and output.read_bytes().startswith(PNG_SIGNATURE) and output.stat().st_size > 10_000
    assert out.strip() == (f"Wrote {output}: 4 rows of {trained_run / METRICS}, steps 10 to 40; best validation "
                           f"loss {best.val_loss:.3f} at step {best.step}.")
    svg = tmp_path / "curves.svg"  # an SVG keeps the legend's text, in comments: the best is marked in the image
    assert run_cli(capsys, "plot", "tiny", "--checkpoint-dir", str(trained_run.parent), "--output", str(svg))[0] == 0
    text = svg.read_text()
    assert f"best validation: {best.val_loss:.3f} at step {best.step}" in text and "validation loss" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "curves.svg"]  # no temporary file left


def test_plot_writes_into_the_run_folder_by_default(capsys, run_copy):
    code, out, _ = run_cli(capsys, "plot", "--checkpoint-dir", str(run_copy.parent))
    assert code == 0 and (run_copy / "curves.png").read_bytes().startswith(PNG_SIGNATURE)


def no_metrics(run):
    (run / METRICS).unlink()


def header_only(run):
    (run / METRICS).write_text(",".join(COLUMNS) + "\n")


def empty_file(run):
    (run / METRICS).write_text("")


def foreign_file(run):
    (run / METRICS).write_text("a,b\n1,2\n")


@pytest.mark.parametrize("spoil, expected", [
    (no_metrics, "has no metrics.csv: runs trained before proverbot recorded one, and imported runs, have none"),
    (header_only, "metrics.csv holds no losses yet"),
    (empty_file, "metrics.csv holds no losses yet"),
    (foreign_file, "metrics.csv is not a metrics file that proverbot wrote"),
])
def test_plot_of_a_run_without_metrics_is_one_line(capsys, run_copy, tmp_path, spoil, expected):
    spoil(run_copy)
    output = tmp_path / "out" / "curves.png"
    output.parent.mkdir()
    code, _, err = run_cli(capsys, "plot", "tiny", "--checkpoint-dir", str(run_copy.parent), "--output", str(output))
    assert code == 1 and err.count("\n") == 1 and err.startswith("proverbot: error: ") and expected in err
    assert not any(output.parent.iterdir())


@pytest.mark.parametrize("where, expected", [
    ("missing/curves.png", "the folder {tmp}/missing does not exist; create it first."),
    ("folder", "is a folder; name a file in it, e.g. {tmp}/folder/curves.png."),
    ("curves.txt", "name a .png, .svg or .pdf file (the extension picks the format)."),
    ("curves", "name a .png, .svg or .pdf file"),
])
def test_plot_to_a_bad_output_is_one_line(capsys, trained_run, tmp_path, where, expected):
    (tmp_path / "folder").mkdir()
    code, _, err = run_cli(capsys, "plot", "tiny", "--checkpoint-dir", str(trained_run.parent),
                           "--output", str(tmp_path / where))
    assert code == 1 and err.count("\n") == 1 and expected.format(tmp=tmp_path) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder"] and not any((tmp_path / "folder").iterdir())


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in a read-only folder")
def test_plot_into_a_read_only_folder_is_one_line(capsys, trained_run, tmp_path):
    tmp_path.chmod(0o500)
    try:
        code, _, err = run_cli(capsys, "plot", "tiny", "--checkpoint-dir", str(trained_run.parent),
                               "--output", str(tmp_path / "curves.png"))
    finally:
        tmp_path.chmod(0o700)
    assert code == 1 and "cannot write in the folder" in err and not any(tmp_path.iterdir())


def test_plot_of_an_unknown_run_is_one_line(capsys, trained_run):
    code, _, err = run_cli(capsys, "plot", "nope", "--checkpoint-dir", str(trained_run.parent))
    assert code == 1 and "No trained run 'nope'" in err
