"""Reading tables as users have them (fdrl.data.files): suffixes, compressions, separators,
decimal commas, headers, missing cells, encodings; and one-line errors naming file, column and line."""

import bz2
import gzip
import lzma
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fdrl.config import data_source_kind, load_config
from fdrl.data.columns import TableCodec
from fdrl.data.files import is_table_path, line_of_row, read_array, read_data, read_table
from fdrl.table_paths import table_stem

TABLE = "a,b\n1.5,2\n-3,4\n"


def _write(path: Path, text: str, opener=open) -> Path:
    with opener(path, "wt", encoding="utf-8") as handle:
        handle.write(text)
    return path


def _zip(path: Path, text: str) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("inner.csv", text)
    return path


# -- names -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, table", [
    ("x.csv", True), ("x.TSV", True), ("x.tab", True), ("x.txt", True), ("x.dat", True), ("x.csv.gz", True),
    ("x.tsv.bz2", True), ("x.txt.zip", True), ("x.dat.xz", True), ("x.parquet", True),
    ("x.npy", False), ("x.yaml", False), ("x.gz", False), ("x.parquet.gz", False), ("csv", False), ("x.json", False),
])
def test_is_table_path_by_name(name, table):
    assert is_table_path(name) is table


def test_tables_are_vector_data_named_without_their_suffixes(tmp_path):
    for name in ("x.tsv", "x.csv.gz", "x.parquet", "x.npy"):
        assert data_source_kind(str(tmp_path / name)) == "vectors"
    assert data_source_kind("swissroll") is None
    assert table_stem("x.csv.gz") == "x" and table_stem("my.data.tsv") == "my.data"
    path = _write(tmp_path / "table.csv.gz", TABLE, gzip.open)
    assert load_config(str(path)).name == "table"


# -- suffixes, compressions, separators ------------------------------------------------------------
@pytest.mark.parametrize("name, write", [
    ("t.csv", lambda p, t: _write(p, t)),
    ("t.tab", lambda p, t: _write(p, t)),
    ("t.csv.gz", lambda p, t: _write(p, t, gzip.open)),
    ("t.csv.bz2", lambda p, t: _write(p, t, bz2.open)),
    ("t.csv.xz", lambda p, t: _write(p, t, lzma.open)),
    ("t.csv.zip", _zip),
])
def test_each_suffix_and_compression_reads_the_same_table(tmp_path, name, write):
    frame = read_table(write(tmp_path / name, TABLE))
    assert list(frame.columns) == ["a", "b"]
    assert frame["a"].tolist() == [1.5, -3.0] and frame["b"].tolist() == [2, 4]
    assert frame.attrs == {"header": True, "path": str(tmp_path / name), "sep": ",", "decimal": "."}


def test_zstd_reads_where_zstandard_is_installed(tmp_path):
    zstandard = pytest.importorskip("zstandard")
    (tmp_path / "t.csv.zst").write_bytes(zstandard.ZstdCompressor().compress(TABLE.encode()))
    assert read_table(tmp_path / "t.csv.zst")["a"].tolist() == [1.5, -3.0]


@pytest.mark.parametrize("text", [
    "a,b,c\n1,2,3\n4,5,6\n",
    "a;b;c\n1;2;3\n4;5;6\n",
    "a\tb\tc\n1\t2\t3\n4\t5\t6\n",
    "a   b c\n  1 2    3\n4\t5 6\n",
    'a,"b, the second",c\n1,2,3\n4,5,6\n',
])
def test_each_separator_is_found(tmp_path, text):
    frame = read_table(_write(tmp_path / "t.txt", text))
    assert frame.shape == (2, 3) and frame.iloc[1].tolist() == [4, 5, 6]
    assert frame.columns[0] == "a" and frame.columns[2] == "c"


def test_a_semicolon_table_with_decimal_commas(tmp_path):
    frame = read_table(_write(tmp_path / "t.csv", "x;y;name\n1,5;-2,25;a, b\n3;4,0e1;c\n"))
    assert frame["x"].tolist() == [1.5, 3.0] and frame["y"].tolist() == [-2.25, 40.0]
    assert frame["name"].tolist() == ["a, b", "c"] and (frame.attrs["sep"], frame.attrs["decimal"]) == (";", ",")
    no_header = read_table(_write(tmp_path / "u.csv", "1,5;2\n3;4,5\n"))
    assert no_header.attrs["header"] is False and no_header.to_numpy().tolist() == [[1.5, 2.0], [3.0, 4.5]]


