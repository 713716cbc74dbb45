"""Tokenizers: GPT-2's byte-level BPE for pretrained bases, a small one trained on the corpus for `tiny`.

Either way the separator between blocks is a clean token boundary: blocks are encoded one by one and
joined with the separator's own ids, so sampling can stop the moment the separator comes out.
With a trained tokenizer the separator is one special token.
"""

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2TokenizerFast, PreTrainedTokenizerFast

EOS = "<|endoftext|>"
GPT2_VOCAB = Path(__file__).parent / "gpt2vocab"


def wrap(tokenizer: Tokenizer, separator: str | None = None) -> PreTrainedTokenizerFast:
    extra = {"additional_special_tokens": [separator]} if separator else {}
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS, bos_token=EOS, unk_token=EOS, **extra)


def gpt2_tokenizer(vocab_dir: Path = GPT2_VOCAB, n_ctx: int = 1024) -> GPT2TokenizerFast:
    """OpenAI's GPT-2 tokenizer from encoder.json + vocab.bpe (the files of models/124M).
    Built from vocab=/merges= objects: in transformers 5 the vocab_file=/merges_file= arguments are
    ignored and give an empty vocabulary."""
    vocab = json.loads((vocab_dir / "encoder.json").read_text(encoding="utf-8"))
    lines = (vocab_dir / "vocab.bpe").read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
    return GPT2TokenizerFast(vocab=vocab, merges=merges, model_max_length=n_ctx)


def train_tokenizer(blocks: list[str], vocab_size: int, separator: str) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on the corpus, with EOS and the separator as special tokens."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, separator],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(blocks, trainer)
    return wrap(tokenizer, separator)


def separator_ids(tokenizer: PreTrainedTokenizerFast, separator: str) -> list[int]:
    """The ids that stand between two blocks: one special token, or GPT-2's encoding of the line."""
    if separator in tokenizer.all_special_tokens:
        return [tokenizer.convert_tokens_to_ids(separator)]
    return tokenizer.encode(f"\n{separator}\n")


def encode_blocks(tokenizer: PreTrainedTokenizerFast, blocks: list[str], separator: str) -> list[int]:
    """One token stream: each block preceded by the separator, so a block always starts after it."""
    sep = separator_ids(tokenizer, separator)
    stream = []
    for ids in tokenizer(blocks)["input_ids"]:
        stream += sep + ids
    return stream + sep
