"""How a text table is written, found from its first lines: separator, decimal mark, header,
encoding and compression; and the table's rows with their line numbers, for errors.

The separator is found by counting: each candidate (tab, ``;``, ``,``, runs of whitespace, in
that order of preference) splits the sampled lines with the ``csv`` module's quoting rules, and
the first one that gives the same number (more than one) of cells on every line wins. A file no
candidate splits evenly is ragged: the candidate that splits the first line into several cells
and agrees with it on at least half the lines is taken (the reader then names the ragged line);
a file that no separator splits at all is one column. A ``;``-separated file whose cells look
like ``1,5`` uses the decimal comma. The first row is the header unless every cell of it that
is not missing parses as a number.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from fdrl.table_paths import split_name

#: bytes (after decompression) read to detect the format
SAMPLE_BYTES = 1 << 16
#: at most this many non-blank lines of the sample are used
SAMPLE_LINES = 200
#: the cells pandas' read_csv reads as missing by default (its documented ``na_values`` list)
NA_TOKENS = frozenset({"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                       "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"})
WHITESPACE = r"\s+"
#: candidate separator -> its name in messages, in order of preference
SEPARATORS = {"\t": "tab", ";": "semicolon", ",": "comma", WHITESPACE: "whitespace"}
#: a whole number written with a leading zero: a code (00123), not a quantity
ZERO_PADDED = re.compile(r"\s*[+-]?0\d+\s*")
#: what a text table that is not UTF-8 is read as, in turn: Windows-1252, then latin-1
FALLBACK_ENCODINGS = ("cp1252", "latin-1")
_DECIMAL_COMMA = re.compile(r"[+-]?\d*,\d+(?:[eE][+-]?\d+)?")
_DECIMAL_POINT = re.compile(r"[+-]?\d*\.\d+(?:[eE][+-]?\d+)?")
#: what a compression's damage is called in messages
_COMPRESSION_NAMES = {"gzip": "gzip", "bz2": "bzip2", "zip": "zip", "xz": "xz", "zstd": "zstd"}


@dataclass(frozen=True)
class TableFormat:
    """How to read a text table: pandas' ``sep`` (``WHITESPACE`` for runs of blanks), ``decimal``,
    whether the first row is a header, the text ``encoding`` and pandas' ``compression``;
    ``first_row``: the cells of the first non-blank row as written (the header's names when
    ``header``), kept from the look at the file's start so that nothing reads it twice;
    ``zero_padded``: the positions of the columns where a sampled cell is a whole number written
    with a leading zero (``00123``: a code, such as a postcode, that pandas would read as 123)."""

    sep: str
    decimal: str
    header: bool
    encoding: str
    compression: str | None
    first_row: tuple[str, ...] = ()
    zero_padded: tuple[int, ...] = ()
    #: lines before the table: comments starting with ``#`` (and blank lines among them)
    skip_lines: int = 0
    #: the column names came from the last of those comments (``numpy.savetxt(header=...)``
    #: writes ``# x,y``; a comma, semicolon or tab table only), so every row after them is data
    header_in_comment: bool = False


def is_number(cell: str, decimal: str = ".") -> bool:
    """Whether a cell reads as a number (``1``, ``-2.5e3``, ``inf``; ``1,5`` with a decimal comma)."""
    text = cell.strip()
    if "_" in text:  # float() accepts 1_000, a table reader does not
        return False
    if decimal == ",":
        text = text.replace(",", ".")
    try:
        float(text)
    except ValueError:
        return False
    return True


def is_decimal_comma(cell: str) -> bool:
    """Whether a cell is a number written with a decimal comma (``1,5``, ``-2,5e3``)."""
    return _DECIMAL_COMMA.fullmatch(cell.strip()) is not None


def is_missing(cell: str) -> bool:
    """Whether a cell is read as missing (empty or one of pandas' NA tokens)."""
    return cell.strip() in NA_TOKENS


def damage_error(path: Path, compression: str | None, err: BaseException) -> ValueError:
    """The one-line error for a compressed file that cannot be decompressed."""
    kind = _COMPRESSION_NAMES.get(compression or "", "compressed")
    return ValueError(f"data file '{path}' is damaged or not {kind} ({err}); write it again")


def open_binary(path: Path, compression: str | None) -> IO[bytes]:
    """The file's decompressed bytes as a stream (a .zip must hold exactly one file)."""
    if compression is None:
        return open(path, "rb")
    if compression == "gzip":
        import gzip

        return gzip.open(path, "rb")
    if compression == "bz2":
        import bz2

        return bz2.open(path, "rb")
    if compression == "xz":
        import lzma

        return lzma.open(path, "rb")
    if compression == "zstd":
        import zstandard

        return zstandard.open(path, "rb")
    archive = zipfile.ZipFile(path)
    members = [info for info in archive.infolist() if not info.is_dir()]
    if len(members) != 1:
        raise ValueError(f"data file '{path}' holds {len(members)} files; a .zip table must hold exactly one")
    return archive.open(members[0])


def open_text(path: Path, fmt: TableFormat) -> IO[str]:
    """The file's decompressed text in ``fmt.encoding``, line endings kept for the csv module; a
    byte that encoding cannot read is replaced (this text only finds lines and cells for
    messages, and a file whose encoding changes past its sampled start still has lines)."""
    return io.TextIOWrapper(open_binary(path, fmt.compression), encoding=fmt.encoding, newline="", errors="replace")


def _sample(path: Path, compression: str | None) -> tuple[bytes, bool]:
    """The first SAMPLE_BYTES decompressed bytes, and whether that is the whole file."""
    import lzma
    import zlib

    try:
        with open_binary(path, compression) as handle:
            head = handle.read(SAMPLE_BYTES + 1)
    except (OSError, EOFError, zlib.error, lzma.LZMAError, zipfile.BadZipFile) as err:
        if compression is None:
            raise
        raise damage_error(path, compression, err) from None
    return head[:SAMPLE_BYTES], len(head) <= SAMPLE_BYTES


def _decode(path: Path, head: bytes) -> tuple[str, str]:
    """The sample as text and its encoding: UTF-16 with its BOM (what Excel's "Unicode text"
    writes), UTF-8 (with or without BOM), else Windows-1252 (Excel's CSV on Western Windows: the
    euro sign is 0x80), else latin-1 (every byte is a character)."""
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return codecs.getincrementaldecoder("utf-16")().decode(head, final=False), "utf-16"
    if b"\x00" in head:
        raise ValueError(f"data file '{path}' is not text (is it a binary file with the wrong suffix?)")
    try:  # an incremental decoder: the sample may end inside a multi-byte character
        return codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=False), "utf-8-sig"
    except UnicodeDecodeError:
        pass
    try:
        return head.decode(FALLBACK_ENCODINGS[0]), FALLBACK_ENCODINGS[0]
    except UnicodeDecodeError:
        return head.decode(FALLBACK_ENCODINGS[1]), FALLBACK_ENCODINGS[1]


