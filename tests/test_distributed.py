"""Training under torchrun (model/distributed.py): 2 processes with gloo on the CPU step as one process with the same
global batch, and a run resumes across process counts either way. Each torchrun launch takes ~20 s (start-up)."""

import csv
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from chatbot.cli import main
from model import distributed
from model.candidates import SampleRequest
from model.errors import ModelError
from model.run import load_run
from model.sample import Sampler
from tests.conftest import PROVERBS

PROVERBOT = str(Path(sys.executable).parent / "proverbot")
# Fine-tuning the session's tiny run (2 layers x 64, 64-token windows): small, and no dropout (a fine-tune's default).
OPTIONS = ["--corpus", str(PROVERBS), "--run-name", "ft", "--batch-size", "4", "--accumulate-gradients", "2",
           "--print-every", "1", "--val-every", "0", "--sample-every", "1000", "--save-every", "1000",
           "--eval-samples", "0", "--learning-rate", "0.001", "--device", "cpu"]


def torchrun(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node 2 proverbot train ...` (a free port of its own: tests may run side by
    side)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", PROVERBOT,
               "train", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)


def losses(folder: Path) -> dict[int, float]:
    with open(folder / "metrics.csv", newline="") as f:
        return {int(row["step"]): float(row["loss"]) for row in csv.DictReader(f)}


def test_two_processes_train_as_one_and_resume_across_process_counts(trained_run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    base = ["--base", str(trained_run)]
    # 3 steps in one process, then the same run continued to step 6 in one process (the reference) and, from a copy,
    # by 2 processes: a DDP job resumes a single process's run
    assert main(["train", *OPTIONS, *base, "--checkpoint-dir", "one", "--steps", "3"]) == 0
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    assert main(["train", *OPTIONS, *base, "--checkpoint-dir", "one", "--steps", "6"]) == 0
    job = torchrun(tmp_path, *OPTIONS, *base, "--checkpoint-dir", "two", "--steps", "6")
    assert job.returncode == 0, job.stderr[-3000:]
    assert "2 processes (gloo): global batch 4 = 2 x 2 windows of 64 tokens, accumulate 2: 512 tokens a step" \
        in job.stdout
    assert job.stdout.count("Trained two/ft to step 6 (steps)") == 1  # rank 0 alone reports
    assert "tokens/s for the whole job (2 processes, global batch 4)" in job.stdout

    # the same loss curve: each process trains on its half of the same global batch, and the gradients' all-reduce
    # only sums the halves in another order (float32: ~1e-7 relative a sum), so the losses agree to far better than
    # 1e-4 (measured: at most 1e-6, the last digit metrics.csv keeps), while one step moves the loss by ~0.05
    one, two = losses(tmp_path / "one" / "ft"), losses(tmp_path / "two" / "ft")
    assert sorted(two) == sorted(one) == [1, 2, 3, 4, 5, 6]
    assert max(abs(one[step] - two[step]) for step in one) < 1e-4
    assert abs(one[4] - one[6]) > 1e-3  # the curve moves: the comparison above is not of constants
    a, b = load_file(tmp_path / "one" / "ft" / "model.safetensors"), load_file(tmp_path / "two" / "ft" /
                                                                               "model.safetensors")
    assert max((a[name] - b[name]).abs().max().item() for name in a) < 1e-4

    # a single process resumes the DDP job's run (the model saved unwrapped, the random state the global one)
    capsys.readouterr()
    assert main(["train", *OPTIONS, *base, "--checkpoint-dir", "two", "--steps", "7"]) == 0
    assert "Trained two/ft to step 7" in capsys.readouterr().out
    texts = [s.text for s in Sampler(load_run(tmp_path / "two" / "ft")).generate(
        SampleRequest(nsamples=2, batch_size=2, length=20, seed=0))]
    assert len(texts) == 2 and all(isinstance(text, str) for text in texts)


def test_a_world_size_that_does_not_divide_the_batch_is_one_line(trained_run, tmp_path):
    job = torchrun(tmp_path, *OPTIONS, "--base", str(trained_run), "--checkpoint-dir", "ck", "--steps", "2",
                   "--batch-size", "3")
    assert job.returncode != 0
    ours = [line for line in job.stderr.splitlines() if line.startswith("proverbot: ")]
    assert ours == ["proverbot: error: --batch-size 3 cannot be split across 2 processes: it is the global batch, "
                    "so it must be a multiple of the number of processes (e.g. 2)."]
    assert "Traceback" not in job.stdout and not (tmp_path / "ck").exists()


@pytest.mark.parametrize("env, said", [
    ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "BATCH": "3"}, "--batch-size 3 cannot be split across 2"),
    ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "BATCH": "3"}, None),  # rank 0 says it; the others exit
    ({"WORLD_SIZE": "2"}, "WORLD_SIZE is set, so RANK and LOCAL_RANK must be whole numbers"),
    ({"WORLD_SIZE": "2", "RANK": "one", "LOCAL_RANK": "0"}, "RANK and LOCAL_RANK must be whole numbers"),
    ({"WORLD_SIZE": "two", "RANK": "0", "LOCAL_RANK": "0"}, "must be whole numbers"),
    ({"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0"}, "RANK must be in 0..WORLD_SIZE-1"),
    ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "-1"}, "LOCAL_RANK at least 0"),
])
def test_bad_torchrun_settings_stop_before_the_processes_connect(trained_run, tmp_path, monkeypatch, capsys,
                                                                 env, said):
    """What torchrun would give each process, met before any process group starts: one line, nothing written."""
    batch = env.pop("BATCH", "4")
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = main(["train", *OPTIONS, "--base", str(trained_run), "--checkpoint-dir", str(tmp_path / "ck"),
                 "--steps", "1", "--batch-size", batch])
    out, err = capsys.readouterr()
    assert code == 1 and out == "" and not (tmp_path / "ck").exists()
    assert not torch.distributed.is_initialized()
    if said is None:
        assert err == ""
    else:
        assert len(err.splitlines()) == 1 and err.startswith("proverbot: error: ") and said in err


def _resume_step(rank: int, folder: str) -> None:
    """One of two processes that resume different steps (as two machines that see different run folders do)."""
    world = distributed.World(rank, rank, 2)
    torch.distributed.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=2)
    try:
        distributed.same_everywhere(world, "step", 100 + rank, "copy the run folder to each machine")
    except ModelError as err:
        Path(folder, f"rank{rank}.txt").write_text(str(err))
    finally:
        torch.distributed.destroy_process_group()


def test_processes_that_disagree_stop_together_with_one_line_each(tmp_path):
    processes = torch.multiprocessing.spawn(_resume_step, args=(str(tmp_path),), nprocs=2, join=False)
    deadline = time.monotonic() + 300
    while not processes.join(timeout=1):
        assert time.monotonic() < deadline, "the processes hang"
    assert (tmp_path / "rank0.txt").read_text() == ("The processes see a different step (rank 0: 100): copy the run "
                                                    "folder to each machine.")
    assert (tmp_path / "rank1.txt").read_text().startswith("The processes see a different step (rank 1: 101)")
