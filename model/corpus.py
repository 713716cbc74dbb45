"""Read a training corpus into a list of text blocks.

Three inputs, as in the GPT-2 Twitter-bot recipe and gpt-2-simple:
- a text file whose blocks are separated by a separator line (default `==========`),
- a folder of `.txt` files (each file split the same way; a file without separator is one block),
- a CSV file and a column name (one block per row, like gpt-2-simple's `encode_csv`).
CRLF/CR line ends, a UTF-8 BOM and trailing whitespace are normalised away. Anything unusable
raises CorpusError naming the file (and line where there is one): what is not a regular file (a FIFO, a
device such as /dev/zero, a socket) is never opened, and no more than `max_bytes` are ever read.
"""

import csv
import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from model.errors import CorpusError

SEPARATOR = "=========="
MAX_CORPUS_BYTES = 1 << 30  # 1 GB: far more than any bot's corpus (the setting max_corpus_mb)
CHUNK = 1 << 24
SPECIAL_FILES = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                 (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


@dataclass
class Corpus:
    blocks: list[str]
    source: str
    separator: str = SEPARATOR

    def text(self) -> str:
        """The corpus in the tutorial's file format: blocks joined by separator lines."""
        return f"\n{self.separator}\n".join(self.blocks) + "\n"


@dataclass(frozen=True)
class Stats:
    """What `proverbot corpus stats` shows: sizes, the longest block (by tokens), how many blocks fit a tweet."""

    blocks: int
    words: int
    tokens: int
    longest: int            # the longest block's index
    longest_tokens: int
    longest_words: int
    fit_tweet: int


def corpus_stats(corpus: Corpus, tokenizer) -> Stats:
    """The corpus counted with `tokenizer` (a Hugging Face tokenizer: GPT-2's or a run's)."""
    from model.filters import fits_tweet

    tokens = [len(ids) for ids in tokenizer(corpus.blocks)["input_ids"]]
    words = [len(block.split()) for block in corpus.blocks]
    longest = max(range(len(corpus.blocks)), key=lambda i: tokens[i])
    return Stats(len(corpus.blocks), sum(words), sum(tokens), longest, tokens[longest], words[longest],
                 sum(fits_tweet(block) for block in corpus.blocks))


def read_corpus(
    path: str | Path, separator: str = SEPARATOR, csv_column: str | None = None, max_bytes: int = MAX_CORPUS_BYTES
) -> Corpus:
    """The blocks of a text file, a folder of .txt files or a CSV file, of `max_bytes` at most in all.

    >>> read_corpus("data/proverbs_clean.txt").blocks[0]
    'the proverbs of solomon the son of david, king of israel'
    """
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"{path}: no such file or folder.")
    files = _folder_files(path) if path.is_dir() else [path]
    size = sum(_regular_file_size(file) for file in files)
    if size > max_bytes:
        raise CorpusError(_too_big(path, _size(size), max_bytes))
    texts = _read_texts(path, files, max_bytes)
    if path.is_dir():
        blocks = [block for file in files for block in split_blocks(texts[file], separator, file, False)]
    elif csv_column is not None or path.suffix.lower() == ".csv":
        blocks = _read_csv(path, texts[path], csv_column)
    else:
        blocks = split_blocks(texts[path], separator, path, require_separator=True)
    if not blocks:
        raise CorpusError(f"{path}: no text blocks found.")
    return Corpus(blocks=blocks, source=str(path), separator=separator)


def _folder_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.rglob("*.txt") if not p.is_dir())
    if not files:
        raise CorpusError(f"{folder}: no .txt files in this folder.")
    return files


def _regular_file_size(path: Path) -> int:
    """The size of a regular file (or a link to one); anything else (a FIFO, a device, a socket) is refused:
    reading it could block forever or never end."""
    try:
        status = path.stat()
    except OSError as err:
        raise CorpusError(f"{path}: cannot read the file ({err.strerror}).") from None
    if not stat.S_ISREG(status.st_mode):
        kind = next((name for test, name in SPECIAL_FILES if test(status.st_mode)), "a special file")
        raise CorpusError(f"{path}: {kind}, not a text file; a corpus is a text file, a CSV file or a folder of "
                          ".txt files.")
    return status.st_size


