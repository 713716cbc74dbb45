"""Learning from the votes (issue 17): preference pairs from a hand-made log (a real SQLite file), `proverbot votes
export`, and `proverbot train --from-votes` on the session's tiny model."""

import asyncio
import json
import math
import os
import shutil
from datetime import UTC, datetime

import pytest
import torch
from sqlalchemy import update

from storage.models import Candidate, Post
from tests.conftest import PROVERBS

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)


async def batch(db, texts, *, run="tiny", checkpoint="ck1", prefix="", unusable=(), platform="console"):
    """A finished generation of `run` with these candidate texts (in channel c1); returns the candidates' ids."""
    from storage import NewCandidate

    gid = await db.record_generation(platform, channel_id="c1", prefix=prefix, run_name=run, checkpoint_id=checkpoint)
    news = [NewCandidate(text, usable=i not in unusable, reason=None if i not in unusable else "too_long")
            for i, text in enumerate(texts)]
    gen = await db.finish_generation(gid, news, run_name=run, checkpoint_id=checkpoint)
    return [c.id for c in gen.candidates]


async def votes(db, candidate_id, n, *, removed=False):
    for i in range(n):
        await db.record_vote(candidate_id, f"u{i}", "👍")
        if removed:
            await db.remove_vote(candidate_id, f"u{i}", "👍")


async def veto(db, candidate_id):
    async with db._write() as session:
        await session.execute(update(Candidate).where(Candidate.id == candidate_id).values(vetoed_at=T0))


async def post(db, candidate_id, *, withdrawn=False):
    done = await db.settle_post((await db.begin_post("dryrun", candidate_id=candidate_id)).id, "posted")
    if withdrawn:
        async with db._write() as session:
            await session.execute(update(Post).where(Post.id == done.id).values(deleted_at=T0))


def shown(pairs):
    return [(p.chosen, p.rejected, p.margin) for p in pairs]


async def test_pairs_from_a_hand_made_log(db):
    a, b, c, d, e = await batch(db, ["thou a", "thou b", "thou c", "thou d", "thou e"], prefix="thou", unusable=[4])
    await votes(db, a, 3)
    await votes(db, b, 1)
    await votes(db, c, 2, removed=True)      # removed votes do not count
    await votes(db, d, 5)                    # votes on a vetoed candidate do not count
    await veto(db, d)
    tie = await batch(db, ["tie a", "tie b"])
    await votes(db, tie[0], 1)
    await votes(db, tie[1], 1)
    await batch(db, ["nobody voted a", "nobody voted b"])
    posted_tie = await batch(db, ["post a", "post b", "post c"])
    await votes(db, posted_tie[0], 1)
    await votes(db, posted_tie[1], 1)
    await post(db, posted_tie[1])            # the posted one breaks the tie
    withdrawn = await batch(db, ["withdrawn a", "withdrawn b"])
    await votes(db, withdrawn[0], 2)
    await votes(db, withdrawn[1], 1)
    await post(db, withdrawn[1], withdrawn=True)   # a withdrawn post chooses nothing: the votes do
    other = await batch(db, ["other a", "other b"], run="other")
    await votes(db, other[0], 1)

    pairs = await db.preference_pairs("tiny")
    assert shown(pairs) == [
        ("thou a", "thou b", 2), ("thou a", "thou c", 3), ("thou a", "thou d", 4),
        ("thou b", "thou d", 2), ("thou c", "thou d", 1),
        ("post b", "post c", 1),
        ("withdrawn a", "withdrawn b", 1),
    ]
    first = pairs[0]
    assert (first.prompt, first.run_name, first.checkpoint_id, first.chosen_id, first.rejected_id) == (
        "thou", "tiny", "ck1", a, b)
    assert e not in {p.rejected_id for p in pairs} | {p.chosen_id for p in pairs}   # unusable: never a pair
    assert shown(await db.preference_pairs("other")) == [("other a", "other b", 1)]
    assert len(await db.preference_pairs()) == len(pairs) + 1
    assert await db.preference_pairs("nobody") == []


# -- tuning ------------------------------------------------------------------------------------------------------

WORD = "he"     # the community's taste in these tests: sayings that start with "he"


def taste_pairs(count: int, offset: int = 0) -> list[tuple[str, str, str]]:
    """(prompt, chosen, rejected): a corpus saying starting with WORD over one that does not."""
    from model.corpus import read_corpus

    blocks = read_corpus(PROVERBS).blocks
    liked = [b for b in blocks if b.startswith(WORD + " ")]
    others = [b for b in blocks if not b.startswith(WORD + " ")]
    return [("", liked[i], others[i]) for i in range(offset, offset + count)]


