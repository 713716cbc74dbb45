"""Read a training corpus into a list of text blocks.

Three inputs, as in the GPT-2 Twitter-bot recipe and gpt-2-simple:
- a text file whose blocks are separated by a separator line (default `==========`),
- a folder of `.txt` files (each file split the same way; a file without separator is one block),
- a CSV file and a column name (one block per row, like gpt-2-simple's `encode_csv`).
CRLF/CR line ends, a UTF-8 BOM and trailing whitespace are normalised away. Anything unusable
raises CorpusError naming the file (and line where there is one).
"""

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from model.errors import CorpusError

SEPARATOR = "=========="


@dataclass
class Corpus:
    blocks: list[str]
    source: str
    separator: str = SEPARATOR

    def text(self) -> str:
        """The corpus in the tutorial's file format: blocks joined by separator lines."""
        return f"\n{self.separator}\n".join(self.blocks) + "\n"


def read_corpus(path: str | Path, separator: str = SEPARATOR, csv_column: str | None = None) -> Corpus:
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"{path}: no such file or folder.")
    if path.is_dir():
        blocks = _read_folder(path, separator)
    elif csv_column is not None or path.suffix.lower() == ".csv":
        blocks = _read_csv(path, csv_column)
    else:
        blocks = split_blocks(read_text(path), separator, path, require_separator=True)
    if not blocks:
        raise CorpusError(f"{path}: no text blocks found.")
    return Corpus(blocks=blocks, source=str(path), separator=separator)


def read_text(path: Path) -> str:
    """Read a file as UTF-8 text with normalised line ends, or explain why not."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CorpusError(f"{path}: cannot read the file ({err.strerror}).") from None
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


def _read_folder(folder: Path, separator: str) -> list[str]:
    files = sorted(p for p in folder.rglob("*.txt") if p.is_file())
    if not files:
        raise CorpusError(f"{folder}: no .txt files in this folder.")
    blocks = []
    for file in files:
        blocks += split_blocks(read_text(file), separator, file, require_separator=False)
    return blocks


def _read_csv(path: Path, column: str | None) -> list[str]:
    rows = csv.reader(io.StringIO(read_text(path)))
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