def _read_texts(path: Path, files: list[Path], max_bytes: int) -> dict[Path, str]:
    """Each file's text, reading `max_bytes` at most in all (a file may grow after its size was checked)."""
    texts, left = {}, max_bytes
    for file in files:
        data = _read_bytes(file, left + 1)
        if len(data) > left:
            raise CorpusError(_too_big(path, f"more than {_size(max_bytes)}", max_bytes))
        left -= len(data)
        texts[file] = _decode_text(file, data)
    return texts


def _read_bytes(path: Path, limit: int) -> bytes:
    """At most `limit` bytes of a file, in chunks, opened without blocking (a file swapped for a FIFO cannot hang)."""
    chunks, size = [], 0
    try:
        with open(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as file:
            while size < limit and (chunk := file.read(min(CHUNK, limit - size))):
                chunks.append(chunk)
                size += len(chunk)
    except OSError as err:
        raise CorpusError(f"{path}: cannot read the file ({err.strerror}).") from None
    return b"".join(chunks)


def _too_big(path: Path, size: str, max_bytes: int) -> str:
    return f"{path} is {size}; the largest corpus read is {_size(max_bytes)} (setting max_corpus_mb)."


def _size(n: int) -> str:
    """A size for people: 1.0 GB, 3.4 MB, 120 bytes (binary units)."""
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _decode_text(path: Path, data: bytes) -> str:
    """A file's bytes as UTF-8 text with normalised line ends, or a CorpusError naming the file and line."""
    if not data.strip():
        raise CorpusError(f"{path}: the file is empty.")
    if b"\x00" in data:
        line = data[: data.index(b"\x00")].count(b"\n") + 1
        raise CorpusError(f"{path}, line {line}: this looks like a binary file (NUL byte); expected UTF-8 text.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise CorpusError(
            f"{path}, line {line}: not valid UTF-8 (byte 0x{data[err.start]:02x}); "
            "convert the file to UTF-8 first, e.g. `iconv -f latin1 -t utf-8`."
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def split_blocks(text: str, separator: str, path: Path, require_separator: bool) -> list[str]:
    """Split text on lines equal to the separator; strip each block and drop empty ones."""
    blocks, current, found = [], [], False
    for line in text.split("\n"):
        if separator and line.strip() == separator:
            found = True
            blocks.append(current)
            current = []
        else:
            current.append(line.rstrip())
    blocks.append(current)
    if separator and require_separator and not found:
        lines = text.count("\n") + 1
        raise CorpusError(
            f"{path}, lines 1-{lines}: no separator line {separator!r} found. Put a line {separator!r} "
            "between the texts, pass --separator with the line your file uses, or --separator '' "
            "to treat the whole file as one text."
        )
    return [block for block in ("\n".join(lines).strip() for lines in blocks) if block]


def _read_csv(path: Path, text: str, column: str | None) -> list[str]:
    rows = csv.reader(io.StringIO(text))
    header = next(rows, None)
    if not header:
        raise CorpusError(f"{path}, line 1: the CSV file has no header row.")
    header = [name.strip() for name in header]
    if column is None:
        if len(header) != 1:
            raise CorpusError(f"{path}, line 1: several columns ({', '.join(header)}); pick one with --csv-column.")
        column = header[0]
    if column not in header:
        raise CorpusError(f"{path}, line 1: no column {column!r}; the columns are: {', '.join(header)}.")
    index = header.index(column)
    blocks = []
    try:
        for row in rows:
            if index < len(row) and row[index].strip():
                blocks.append(row[index].strip())
    except csv.Error as err:
        raise CorpusError(f"{path}, line {rows.line_num}: not a valid CSV row ({err}).") from None
    return blocks