def mean_margin(folder, pairs) -> float:
    """How much likelier (log-probability) the model finds the chosen texts than the rejected ones, on average."""
    from model.preference import encode, log_probs
    from model.run import load_run

    run = load_run(folder)
    with torch.no_grad():
        margins = [log_probs(run.model, [encode(run, p, c), encode(run, p, r)], run.tokenizer.eos_token_id)
                   for p, c, r in pairs]
    return sum((m[0] - m[1]).item() for m in margins) / len(margins)


async def vote_for_taste(db, batches: int, checkpoint: str, run: str = "tiny", platform: str = "console") -> None:
    """`batches` voted batches of `run`: in each, a saying that starts with WORD got a vote and two others none (two
    pairs a batch)."""
    for _, chosen, rejected in taste_pairs(batches):
        other = taste_pairs(1, offset=batches + len(chosen) % 7)[0][2]
        ids = await batch(db, [rejected, chosen, other], run=run, checkpoint=checkpoint, platform=platform)
        await votes(db, ids[1], 1)


def voted_log(batches: int, checkpoint: str) -> None:
    """vote_for_taste in the test's private log (a SQLite file), from outside an event loop."""
    from storage import Database

    async def fill():
        db = Database(os.environ["PROVERBOT_DATABASE_URL"])
        await db.start()
        try:
            await vote_for_taste(db, batches, checkpoint)
        finally:
            await db.close()
    asyncio.run(fill())


def meta(folder) -> dict:
    return json.loads((folder / "proverbot.json").read_text())


def cli(capsys, *argv):
    from chatbot.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def test_tuning_moves_a_learnable_preference(run_copy):
    from model.preference import TuneConfig, tune

    pairs, held_out = taste_pairs(24), taste_pairs(24, offset=30)
    before = mean_margin(run_copy, held_out)
    result = tune(run_copy, pairs, TuneConfig(learning_rate=1e-3, device="cpu"), progress=False)
    assert mean_margin(run_copy, held_out) > before + 1.0     # nats: sayings starting with "he" became likelier
    assert result.prefers_after > result.prefers_before
    assert (result.pairs, result.steps) == (24, 9)           # 3 epochs of 3 batches of 8


def test_lora_keeps_a_plain_run_plain_and_a_lora_run_tunes_its_adapter(run_copy, trained_run, tmp_path):
    from model.preference import TuneConfig, tune
    from model.train import train
    from tests.test_lora import lora_config

    pairs, held_out = taste_pairs(24), taste_pairs(24, offset=30)
    before = mean_margin(run_copy, held_out)
    tune(run_copy, pairs, TuneConfig(lora=True, learning_rate=1e-2, device="cpu"), progress=False)
    assert meta(run_copy)["votes"]["lora"] is True and not (run_copy / "adapter_model.safetensors").exists()
    assert mean_margin(run_copy, held_out) > before                  # merged into the plain weights

    lora_run = train(lora_config(trained_run, tmp_path / "lora"), progress=False).folder
    adapter, old = (lora_run / "adapter_model.safetensors").read_bytes(), meta(lora_run)
    tune(lora_run, pairs, TuneConfig(device="cpu"), progress=False)
    assert (lora_run / "adapter_model.safetensors").read_bytes() != adapter
    assert not (lora_run / "model.safetensors").exists()              # still an adapter on the same base
    assert meta(lora_run)["base"] == old["base"] and meta(lora_run)["votes"]["lora"] is True


def test_train_from_votes_saves_a_new_checkpoint_and_keeps_the_old(run_copy, capsys):
    old = meta(run_copy)
    voted_log(12, old["checkpoint_id"])
    code, out, err = cli(capsys, "votes", "export", "--run-name", "tiny")
    assert code == 0 and out.count("  chosen   [#") == 24 and out.rstrip().endswith("24 pairs from 12 batches.")
    code, out, _ = cli(capsys, "votes", "export", "--json")
    exported = json.loads(out)
    assert len(exported) == 24 and exported[0]["chosen"].startswith(WORD + " ") and exported[0]["margin"] == 1

    code, out, err = cli(capsys, "train", "--from-votes", "--run-name", "tiny", "--checkpoint-dir",
                         str(run_copy.parent), "--device", "cpu")
    assert code == 0, err
    assert "on 24 preference pairs from 12 voted batches" in out
    new = meta(run_copy)
    assert new["checkpoint_id"] != old["checkpoint_id"]
    assert new["checkpoints"][-2:] == [old["checkpoint_id"], new["checkpoint_id"]]   # still its tokenizer's lineage
    assert new["votes"]["pairs"] == 24 and new["votes"]["batches"] == 12
    assert new["votes"]["tuned_from"] == old["checkpoint_id"] and new["step"] == old["step"] + 9   # 3 epochs of 3
    assert meta(run_copy / "before-votes")["checkpoint_id"] == old["checkpoint_id"]    # the previous one, loadable
    assert (run_copy / "training_state.pt").is_file()                                 # corpus training resumes
    assert not list(run_copy.glob(".*"))                                               # no staging left behind


