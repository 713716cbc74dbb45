from model.corpus import read_corpus
from model.tokenizer import EOS, encode_blocks, gpt2_tokenizer, separator_ids, train_tokenizer

from tests.conftest import PROVERBS

SEP = "=========="


def test_gpt2_tokenizer_encodes_real_text():
    tokenizer = gpt2_tokenizer()
    assert len(tokenizer) == 50257
    assert tokenizer.encode("Hello world") == [15496, 995]
    text = "the fear of the LORD is the beginning of knowledge — ünïcödé 🙂"
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_trained_tokenizer_round_trip_and_special_separator():
    blocks = read_corpus(PROVERBS).blocks
    tokenizer = train_tokenizer(blocks, 1024, SEP)
    assert 900 < len(tokenizer) <= 1024
    for text in blocks[:50] + ["Unseen WORDS, digits 1234 and émoji 🙂"]:
        ids = tokenizer.encode(text)
        assert ids and tokenizer.decode(ids) == text
    assert separator_ids(tokenizer, SEP) == [tokenizer.convert_tokens_to_ids(SEP)]
    assert tokenizer.eos_token == EOS


def test_block_stream_puts_separator_between_blocks():
    tokenizer = train_tokenizer(["a wise son", "a foolish son"] * 20, 300, SEP)
    (sep,) = separator_ids(tokenizer, SEP)
    stream = encode_blocks(tokenizer, ["a wise son", "a foolish son"], SEP)
    assert stream[0] == sep and stream[-1] == sep and stream.count(sep) == 3
    assert tokenizer.decode(stream, skip_special_tokens=True) == "a wise sona foolish son"


def test_gpt2_separator_is_clean_boundary():
    tokenizer = gpt2_tokenizer()
    sep = separator_ids(tokenizer, SEP)
    assert tokenizer.decode(sep) == f"\n{SEP}\n"
    stream = encode_blocks(tokenizer, ["one", "two"], SEP)
    assert stream == sep + tokenizer.encode("one") + sep + tokenizer.encode("two") + sep
    # the same ids as the tutorial's file format gives: the separator never merges with its neighbours
    assert tokenizer.encode(f"\n{SEP}\none\n{SEP}\ntwo\n{SEP}\n") == stream
