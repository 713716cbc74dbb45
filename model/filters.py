"""Decide which sampled texts are usable tweet candidates, and say why the others are not.

A CandidateFilter is built once from the training blocks and a blocked-word list. check() runs
the rules in a fixed order and returns the first one that fails:

    empty -> control_character -> too_long -> blocked_word -> copy -> near_copy -> repeat

A control character (a NUL, an escape sequence; newlines and tabs are fine) makes a text unusable: it cannot be
shown, stored on every database or posted.

Copies and repeats are found on normalised text (lowercase, no punctuation, single spaces).
A near copy is at least 85% similar to a training block word for word, or (both having 8 words
or more) one of the two holds at least 85% of the other's words in order: a block with a clause
added, or a long stretch cut from a block. Sharing a common phrase is not enough.
To stay fast on big corpora, an inverted index of word pairs first picks the few blocks sharing
the largest share of pairs with the candidate; only those are compared with difflib.
"""

import functools
import heapq
import importlib.util
import itertools
import re
import sys
import types
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass
from difflib import SequenceMatcher
from pathlib import Path

REASONS = ("empty", "control_character", "too_long", "blocked_word", "copy", "near_copy", "repeat")
TWEET_LIMIT = 280
NEAR_COPY = 0.85       # similarity at or above which a candidate is a near copy of a block
MIN_OVERLAP_WORDS = 8  # "contains a block" / "is taken from a block" needs this many words
TOP_BLOCKS = 10        # how many indexed blocks get the exact comparison
PREVIEW_CHARS = 40


# -----------------------------------------------------------------------------
# tweet length


def _resource_string(module_name, resource):
    """The one pkg_resources call twitter_text makes: read a file next to a module."""
    return (Path(sys.modules[module_name].__file__).parent / resource).read_bytes()


def _import_parse_tweet():
    """twitter_text 3.0 imports pkg_resources, which setuptools >= 81 no longer ships.
    When it is missing, stand in for it just while twitter_text loads."""
    if importlib.util.find_spec("pkg_resources") is not None:
        from twitter_text import parse_tweet
        return parse_tweet
    shim = types.ModuleType("pkg_resources")
    shim.resource_string = _resource_string
    sys.modules["pkg_resources"] = shim
    try:
        from twitter_text import parse_tweet
    finally:
        del sys.modules["pkg_resources"]
    return parse_tweet


parse_tweet = _import_parse_tweet()


def tweet_length(text: str) -> int:
    """X/Twitter's weighted length: most Latin text counts 1 a character, CJK and emoji 2, a URL 23."""
    return parse_tweet(text).weightedLength


def fits_tweet(text: str, limit: int = TWEET_LIMIT) -> bool:
    return tweet_length(text) <= limit


# -----------------------------------------------------------------------------
# normalisation


def words(text: str) -> list[str]:
    """Lowercase words with punctuation dropped; apostrophes are removed ("don't" -> "dont")."""
    return re.findall(r"[^\W_]+", re.sub(r"['\u2019]", "", text.lower()))


def normalise(text: str) -> str:
    """The form used for copies and repeats: lowercase, no punctuation, single spaces."""
    return " ".join(words(text))


def shingles(ws: list[str]) -> set[str]:
    """Word pairs; a one-word text is its own shingle."""
    if len(ws) < 2:
        return set(ws)
    return {f"{a} {b}" for a, b in itertools.pairwise(ws)}


def similarity(a: list[str], b: list[str]) -> tuple[float, float]:
    """(ratio, overlap) of two word lists, from the words difflib finds in the same order in both.
    ratio: matched share of both texts. overlap: matched share of the shorter one."""
    matcher = SequenceMatcher(None, a, b, autojunk=False)
    matched = sum(m.size for m in matcher.get_matching_blocks())
    return 2 * matched / (len(a) + len(b)), matched / min(len(a), len(b))