def test_a_semicolon_table_with_decimal_points_keeps_them(tmp_path):
    assert read_table(_write(tmp_path / "t.csv", "x;y\n1.5;2,5\n"))["x"].tolist() == [1.5]


# -- header, dtypes, missing cells, encodings ------------------------------------------------------
def test_no_header_when_the_first_row_is_numbers(tmp_path):
    frame = read_table(_write(tmp_path / "t.csv", "1,2e3,-inf\n4,,6\n"))
    assert frame.attrs["header"] is False and list(frame.columns) == [0, 1, 2]
    assert frame.iloc[0, 1] == 2000.0 and np.isnan(frame.iloc[1, 1])
    # a first row of numbers with missing cells is still data
    assert read_table(_write(tmp_path / "u.csv", "1,NA,3\n4,5,6\n")).attrs["header"] is False
    # one cell that is not a number makes the first row the header
    assert list(read_table(_write(tmp_path / "v.csv", "1,x\n2,3\n")).columns) == ["1", "x"]


def test_dtypes_missing_cells_and_blank_lines(tmp_path):
    text = "n,x,name,flag\n\n1,0.5,apple,True\n   \n2,NA,,False\n3,,pear,True\n\n"
    frame = read_table(_write(tmp_path / "t.csv", text))
    assert len(frame) == 3
    assert str(frame["n"].dtype) == "int64" and str(frame["x"].dtype) == "float64"
    assert str(frame["flag"].dtype) == "bool" and frame["flag"].tolist() == [True, False, True]
    assert frame["name"].iloc[0] == "apple" and frame["name"].isna().tolist() == [False, True, False]
    assert frame["x"].isna().tolist() == [False, True, True]


def test_bom_and_latin1(tmp_path):
    (tmp_path / "bom.csv").write_bytes("\ufeffa,b\n1,2\n".encode("utf-8"))
    assert list(read_table(tmp_path / "bom.csv").columns) == ["a", "b"]
    (tmp_path / "latin.csv").write_bytes("café,b\n1,2\n".encode("latin-1"))
    assert list(read_table(tmp_path / "latin.csv").columns) == ["café", "b"]
    # Excel's CSV on Western Windows: the euro sign is byte 0x80, which latin-1 reads as a control
    (tmp_path / "win.csv").write_bytes("price,unit\n3,€\n4,£\n".encode("cp1252"))
    assert read_table(tmp_path / "win.csv")["unit"].tolist() == ["€", "£"]
    # a byte cp1252 leaves undefined (0x81) still reads, as latin-1
    (tmp_path / "odd.csv").write_bytes(b"a,b\n1,x\x81\n")
    assert read_table(tmp_path / "odd.csv")["b"].tolist() == ["x\x81"]
    # Excel's "Unicode text": tab-separated UTF-16 with a BOM
    (tmp_path / "u16.txt").write_bytes("name\tx\nthé\t1.5\ncafé\t2\n".encode("utf-16"))
    frame = read_table(tmp_path / "u16.txt")
    assert frame["name"].tolist() == ["thé", "café"] and frame["x"].tolist() == [1.5, 2.0]
    # a cp1252 byte far beyond the sampled start: the reader moves on to cp1252 for the whole file
    (tmp_path / "late.csv").write_bytes(("a,b\n" + "1,x\n" * 20_000 + "2,€\n").encode("cp1252"))
    assert read_table(tmp_path / "late.csv")["b"].iloc[-1] == "€"


