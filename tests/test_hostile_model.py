"""Hostile input to the model layer (issue 18): each row is refused with one line naming the culprit, and
nothing is written (no run folder, no changed file, no logged generation).

Through the real entry points: `proverbot train`, `generate` and `corpus stats` (chatbot.cli.main), and
model.corpus.read_corpus, model.run.load_run, model.train.train.
"""

import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from chatbot.cli import main
from model.corpus import read_corpus
from model.errors import CorpusError, ModelError
from model.run import load_run
from model.train import make_config, train
from tests.conftest import PROVERBS

TEXT = "one\n==========\ntwo\n"


def fifo(folder: Path) -> Path:
    os.mkfifo(folder / "pipe.txt")
    return folder / "pipe.txt"


def unix_socket(folder: Path) -> Path:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(folder / "s.txt"))  # the file stays after the socket is closed
    server.close()
    return folder / "s.txt"


def linked(target: Path, folder: Path) -> Path:
    (folder / "link.txt").symlink_to(target)
    return folder / "link.txt"


def folder_with(make: Callable[[Path], object]) -> Callable[[Path], Path]:
    """A folder holding a good .txt file and what `make` puts there."""
    def build(folder: Path) -> Path:
        corpus = folder / "corpus"
        corpus.mkdir()
        (corpus / "a.txt").write_text(TEXT)
        make(corpus)
        return corpus
    return build


def written(content: bytes) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        (folder / "c.txt").write_bytes(content)
        return folder / "c.txt"
    return build


# (what the corpus is, what the one line says)
CORPORA = {
    "dev-zero": (lambda folder: Path("/dev/zero"), "/dev/zero: a character device, not a text file"),
    "fifo": (fifo, "pipe.txt: a FIFO (named pipe), not a text file"),
    "link-to-fifo": (lambda folder: linked(fifo(folder), folder), "link.txt: a FIFO (named pipe), not a text file"),
    "socket": (unix_socket, "s.txt: a socket, not a text file"),
    "folder-with-fifo": (folder_with(fifo), "pipe.txt: a FIFO (named pipe), not a text file"),
    "folder-with-link-to-dev-zero": (folder_with(lambda corpus: linked(Path("/dev/zero"), corpus)),
                                     "link.txt: a character device"),
    "empty": (written(b""), "c.txt: the file is empty"),
    "binary": (written(b"\x7fELF\x02\x01\x01\x00\x00\x00"), "c.txt, line 1: this looks like a binary file"),
    "latin-1": (written("caf\xe9\n==========\nna\xefve\n".encode("latin-1")), "c.txt, line 1: not valid UTF-8"),
}

# `proverbot train` options out of range or of the wrong kind
OPTIONS = [
    (["--steps", "0"], "steps must be at least 1, or -1 (until Ctrl-C, epochs or patience) (got 0)"),
    (["--steps", "-5"], "steps must be at least 1, or -1 (until Ctrl-C, epochs or patience) (got -5)"),
    (["--epochs", "0"], "epochs must be a number above 0 (got 0.0)"),
    (["--epochs", "-2"], "epochs must be a number above 0 (got -2.0)"),
    (["--epochs", "nan"], "epochs must be a number above 0 (got nan)"),
    (["--epochs", "inf"], "epochs must be a number above 0 (got inf)"),
    (["--patience", "-1"], "patience must be 0 (off) or more (got -1)"),
    (["--val-every", "-10"], "val_every must be 0 (off) or more (got -10)"),
    (["--eval-samples", "-1"], "eval_samples must be 0 (off) or more (got -1)"),
    (["--learning-rate", "0"], "learning_rate must be between 0 and 1 (got 0.0)"),
    (["--learning-rate", "-0.001"], "learning_rate must be between 0 and 1 (got -0.001)"),
    (["--learning-rate", "nan"], "learning_rate must be between 0 and 1 (got nan)"),
    (["--dropout", "1"], "dropout must be at least 0 and below 1 (got 1.0)"),
    (["--dropout", "-0.1"], "dropout must be at least 0 and below 1 (got -0.1)"),
    (["--seed", str(2**64)], "seed must fit in 64 bits"),
    (["--device", "gpu"], "device must be auto, cpu, cuda, cuda:N or mps (got 'gpu')"),
    (["--run-name", "../elsewhere"], "run_name must be a plain folder name"),
]