def test_tuning_writes_metrics_rows_after_the_runs_step(run_copy):
    from model.metrics import read_metrics
    from model.preference import TuneConfig, tune

    step = meta(run_copy)["step"]
    before = read_metrics(run_copy / "metrics.csv")
    result = tune(run_copy, taste_pairs(24), TuneConfig(device="cpu", check_every=4), progress=False)
    rows = read_metrics(run_copy / "metrics.csv")
    assert rows[:len(before)] == before and [r.step for r in rows[len(before):]] == list(range(step + 1, step + 10))
    tuned = rows[len(before):]
    assert [r.val_loss is not None for r in tuned] == [i in (4, 8, 9) for i in range(1, 10)]   # checks, and the last
    assert all(b.tokens > a.tokens for a, b in zip(rows[len(before) - 1:], tuned))
    assert tuned[-1].val_loss == pytest.approx(math.log(result.perplexity.after))
    assert meta(run_copy)["votes"]["perplexity"] == {"base": result.perplexity.before,
                                                     "before": result.perplexity.before,
                                                     "after": result.perplexity.after}
    assert torch.load(run_copy / "training_state.pt", weights_only=False)["step"] == step + 9   # resumes after them


def held_out_perplexity(folder) -> float:
    from model.run import load_run
    from model.train import perplexity, split_blocks

    run = load_run(folder)
    return perplexity(run, split_blocks(run)[1])


def test_the_perplexity_budget_stops_tuning_and_keeps_the_last_weights_within_it(run_copy):
    from model.preference import TuneConfig, tune

    before = held_out_perplexity(run_copy)
    cfg = TuneConfig(learning_rate=3e-3, corpus=0.0, max_perplexity_rise=0.05, check_every=2, epochs=10, device="cpu")
    result = tune(run_copy, taste_pairs(24), cfg, progress=False)
    assert result.stopped == "perplexity" and 2 <= result.steps < 30 and result.steps % 2 == 0
    assert result.perplexity.base == pytest.approx(before)
    assert held_out_perplexity(run_copy) == pytest.approx(result.perplexity.after, rel=1e-4)
    assert result.perplexity.after <= before * 1.05
    assert meta(run_copy)["votes"]["stopped"] == "perplexity" and meta(run_copy)["votes"]["steps"] == result.steps


def test_the_budget_is_checked_on_the_blocks_the_run_held_out(run_copy):
    from model.preference import TuneConfig, tune
    from model.run import load_run
    from model.train import hold_out, perplexity

    assert meta(run_copy)["validation"] == {"fraction": 0.1, "seed": 1234}  # recorded by the training
    (run_copy / "proverbot.json").write_text(json.dumps({**meta(run_copy), "validation": {"fraction": 0.3, "seed": 7}}))
    run = load_run(run_copy)
    held_out = hold_out(run.blocks, 0.3, 7)[1]
    assert held_out != hold_out(run.blocks, 0.1, 1234)[1]
    result = tune(run_copy, taste_pairs(24), TuneConfig(epochs=1, device="cpu"), progress=False)
    assert result.perplexity.before == pytest.approx(perplexity(run, held_out))
    assert meta(run_copy)["validation"] == {"fraction": 0.3, "seed": 7}  # kept by the tuned checkpoint


def test_the_budget_counts_from_the_run_before_any_votes(run_copy):
    from model.errors import ModelError
    from model.preference import TuneConfig, tune

    base = held_out_perplexity(run_copy)
    first = tune(run_copy, taste_pairs(24), TuneConfig(learning_rate=1e-3, device="cpu"), progress=False)
    assert first.perplexity.after > base                   # the votes cost some perplexity
    rise = (first.perplexity.after / base - 1) * 0.9       # a budget the first tuning has already spent
    tuned = meta(run_copy)
    with pytest.raises(ModelError, match=r"already \d+% over [\d.]+ before any votes; tuning may add at most"):
        tune(run_copy, taste_pairs(24), TuneConfig(max_perplexity_rise=rise, device="cpu"), progress=False)
    assert meta(run_copy) == tuned
    second = tune(run_copy, taste_pairs(24, offset=30), TuneConfig(device="cpu"), progress=False)
    assert second.perplexity.base == pytest.approx(base) and second.perplexity.before == first.perplexity.after