def _rows(text: str, sep: str) -> list[list[str]]:
    """The non-blank rows of ``text`` split by ``sep`` (at most SAMPLE_LINES)."""
    if sep == WHITESPACE:
        rows = (line.split() for line in text.splitlines())
    else:
        rows = csv.reader(io.StringIO(text, newline=""), delimiter=sep, skipinitialspace=True)
    found = []
    for row in rows:
        if not _is_blank(row):
            found.append(row)
            if len(found) == SAMPLE_LINES:
                break
    return found


def _is_blank(row: list[str]) -> bool:
    """A line pandas skips: no separator and nothing but whitespace."""
    return len(row) == 0 or (len(row) == 1 and not row[0].strip())


def _separator(path: Path, text: str) -> str:
    """The separator that splits the sampled lines evenly (see the module's docstring)."""
    counts = {sep: [len(row) for row in _rows(text, sep)] for sep in SEPARATORS}
    even = [sep for sep, n in counts.items() if n[0] > 1 and all(c == n[0] for c in n)]
    if even:
        return even[0]
    agreement = {sep: sum(c == n[0] for c in n) / len(n) for sep, n in counts.items() if n[0] > 1}
    ragged = [sep for sep, share in agreement.items() if share >= 0.5]
    if ragged:
        return max(ragged, key=lambda sep: agreement[sep])  # max keeps the first of equals: preference order
    if all(c == 1 for sep in ("\t", ";", ",") for c in counts[sep]):
        return ","  # one column
    tried = ", ".join(SEPARATORS.values())
    raise ValueError(f"data file '{path}': could not tell its separator (tried {tried}: none splits the first lines "
                     "into the same number of cells); write one separator between every cell")