def corrupt_copy(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + b"\xff\x00garbage" + data[middle + 9:]


# (file of the run, what is done to it, the short reason in the line)
DAMAGE = [
    ("model.safetensors", lambda data: data[: len(data) // 2], "incomplete metadata"),
    ("model.safetensors", lambda data: b"", "header too small"),
    ("config.json", lambda data: data[: len(data) // 2], ""),
    ("generation_config.json", corrupt_copy, "can't decode byte 0xff"),
    ("tokenizer.json", lambda data: data[:100], ""),
    ("tokenizer.json", lambda data: b'{"version": "1.0"}', "no key"),
    ("tokenizer_config.json", lambda data: b"", "Expecting value"),
    ("proverbot.json", lambda data: b"[1, 2]", "a JSON list, not an object"),
    ("proverbot.json", lambda data: b'{"separator": 5}', "the separator is 5, not text"),
    ("corpus.txt", corrupt_copy, "can't decode byte 0xff"),
    ("config.json", None, "the file is missing"),
    ("tokenizer.json", None, "the file is missing"),
]


def files(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def refused(capsys, argv: list[str], expected: str) -> str:
    """Run `proverbot ARGV`: exit status 1 and exactly one line on stderr, the expected one."""
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("proverbot: error: "), err
    assert expected in err, err
    assert "Traceback" not in out + err
    return err


def damage(folder: Path, name: str, change) -> None:
    path = folder / name
    if change is None:
        path.unlink()
    else:
        path.write_bytes(change(path.read_bytes()))


@pytest.mark.parametrize("name", CORPORA)
def test_hostile_corpus_in_corpus_stats(tmp_path, capsys, name):
    make, expected = CORPORA[name]
    refused(capsys, ["corpus", "stats", str(make(tmp_path))], expected)


@pytest.mark.parametrize("name", CORPORA)
def test_hostile_corpus_in_train_creates_no_run(tmp_path, capsys, name):
    make, expected = CORPORA[name]
    checkpoints = tmp_path / "checkpoints"
    refused(capsys, ["train", "--corpus", str(make(tmp_path)), "--checkpoint-dir", str(checkpoints)], expected)
    assert not checkpoints.exists()


@pytest.mark.parametrize("options, expected", OPTIONS, ids=[" ".join(argv) for argv, _ in OPTIONS])
def test_bad_training_option_creates_no_run(tmp_path, capsys, options, expected):
    checkpoints = tmp_path / "checkpoints"
    argv = ["train", "--corpus", str(PROVERBS), "--checkpoint-dir", str(checkpoints), *options]
    line = refused(capsys, argv, f"Bad training options: {expected}")
    assert line.count(" must ") == 1  # this option only
    assert not checkpoints.exists()


def test_bad_options_from_a_settings_file_or_a_caller_are_refused_the_same_way():
    with pytest.raises(ModelError, match=r"steps must be a whole number \(got '5'\); overwrite must be true or false"):
        make_config("tiny", steps="5", overwrite="yes")
    with pytest.raises(ModelError, match="n_embd must be a multiple of n_head"):
        make_config("tiny", n_embd=64, n_head=3)
    with pytest.raises(ModelError, match="max_corpus_mb must be a number above 0"):
        make_config("tiny", max_corpus_mb=0)


@pytest.mark.parametrize("max_bytes, make, expected", [
    (1000, written(b"x\n==========\n" * 200), "c.txt is 2.5 KB; the largest corpus read is 1000 bytes"),
    (3 << 10, folder_with(lambda corpus: (corpus / "b.txt").write_text("y\n" * 2100)),
     "corpus is 4.1 KB; the largest corpus read is 3.0 KB"),
], ids=["file", "folder"])
def test_a_corpus_over_the_cap_is_refused_before_reading(tmp_path, max_bytes, make, expected):
    with pytest.raises(CorpusError) as err:
        read_corpus(make(tmp_path), max_bytes=max_bytes)
    assert str(err.value).endswith(f"{expected} (setting max_corpus_mb).")


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux's /proc")
def test_a_file_longer_than_its_size_says_is_cut_at_the_cap():
    """/proc files say 0 bytes and have more: what is read is counted too (as for a file that grows)."""
    with pytest.raises(CorpusError, match=r"^/proc/self/maps is more than 100 bytes; the largest corpus read is 100"):
        read_corpus("/proc/self/maps", max_bytes=100)


def test_max_corpus_mb_reaches_the_corpus_reader(tmp_path):
    cfg = make_config("tiny", corpus=str(PROVERBS), checkpoint_dir=str(tmp_path / "checkpoints"), max_corpus_mb=0.01)
    with pytest.raises(CorpusError, match=r"proverbs_clean.txt is \d+\.\d KB; the largest corpus read is 10.2 KB"):
        train(cfg, progress=False)
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("name, change, reason", DAMAGE, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(DAMAGE)])
def test_a_damaged_run_file_is_named_in_generate_and_load_run(run_copy, tmp_path, capsys, name, change, reason):
    damage(run_copy, name, change)
    before = files(run_copy)
    expected = f"The checkpoint cannot be loaded: {run_copy / name} is corrupt or incomplete ("
    argv = ["generate", "--checkpoint-dir", str(run_copy.parent), "--run-name", run_copy.name, "--device", "cpu"]
    line = refused(capsys, argv, expected)
    assert reason in line and line.endswith("); train again or restore it.\n")
    with pytest.raises(ModelError) as err:
        load_run(run_copy)
    assert f"proverbot: error: {err.value}\n" == line
    assert files(run_copy) == before
    assert not (tmp_path / "log.db").exists()  # no generation logged


@pytest.mark.parametrize("change, reason", [
    (lambda data: data[: len(data) // 2], "PytorchStreamReader failed reading zip archive"),
    (lambda data: b"", "EOFError"),
], ids=["truncated", "empty"])
def test_a_damaged_training_state_is_named_when_training_resumes(run_copy, capsys, change, reason):
    damage(run_copy, "training_state.pt", change)
    before = files(run_copy)
    argv = ["train", "--corpus", str(PROVERBS), "--checkpoint-dir", str(run_copy.parent), "--run-name", run_copy.name]
    line = refused(capsys, argv, f"{run_copy / 'training_state.pt'} is corrupt or incomplete ({reason}")
    assert line.endswith("); train again or restore it.\n")
    assert files(run_copy) == before