def fold(text: str) -> str:
    """text without case or accents, for matching blocked words: fold("Crème BRÛLÉE") == "creme brulee"."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


def blocked_key(word: str) -> str:
    """The form two blocked words share when they block the same texts: folded, single spaces."""
    return " ".join(fold(word).split())


@functools.lru_cache(maxsize=64)
def blocked_pattern(blocked_words: tuple[str, ...] | frozenset[str]) -> re.Pattern | None:
    """One regex matching any blocked word or phrase as whole words in a fold()ed text (so case- and
    accent-insensitively): blocked_pattern(("creme",)).search(fold("Crème!")) finds "creme"."""
    entries = sorted({blocked_key(w) for w in blocked_words} - {""}, key=len, reverse=True)
    if not entries:
        return None
    alternatives = "|".join(r"\s+".join(map(re.escape, e.split())) for e in entries)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)")


# -----------------------------------------------------------------------------
# verdicts


@dataclass(frozen=True)
class Verdict:
    usable: bool
    reason: str | None = None    # one of REASONS, None when usable
    detail: str = ""             # for people, e.g. 'tweet length 301 > 280'
    copy_of: int | None = None   # index of the training block for "copy" and "near_copy"


USABLE = Verdict(usable=True)


def reject(reason: str, detail: str, copy_of: int | None = None) -> Verdict:
    return Verdict(usable=False, reason=reason, detail=detail, copy_of=copy_of)


def summarise(verdicts) -> dict[str, int]:
    """How many candidates each rule dropped, in REASONS order, e.g. {"copy": 2, "too_long": 1}."""
    counts = Counter(v.reason for v in verdicts if not v.usable)
    return {reason: counts[reason] for reason in REASONS if counts[reason]}


class CandidateFilter:
    """Built once from the training blocks; check() then judges one sampled text.

    blocks: the training texts; copy_of in a verdict is an index into this list.
    blocked_words: words or phrases, matched as whole words, case- and accent-insensitively (fold).
    max_length: weighted tweet length allowed (see tweet_length).
    near_copy: similarity in (0, 1] at which a text counts as a near copy of a block.
    """

    def __init__(self, blocks: list[str], blocked_words=(), max_length: int = TWEET_LIMIT,
                 near_copy: float = NEAR_COPY):
        if not 0 < near_copy <= 1:
            raise ValueError(f"near_copy must be in (0, 1], got {near_copy}")
        self.blocks = list(blocks)
        self.max_length = max_length
        self.near_copy = near_copy
        self.blocked = blocked_pattern(frozenset(blocked_words))
        self.block_words = [words(b) for b in self.blocks]
        self.exact = {}                 # normalised block -> index of its first occurrence
        self.index = defaultdict(list)  # shingle -> indices of the blocks that have it
        self.sizes = []                 # number of shingles in each block
        for i, ws in enumerate(self.block_words):
            self.exact.setdefault(" ".join(ws), i)
            block_shingles = shingles(ws)
            self.sizes.append(len(block_shingles))
            for s in block_shingles:
                self.index[s].append(i)
        # a pair found in very many blocks ("of the") picks nothing out: skip it at lookup
        self.max_postings = max(100, len(self.blocks) // 100)

    def check(self, text: str, seen=(), blocked: re.Pattern | None = None) -> Verdict:
        """The first rule `text` breaks, or USABLE. `seen`: normalised texts accepted before; `blocked`: a
        blocked_pattern of more words, applied with the filter's own (the log's blocklist, read per request)."""
        ws = words(text)
        if not ws:
            return reject("empty", "no words")
        control = next((ch for ch in text if unicodedata.category(ch) == "Cc" and ch not in "\n\t"), None)
        if control is not None:
            return reject("control_character", f"contains the control character U+{ord(control):04X}")
        length = tweet_length(text)
        if length > self.max_length:
            return reject("too_long", f"tweet length {length} > {self.max_length}")
        folded = fold(text)
        match = next((m for m in (p.search(folded) for p in (self.blocked, blocked) if p) if m), None)
        if match:
            return reject("blocked_word", f'contains blocked word "{" ".join(match[0].split())}"')
        norm = " ".join(ws)
        i = self.exact.get(norm)
        if i is not None:
            return reject("copy", f"copies training block {i}: {self.preview(i)}", copy_of=i)
        verdict = self.check_near_copy(ws)
        if verdict is not None:
            return verdict
        if norm in seen:
            return reject("repeat", "same as an earlier candidate")
        return USABLE

    def check_batch(self, texts, seen=()) -> list[Verdict]:
        """check() each text in order; a text repeats one accepted earlier in the batch or in `seen`."""
        seen = set(seen)
        verdicts = []
        for text in texts:
            verdict = self.check(text, seen)
            if verdict.usable:
                seen.add(normalise(text))
            verdicts.append(verdict)
        return verdicts

    def likely_blocks(self, ws: list[str]) -> list[int]:
        """The few blocks worth comparing with `ws`: those sharing the largest share of word pairs."""
        mine = shingles(ws)
        shared = Counter()
        for s in mine:
            ids = self.index.get(s)
            if ids and len(ids) <= self.max_postings:
                shared.update(ids)
        def dice(item: tuple[int, int]) -> float:
            """The share of both texts' pairs in common, so long blocks do not crowd out short ones."""
            return item[1] / (len(mine) + self.sizes[item[0]])

        return [i for i, _ in heapq.nlargest(TOP_BLOCKS, shared.items(), key=dice)]

    def check_near_copy(self, ws: list[str]) -> Verdict | None:
        best = None  # (score, ratio, overlap, index)
        for i in self.likely_blocks(ws):
            block = self.block_words[i]
            ratio, overlap = similarity(ws, block)
            if min(len(ws), len(block)) < MIN_OVERLAP_WORDS:
                overlap = 0.0
            score = max(ratio, overlap)
            if score >= self.near_copy and (best is None or score > best[0]):
                best = (score, ratio, overlap, i)
        if best is None:
            return None
        _, ratio, overlap, i = best
        if ratio >= self.near_copy:
            detail = f"near copy of training block {i} ({ratio:.0%} similar)"
        elif len(ws) > len(self.block_words[i]):
            detail = f"contains training block {i} ({overlap:.0%} of its words)"
        else:
            detail = f"is taken from training block {i} ({overlap:.0%} of the text)"
        return reject("near_copy", f"{detail}: {self.preview(i)}", copy_of=i)

    def preview(self, i: int) -> str:
        text = " ".join(self.blocks[i].split())
        if len(text) > PREVIEW_CHARS:
            text = text[:PREVIEW_CHARS].rstrip() + "..."
        return f'"{text}"'
