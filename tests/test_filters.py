import re
import sys
import time
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from model.filters import (
    REASONS, CandidateFilter, Verdict, fits_tweet, normalise, summarise, tweet_length,
)

CORPUS = Path(__file__).resolve().parents[1] / "data" / "proverbs_clean.txt"


@pytest.fixture(scope="module")
def blocks():
    text = CORPUS.read_text(encoding="utf-8")
    return [b.strip() for b in re.split(r"^==========$", text, flags=re.M)]


@pytest.fixture(scope="module")
def flt(blocks):
    return CandidateFilter(blocks, blocked_words=["ass", "Son of a Gun"])


def test_corpus_shape(blocks):
    assert len(blocks) == 909
    assert blocks[6] == ("the fear of the lord is the beginning of knowledge but fools despise "
                         "wisdom and instruction")
    assert blocks[9] == "my son, if sinners entice thee, consent thou not"


# tweet length -----------------------------------------------------------------


def test_tweet_length_counts_latin_one_cjk_and_emoji_two():
    assert tweet_length("hello") == 5
    assert tweet_length("日本語") == 6
    assert tweet_length("😀") == 2
    assert tweet_length("👨‍👩‍👧") == 2  # one emoji of five code points
    assert tweet_length("a 日 😀") == 1 + 1 + 2 + 1 + 2


def test_tweet_length_counts_any_url_as_23():
    long_url = "https://example.com/a/very/long/path/that/goes/on/and/on"
    assert tweet_length("see " + long_url) == 4 + 23
    assert tweet_length("see https://t.co") == 4 + 23


def test_fits_tweet_boundary():
    assert fits_tweet("x" * 280)
    assert not fits_tweet("x" * 281)
    assert fits_tweet("日" * 140)
    assert not fits_tweet("日" * 141)
    url = "https://example.com/" + "p" * 100
    assert fits_tweet("x" * 256 + " " + url)  # 256 + 1 + 23 = 280
    assert not fits_tweet("x" * 257 + " " + url)
    assert fits_tweet("x" * 10, limit=10)
    assert not fits_tweet("x" * 11, limit=10)


# rules ------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "   ", " \n\t ", "...", "?!"])
def test_empty(flt, text):
    verdict = flt.check(text)
    assert verdict == Verdict(usable=False, reason="empty", detail="no words")


def test_too_long_at_281_weighted_chars(flt):
    assert flt.check("x" * 280).usable
    verdict = flt.check("x" * 281)
    assert verdict.reason == "too_long"
    assert verdict.detail == "tweet length 281 > 280"
    cjk = flt.check("日" * 141)
    assert cjk.reason == "too_long" and cjk.detail == "tweet length 282 > 280"


def test_max_length_is_configurable(blocks):
    short = CandidateFilter(blocks, max_length=20)
    assert short.check("y" * 21).reason == "too_long"
    assert short.check("y" * 20).usable


def test_blocked_word_is_case_insensitive_whole_word(flt):
    for text in ["the ass carries the burden", "The ASS carries the burden", "ass!", "an (Ass)"]:
        verdict = flt.check(text)
        assert verdict.reason == "blocked_word", text
        assert verdict.detail == 'contains blocked word "ass"'
    for text in ["the class of the wise", "passing clouds bring rain", "do not embarrass the poor",
                 "assess the harvest"]:
        assert flt.check(text).usable, text


def test_blocked_phrase_allows_any_spacing(flt):
    verdict = flt.check("he is a son  of A\ngun, says the farmer")
    assert verdict.reason == "blocked_word"
    assert verdict.detail == 'contains blocked word "son of a gun"'
    assert flt.check("a son of a farmer plants the field").usable


def test_copy_ignores_case_punctuation_and_spacing(flt, blocks):
    text = "The FEAR of the Lord is the beginning of knowledge;   but fools\ndespise wisdom, and instruction!"
    verdict = flt.check(text)
    assert verdict.reason == "copy"
    assert verdict.copy_of == 6
    assert verdict.detail == 'copies training block 6: "the fear of the lord is the beginning of..."'


def test_copy_of_a_repeated_block_names_the_first(flt, blocks):
    text = "A prudent man foreseeth the evil and hideth himself, but the simple pass on and are punished"
    indices = [i for i, b in enumerate(blocks) if normalise(b) == normalise(text)]
    assert len(indices) == 2
    assert flt.check(text).copy_of == indices[0]


def test_near_copy_one_word_changed(flt):
    verdict = flt.check("My son, if sinners TEMPT thee, consent thou not.")
    assert verdict.reason == "near_copy"
    assert verdict.copy_of == 9
    assert verdict.detail.startswith("near copy of training block 9 (")


def test_near_copy_block_plus_two_words(flt, blocks):
    verdict = flt.check(blocks[7] + " every morning")
    assert verdict.reason == "near_copy" and verdict.copy_of == 7
    verdict = flt.check("Listen closely: " + blocks[4])
    assert verdict.reason == "near_copy" and verdict.copy_of == 4


def test_near_copy_contains_whole_block_in_longer_text(flt, blocks):
    text = blocks[9] + ", for the river is wide and the boat is small"
    verdict = flt.check(text)
    assert verdict.reason == "near_copy" and verdict.copy_of == 9
    assert verdict.detail.startswith("contains training block 9 (100% of its words)")


