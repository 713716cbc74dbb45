"""Learning from the votes (issue 17): preference pairs from a hand-made log (a real SQLite file), `proverbot votes
export`, and `proverbot train --from-votes` on the session's tiny model."""

from datetime import UTC, datetime

from sqlalchemy import update

from storage.models import Candidate, Post

T0 = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)


async def batch(db, texts, *, run="tiny", checkpoint="ck1", prefix="", unusable=()):
    """A finished generation of `run` with these candidate texts; returns the candidates' ids."""
    from storage import NewCandidate

    gid = await db.record_generation("console", channel_id="c1", prefix=prefix, run_name=run, checkpoint_id=checkpoint)
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
