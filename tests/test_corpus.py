import pytest

from model.corpus import read_corpus
from model.errors import CorpusError

from tests.conftest import PROVERBS


def test_reads_the_tutorial_corpus():
    corpus = read_corpus(PROVERBS)
    assert len(corpus.blocks) == 909
    assert corpus.blocks[0] == "the proverbs of solomon the son of david, king of israel"
    assert all(block and block == block.strip() for block in corpus.blocks)


def test_crlf_bom_and_trailing_whitespace(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes("\ufeffone  \r\n  two\r\n==========  \r\n\r\nthree\t\r\n==========\r\n".encode("utf-8"))
    assert read_corpus(path).blocks == ["one\n  two", "three"]


def test_custom_separator(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("a\n<|sep|>\nb\n")
    assert read_corpus(path, separator="<|sep|>").blocks == ["a", "b"]
    assert read_corpus(path, separator="").blocks == ["a\n<|sep|>\nb"]


@pytest.mark.parametrize("content, message", [
    (b"", "the file is empty"),
    (b"  \n\n ", "the file is empty"),
    (b"one\n==========\ntw\x00o", "line 3: this looks like a binary file"),
    (b"one\n==========\ncaf\xe9\n", "line 3: not valid UTF-8 (byte 0xe9)"),
    (b"one\ntwo\nthree\n", "lines 1-4: no separator line '=========='"),
    (b"==========\n\n==========\n", "no text blocks found"),
])
def test_bad_files_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(CorpusError) as err:
        read_corpus(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_missing_path(tmp_path):
    with pytest.raises(CorpusError, match="no such file"):
        read_corpus(tmp_path / "nope.txt")


def test_folder_of_txt_files(tmp_path):
    (tmp_path / "a.txt").write_text("first song\nline two\n")
    (tmp_path / "b.txt").write_text("x\n==========\ny\n")
    (tmp_path / "ignored.md").write_text("not me")
    assert read_corpus(tmp_path).blocks == ["first song\nline two", "x", "y"]


def test_empty_folder(tmp_path):
    with pytest.raises(CorpusError, match="no .txt files"):
        read_corpus(tmp_path)


def test_folder_with_bad_file_names_it(tmp_path):
    (tmp_path / "a.txt").write_text("fine")
    (tmp_path / "b.txt").write_bytes(b"\xff\xfe")
    with pytest.raises(CorpusError, match=r"b\.txt, line 1: not valid UTF-8"):
        read_corpus(tmp_path)


def test_csv_column(tmp_path):
    path = tmp_path / "cards.csv"
    path.write_text('name,text\nA,"first, with comma"\nB,"two\nlines"\nC,\n')
    assert read_corpus(path, csv_column="text").blocks == ["first, with comma", "two\nlines"]


def test_csv_single_column_needs_no_name(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("text\nhello\nworld\n")
    assert read_corpus(path).blocks == ["hello", "world"]


def test_csv_errors(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("name,text\nA,b\n")
    with pytest.raises(CorpusError, match="no column 'body'; the columns are: name, text"):
        read_corpus(path, csv_column="body")
    with pytest.raises(CorpusError, match="several columns .* pick one with --csv-column"):
        read_corpus(path)


def test_broken_csv_names_the_line(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('text\nfine\n"' + "x" * 200_000 + '"\n')
    with pytest.raises(CorpusError, match=r"c\.csv, line 3: not a valid CSV row"):
        read_corpus(path, csv_column="text")