def test_near_copy_taken_from_part_of_a_long_block(flt, blocks):
    assert blocks[4].startswith("a wise man will hear, and will increase learning and")
    verdict = flt.check("a wise man will hear, and will increase learning")
    assert verdict.reason == "near_copy" and verdict.copy_of == 4
    assert verdict.detail.startswith("is taken from training block 4")


@pytest.mark.parametrize("text, phrase", [
    ("in the fear of the lord the farmer plants his seed and waits for the rain",
     "the fear of the lord"),
    ("the builders forsake not the law when they raise bridges over the river",
     "forsake not the law"),
])
def test_sharing_a_common_phrase_is_not_a_near_copy(flt, blocks, text, phrase):
    assert any(phrase in b for b in blocks)
    assert flt.check(text) == Verdict(usable=True)


@pytest.mark.parametrize("text", [
    "The fear of the Lord.",              # inside several blocks, word for word
    "He that is slow to anger",           # inside a block, word for word
    "the way of the wicked is dark",      # 6 of its 7 words appear in order in block 409
])
def test_a_short_phrase_is_not_a_near_copy(flt, text):
    assert flt.check(text).usable


def test_near_copy_threshold_is_configurable(blocks):
    text = "my son, if sinners tempt thee, consent thou not"
    assert CandidateFilter(blocks).check(text).reason == "near_copy"
    assert CandidateFilter(blocks, near_copy=0.95).check(text).usable
    with pytest.raises(ValueError):
        CandidateFilter(blocks, near_copy=0)


def test_repeat_within_batch(flt):
    texts = [
        "A lamp in the window guides the traveller home.",
        "a lamp in the WINDOW, guides the traveller   home",
        "A candle in the window guides the traveller home to bed.",
    ]
    verdicts = flt.check_batch(texts)
    assert [v.reason for v in verdicts] == [None, "repeat", None]
    assert verdicts[1].detail == "same as an earlier candidate"


def test_repeat_against_seen_and_only_accepted_texts_count(flt, blocks):
    earlier = normalise("The river keeps no grudge against the stone.")
    assert flt.check("the river keeps no grudge against the stone!", seen={earlier}).reason == "repeat"
    assert flt.check("the river keeps no grudge against the stone!").usable
    # a rejected copy is not "seen": the second copy is a copy again, not a repeat
    verdicts = flt.check_batch([blocks[9], blocks[9]])
    assert [v.reason for v in verdicts] == ["copy", "copy"]


def test_rules_run_in_order(blocks):
    flt = CandidateFilter(blocks, blocked_words=["fools"])
    assert flt.check(blocks[6]).reason == "blocked_word"            # blocked before copy
    assert flt.check(blocks[6] + " x" * 200).reason == "too_long"   # too long before blocked
    assert flt.check(blocks[9] + "!").reason == "copy"
    verdicts = flt.check_batch([blocks[9], blocks[9] + " indeed"])
    assert [v.reason for v in verdicts] == ["copy", "near_copy"]    # near copy before repeat


def test_verdict_is_frozen_and_usable_has_no_reason(flt):
    verdict = flt.check("a new saying about bread")
    assert verdict == Verdict(usable=True, reason=None, detail="", copy_of=None)
    with pytest.raises(FrozenInstanceError):
        verdict.usable = False


def test_summarise_counts_dropped_reasons_in_fixed_order(flt, blocks):
    verdicts = flt.check_batch([
        "x" * 300, blocks[1], "a new saying about bread", blocks[2].upper(), "", "a new saying about bread",
    ])
    assert summarise(verdicts) == {"empty": 1, "too_long": 1, "copy": 2, "repeat": 1}
    assert list(summarise(verdicts)) == ["empty", "too_long", "copy", "repeat"]
    assert set(REASONS) == {"empty", "control_character", "too_long", "blocked_word", "copy", "near_copy", "repeat"}
    assert summarise([]) == {}


def test_twitter_text_shim_does_not_linger():
    shim = sys.modules.get("pkg_resources")
    assert shim is None or hasattr(shim, "require")  # only the real pkg_resources may stay loaded


def test_near_copy_lookup_uses_the_index(flt, blocks):
    # comparing with all 909 blocks takes tens of ms a candidate; through the index, about 0.5
    candidates = []
    for i in range(0, 900, 9):
        ws = normalise(blocks[i]).split()
        ws[len(ws) // 2] = "zebra"
        candidates.append((i, " ".join(ws)))
    start = time.perf_counter()
    verdicts = [flt.check_near_copy(normalise(text).split()) for _, text in candidates]
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, f"{elapsed:.2f} s for {len(candidates)} candidates"
    assert all(v is not None for v in verdicts)
    assert [normalise(blocks[v.copy_of]) for v in verdicts] == [normalise(blocks[i]) for i, _ in candidates]


@pytest.mark.parametrize("text", ["a soft answer\x00 turneth", "the \x1b[31mred\x1b[0m proverb", "wrath\x7f away"])
def test_a_control_character_makes_a_text_unusable(flt, text):
    verdict = flt.check(text)
    assert not verdict.usable and verdict.reason == "control_character"
    assert "U+00" in verdict.detail


def test_newlines_and_tabs_are_text(flt):
    assert flt.check("a line that is new\nand\ta tab in it for once").usable