def _decimal(rows: list[list[str]], sep: str) -> str:
    """``","`` for a ``;``-separated table whose numbers are written ``1,5``, else ``"."``."""
    if sep != ";":
        return "."
    cells = [cell.strip() for row in rows for cell in row]
    if any(is_decimal_comma(c) for c in cells) and not any(_DECIMAL_POINT.fullmatch(c) for c in cells):
        return ","
    return "."


def detect_format(path: Path) -> TableFormat:
    """The format of the text table at ``path`` from its first lines; a ``ValueError`` for an
    empty, binary or damaged file or one whose separator cannot be told."""
    compression = split_name(path)[2]
    head, whole = _sample(path, compression)
    text, encoding = _decode(path, head)
    if not whole:  # the last sampled line may be cut short
        text = text[: text.rfind("\n") + 1] or text
    comments, text = _leading_comments(text)
    if not text.strip():
        raise ValueError(f"data file '{path}' is empty" + (" (it holds only # comments)" if comments else ""))
    sep = _separator(path, text)
    rows = _rows(text, sep)
    decimal = _decimal(rows, sep)

    def names_a_row(cells: list[str]) -> bool:  # a header: some present cell is not a number
        present = [cell for cell in cells if not is_missing(cell)]
        return not present or not all(is_number(cell, decimal) for cell in present)

    header, names = names_a_row(rows[0]), rows[0]
    in_comment = False
    # a comment of as many cells names the columns, unless blanks split it: a sentence then
    # splits into words just as easily
    if comments and not header and sep != WHITESPACE:
        last = _rows(comments[-1].lstrip()[1:], sep)
        in_comment = bool(last) and len(last[0]) == len(rows[0]) and names_a_row(last[0])
        if in_comment:
            header, names = True, last[0]
    data = rows[0 if in_comment or not header else 1:]
    padded = sorted({i for row in data for i, cell in enumerate(row) if ZERO_PADDED.fullmatch(cell)})
    return TableFormat(sep, decimal, header, encoding, compression, tuple(cell.strip() for cell in names),
                       tuple(padded), len(comments), in_comment)


def _leading_comments(text: str) -> tuple[list[str], str]:
    """The lines before a table that start with ``#`` (blank lines among them included; as
    ``numpy.savetxt`` and instruments write them) and the text after them."""
    lines = text.splitlines(keepends=True)
    count = 0
    while count < len(lines) and (lines[count].lstrip().startswith("#") or not lines[count].strip()):
        count += 1
    if not any(line.lstrip().startswith("#") for line in lines[:count]):
        return [], text
    return lines[:count], "".join(lines[count:])


def data_rows(path: Path, fmt: TableFormat) -> Iterator[tuple[int, list[str]]]:
    """``(line, cells)`` of every data row in order: the 1-based line (of the decompressed
    text, as an editor shows it) where the row starts; blank lines and the header skipped."""
    with open_text(path, fmt) as handle:
        if fmt.sep == WHITESPACE:
            numbered = ((i, line.split()) for i, line in enumerate(handle, 1))
        else:
            reader = csv.reader(handle, delimiter=fmt.sep, skipinitialspace=True)
            numbered = _numbered(reader)
        header_seen = not fmt.header or fmt.header_in_comment
        for line, cells in numbered:
            if line <= fmt.skip_lines or _is_blank(cells):
                continue
            if not header_seen:
                header_seen = True
                continue
            yield line, cells


def _numbered(reader) -> Iterator[tuple[int, list[str]]]:
    """A csv reader's records with the line each starts on (a quoted cell may span lines)."""
    end = 0
    for record in reader:
        yield end + 1, record
        end = reader.line_num