def test_repeated_column_names_are_said_with_the_names_pandas_gives(tmp_path):
    (tmp_path / "t.csv").write_text("a,a,b,a\n1,2,3,4\n5,6,7,8\n")
    with pytest.warns(UserWarning, match=r"column name\(s\) 'a' repeat; read as 'a', 'a.1', 'a.2'"):
        frame = read_table(tmp_path / "t.csv")
    assert list(frame.columns) == ["a", "a.1", "b", "a.2"] and frame["a.2"].tolist() == [4, 8]
    (tmp_path / "u.csv").write_text("a,b\n1,2\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # distinct names: no warning
        read_table(tmp_path / "u.csv")


def test_line_of_row_counts_the_header_and_blank_lines(tmp_path):
    path = _write(tmp_path / "t.csv", "\na,b\n1,2\n\n\n3,4\n  \n5,6\n")
    assert [line_of_row(path, row) for row in range(3)] == [3, 6, 8]
    headless = _write(tmp_path / "u.txt.gz", "1 2\n\n3 4\n", gzip.open)
    assert [line_of_row(headless, row) for row in range(2)] == [1, 3]
    quoted = _write(tmp_path / "q.csv", 'a,b\n"two\nlines",1\nx,2\n')
    assert [line_of_row(quoted, row) for row in range(2)] == [2, 4]


def test_read_data_gives_arrays_as_stored_and_tables_as_frames(tmp_path):
    np.save(tmp_path / "x.npy", np.arange(6, dtype=np.int16).reshape(3, 2))
    array = read_data(tmp_path / "x.npy")
    assert array.dtype == np.int16 and array.shape == (3, 2)
    assert read_data(_write(tmp_path / "t.tsv", "a\tb\n1\tx\n")).attrs["header"] is True


def test_read_array_is_float32_with_the_header(tmp_path):
    found = read_array(_write(tmp_path / "t.csv", "a,b,flag\n1,2.5,True\n3,4,False\n"))
    assert found.values.dtype == np.float32 and found.values.tolist() == [[1, 2.5, 1], [3, 4, 0]]
    assert found.columns == ["a", "b", "flag"]
    assert read_array(_write(tmp_path / "u.csv", "1\n2\n3\n")).columns is None


# -- errors: one line naming the file, and column and line where there is one ---------------------
def _error(path, read=read_table) -> str:
    with pytest.raises((ValueError, FileNotFoundError)) as caught:
        read(path)
    message = str(caught.value)
    assert "\n" not in message and str(Path(path).name) in message, message
    return message


def test_path_errors(tmp_path):
    assert "does not exist" in _error(tmp_path / "nope.csv")
    (tmp_path / "dir.csv").mkdir()
    assert "is a folder" in _error(tmp_path / "dir.csv")
    (tmp_path / "x.json").write_text("{}")
    message = _error(tmp_path / "x.json", read_data)
    assert "unsupported" in message and ".tsv" in message and ".parquet" in message and ".gz" in message


@pytest.mark.parametrize("text, expected", [
    ("", "is empty"),
    ("\n  \n\n", "is empty"),
    ("a,b\n", "has a header row but no data rows"),
    ("a,b\n\n\n", "has a header row but no data rows"),
    ("a,b,c\n1,2,3\n\n4,5,6,7\n", "line 4: 4 values where the header has 3; every row needs the same columns"),
    ("a,b,c\n1,2,3\n4,5\n", "line 3: 2 values where the header has 3"),
    ("1,2\n3\n", "line 2: 1 values where the first row has 2"),
    ("a b\n1 2\n\n3 4 5\n", "line 4: 3 values where the header has 2"),
    ("a,b;c d\n1;2;3\n4 5 6 7\n", "could not tell its separator (tried tab, semicolon, comma, whitespace"),
])
def test_table_errors(tmp_path, text, expected):
    assert expected in _error(_write(tmp_path / "bad.csv", text))


def test_a_short_row_is_ragged_but_a_trailing_empty_cell_is_missing(tmp_path):
    frame = read_table(_write(tmp_path / "t.csv", "a,b,c\n1,2,\n4,5,6\n"))
    assert np.isnan(frame["c"].iloc[0])
    assert "line 4: 2 values where the header has 3" in _error(_write(tmp_path / "u.csv", "a,b,c\n1,2,\n4,5,6\n7,8\n"))


def test_binary_and_damaged_files(tmp_path):
    (tmp_path / "bin.csv").write_bytes(bytes(range(256)) * 4)
    assert "is not text" in _error(tmp_path / "bin.csv")
    (tmp_path / "fake.csv.gz").write_text("a,b\n1,2\n")
    assert "damaged or not gzip" in _error(tmp_path / "fake.csv.gz")
    whole = gzip.compress(("a,b\n" + "1,2\n" * 50_000).encode())
    (tmp_path / "cut.csv.gz").write_bytes(whole[: len(whole) // 2])
    assert "damaged or not gzip" in _error(tmp_path / "cut.csv.gz")
    (tmp_path / "fake.csv.zip").write_text("a,b\n1,2\n")
    assert "damaged or not zip" in _error(tmp_path / "fake.csv.zip")
    with zipfile.ZipFile(tmp_path / "two.csv.zip", "w") as archive:
        archive.writestr("a.csv", TABLE)
        archive.writestr("b.csv", TABLE)
    assert "holds 2 files" in _error(tmp_path / "two.csv.zip")


def test_parquet_without_an_engine_says_what_to_install(tmp_path, monkeypatch):
    (tmp_path / "t.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "fastparquet", None)
    assert "reading .parquet needs pyarrow: pip install pyarrow (a dependency of fdrl: reinstall it)" in _error(tmp_path / "t.parquet")


def test_parquet_round_trip_where_pyarrow_is_installed(tmp_path):
    pytest.importorskip("pyarrow")
    import pandas as pd

    pd.DataFrame({"a": [1.5, 2.0], "s": ["x", "y"]}).to_parquet(tmp_path / "t.parquet")
    frame = read_table(tmp_path / "t.parquet")
    assert frame["a"].tolist() == [1.5, 2.0] and frame.attrs["header"] is True
    assert "'s' (column 2)" in _error(tmp_path / "t.parquet", read_array)


@pytest.mark.parametrize("text, expected", [
    ("a,b\n1,2\n\n3,x\n", "line 4: 'b' (column 2) holds 'x', not a number"),
    ("a,b\n1,2\n3,\n", "line 3: 'b' (column 2) is empty"),
    ("a,b\n1,NA\n", "line 2: 'b' (column 2) holds 'NA', a missing value"),
    ("1,2\n3,abc\n", "line 2: column 2 holds 'abc', not a number"),
    ('a,b\n1,"2,5"\n', "holds '2,5', not a number (a decimal comma: write decimals with a point, or separate"),
])
def test_read_array_names_the_cell_that_is_not_a_number(tmp_path, text, expected):
    message = _error(_write(tmp_path / "bad.csv", text), read_array)
    assert expected in message and "make every column numeric" in message


def test_string_columns_are_data_for_read_table(tmp_path):
    frame = read_table(_write(tmp_path / "t.csv", "city,n\nNew York,1\nParis,2\n"))
    assert frame["city"].tolist() == ["New York", "Paris"]


def test_training_data_from_a_compressed_semicolon_table(tmp_path):
    from fdrl.data.source import ArrayData

    rows = "".join(f"{i},5;{-i};{i % 2 == 0}\n" for i in range(10))
    path = _write(tmp_path / "shop.csv.gz", "price;stock;sale\n" + rows, gzip.open)
    data = ArrayData.from_file(path, test_fraction=0.2)
    assert data.codec.kinds == {"price": "continuous", "stock": "categorical", "sale": "categorical"}
    assert data.name == "shop.csv.gz"
    every = pd.concat([data.decode(data.samples), data.decode(data.held_out().samples)])
    assert sorted(every["price"].tolist()) == [i + 0.5 for i in range(10)]  # the decimal comma read
    assert sorted(every["sale"].tolist()) == [False] * 5 + [True] * 5


def test_comment_lines_before_a_table_are_skipped_and_a_savetxt_header_names_the_columns(tmp_path):
    """numpy.savetxt(header=...) writes '# a,b,c' above the rows, instruments write '#' notes:
    the separator could not be told and the file was refused."""
    x = np.random.default_rng(0).normal(size=(50, 3))
    np.savetxt(tmp_path / "named.csv", x, delimiter=",", header="a,b,c")
    frame = read_table(tmp_path / "named.csv")
    assert list(frame.columns) == ["a", "b", "c"] and len(frame) == 50
    np.testing.assert_allclose(frame.to_numpy(), x)
    # notes above a header row: the header row names the columns; lines count as the editor shows them
    rows = "".join(f"{u},{v}\n" for u, v in x[:, :2])
    (tmp_path / "notes.csv").write_text("# instrument 7\n\n# volts\nu,v\n" + rows.replace("\n", "\nbad,1\n", 1))
    noted = tmp_path / "notes.csv"
    with pytest.raises(ValueError, match="line 6: column 'u' holds 'bad'"):
        TableCodec.fit(read_table(noted), line_of_row=lambda row: line_of_row(noted, row))
    (tmp_path / "notes.csv").write_text("# instrument 7\n\n# volts\nu,v\n" + rows)
    assert list(read_table(tmp_path / "notes.csv").columns) == ["u", "v"]
    # a sentence split by blanks is not a header
    np.savetxt(tmp_path / "plain.txt", x, header="made by numpy")
    assert list(read_table(tmp_path / "plain.txt").columns) == [0, 1, 2]
    (tmp_path / "only.csv").write_text("# nothing yet\n")
    with pytest.raises(ValueError, match="is empty \\(it holds only # comments\\)"):
        read_table(tmp_path / "only.csv")