def test_a_first_check_over_the_budget_saves_nothing(run_copy):
    from model.errors import ModelError
    from model.preference import TuneConfig, tune

    old = meta(run_copy)
    cfg = TuneConfig(learning_rate=0.5, corpus=0.0, max_perplexity_rise=0.001, check_every=1, device="cpu")
    with pytest.raises(ModelError, match=r"stopped at its first check \(step 1\).*Nothing changed: try a lower"):
        tune(run_copy, taste_pairs(24), cfg, progress=False)
    assert meta(run_copy) == old and not (run_copy / "before-votes").exists()


BAD = [  # (what, batches voted in the log, the sampling checkpoint (None: the run's own), extra arguments, the line)
    ("no votes", 0, None, [], "has 0 preference pairs from the votes; tuning needs at least 20"),
    ("too few pairs", 9, None, [], "has 18 preference pairs from the votes; tuning needs at least 20: vote on more"),
    ("another tokenizer", 12, "0123456789ab", [],
     "24 of its 24 preference pairs were sampled by checkpoints it never saved (0123456789ab)"),
    ("no such run", 12, None, ["--run-name", "nope"], "No trained run 'nope'"),
    ("a path for a run", 12, None, ["--run-name", "../tiny"], "'../tiny' is not a run name"),
    ("fractional epochs", 12, None, ["--epochs", "1.5"], "--epochs with --from-votes is a whole number"),
    ("negative rate", 12, None, ["--learning-rate", "-1"], "learning_rate must be between 0 and 1 (got -1.0)"),
    ("nan rate", 12, None, ["--learning-rate", "nan"], "learning_rate must be between 0 and 1 (got nan)"),
    ("no perplexity budget", 12, None, ["--max-perplexity-rise", "0"], "max_perplexity_rise must be above 0"),
    ("huge seed", 12, None, ["--seed", str(2**70)], "seed must be from 0 to 2**63 - 1"),
    ("no such device", 12, None, ["--device", "tpu"], "Device 'tpu' is not a device"),
    ("under torchrun", 12, None, [], "train --from-votes tunes in one process: run it without torchrun"),
]
ENV = {"under torchrun": {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}}   # as torchrun sets them


@pytest.mark.parametrize("what,batches,checkpoint,extra,line", BAD, ids=[row[0] for row in BAD])
def test_bad_input_is_one_line_and_changes_nothing(run_copy, capsys, monkeypatch, what, batches, checkpoint, extra,
                                                   line):
    for name, value in ENV.get(what, {}).items():
        monkeypatch.setenv(name, value)
    before = meta(run_copy)
    if batches:
        voted_log(batches, checkpoint or before["checkpoint_id"])
    code, out, err = cli(capsys, "train", "--from-votes", "--run-name", "tiny", "--checkpoint-dir",
                         str(run_copy.parent), *extra)
    assert code == 1 and out == ""
    assert err.startswith("proverbot: error: ") and err.count("\n") == 1 and line in err, err
    assert meta(run_copy) == before and not (run_copy / "before-votes").exists()


def test_votes_export_of_an_empty_log(capsys):
    assert cli(capsys, "votes", "export", "--run-name", "tiny")[1].startswith("No preference pairs of run 'tiny' yet")
    assert json.loads(cli(capsys, "votes", "export", "--json")[1]) == []


# -- retuning in the bot (retune_after_batches) ------------------------------------------------------------------

async def test_the_bot_retunes_after_n_voted_batches_and_says_so(trained_run, tmp_path):
    from chatbot import replies
    from chatbot.context import Context
    from chatbot.retune import Retuner
    from model.runinfo import checkpoint_id
    from tests.test_models_per_channel import bot
    from tests.test_scheduler import Announcements

    runs = tmp_path / "checkpoints"
    shutil.copytree(trained_run, runs / "alpha")
    old = checkpoint_id(runs / "alpha")
    async with bot(runs) as (core, pool):
        await vote_for_taste(core.db, 12, old, run="alpha", platform="test")
        front = Announcements()
        assert await Retuner(core, [front], every=13, device="cpu").check() is None     # 12 batches: not yet
        retuner = Retuner(core, [front], every=12, device="cpu")
        await (await retuner.check())
        new = checkpoint_id(runs / "alpha")
        started, done = front.texts()
        assert started.startswith("12 new voted batches: tuning run alpha on 24 preference pairs in the background")
        assert new != old and done.startswith(f"Run alpha learned from 24 preference pairs (checkpoint {new}")
        status = await core.status()
        assert status.learned_from == 24 and "It learned from 24 preference pairs" in replies.status(status)
        asked = await core.ask(Context("test", channel_id="c1", user_id="u1", user_name="ada"))
        assert (await core.db.get_generation(asked.generation_id)).checkpoint_id == new   # no restart needed
        assert await retuner.check() is None                                            # nothing new since
