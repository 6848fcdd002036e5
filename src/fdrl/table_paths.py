"""Which file names are tables of vectors: the suffixes and compressions ``fdrl`` reads.

Light on purpose (no pandas, no torch): ``fdrl.config`` uses it to decide what ``fdrl train
PATH`` means, and the commands that need no heavy imports go through there.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

#: text tables (separator detected from the first lines)
TEXT_SUFFIXES = (".csv", ".tsv", ".tab", ".txt", ".dat")
PARQUET_SUFFIX = ".parquet"
#: spreadsheet workbooks read with openpyxl (their first sheet); .xls and .ods are not
EXCEL_SUFFIXES = (".xlsx", ".xlsm")
#: compression suffix -> the name pandas' ``read_csv(compression=...)`` gives it
_COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".zip": "zip", ".xz": "xz", ".zst": "zstd"}


def compressions() -> dict[str, str]:
    """The compression suffixes readable here: ``.zst`` only where ``zstandard`` is installed."""
    if importlib.util.find_spec("zstandard") is None:
        return {k: v for k, v in _COMPRESSIONS.items() if k != ".zst"}
    return dict(_COMPRESSIONS)


def split_name(path: str | Path) -> tuple[str, str, str | None]:
    """``(stem, table suffix, compression)`` of a file name, suffixes lower-cased: ``x.CSV.gz`` ->
    ``("x", ".csv", "gzip")``; a name without a readable compression has compression None."""
    name = Path(path).name
    compression = None
    lower = name.lower()
    for suffix, kind in compressions().items():
        if lower.endswith(suffix) and len(lower) > len(suffix):
            name, compression = name[: -len(suffix)], kind
            break
    inner = Path(name)
    return inner.stem, inner.suffix.lower(), compression


def is_table_path(path: str | Path) -> bool:
    """A text table (.csv .tsv .tab .txt .dat, each optionally compressed: .gz .bz2 .zip .xz, and
    .zst where zstandard is installed), an uncompressed .parquet file or an Excel workbook
    (.xlsx, .xlsm), judged by name only."""
    _, suffix, compression = split_name(path)
    return suffix in TEXT_SUFFIXES or (suffix in (PARQUET_SUFFIX, *EXCEL_SUFFIXES) and compression is None)


def table_stem(path: str | Path) -> str:
    """The file's name without its table and compression suffixes (``x.csv.gz`` -> ``x``)."""
    return split_name(path)[0]


def supported_suffixes() -> str:
    """The readable data suffixes in words, for error messages."""
    return (f".npy, {', '.join(TEXT_SUFFIXES)} (each optionally {', '.join(compressions())}), "
            f"{PARQUET_SUFFIX} or {', '.join(EXCEL_SUFFIXES)}")
