"""Reading a large CSV: fdrl's table reader against ``pandas.read_csv`` alone. Prints JSON.

Writes a ``--rows`` x ``--cols`` CSV of standard normal floats (``%.6f``, a header ``c0,c1,...``)
to a temporary folder, then reads it in a fresh Python process per reader, so that each peak
resident memory (``ru_maxrss`` of that child) is its own:

* ``pandas``: ``pandas.read_csv(path)``, the reference;
* ``read_table``: :func:`fdrl.data.files.read_table` (format detection, pandas, the ragged-row check);
* ``read_data_float32``: :func:`fdrl.data.files.read_data` and ``to_numpy(float32)``;
* ``read_array``: :func:`fdrl.data.files.read_array` (the numeric view sample files use);
* ``training_data``: ``ArrayData.from_file(path, standardize=True)``, what ``fdrl train FILE``
  builds: the read, every column typed, encoded, split and standardised.

Time is the read alone (imports excluded). Memory is the read's own: the child's peak minus its
resident memory after the imports (``import fdrl.data`` brings PyTorch, some 700 MiB, which
would hide any difference); both numbers are reported too. The target is a ratio to pandas
under 2 in both.

    python benchmarks/table_read.py [--rows 1000000] [--cols 16] [--repeat 1] [--readers pandas,read_array]
                                    [--out result.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

#: reader name -> the statement that reads ``path`` (run in a child after the imports)
READERS = {
    "pandas": "pandas.read_csv(path)",
    "read_table": "files.read_table(path)",
    "read_data_float32": "files.read_data(path).to_numpy(dtype=numpy.float32)",
    "read_array": "files.read_array(path)",
    "training_data": "ArrayData.from_file(path, standardize=True)",
}

_CHILD = """
import json, resource, sys, time
import numpy, pandas
from fdrl.data import files
from fdrl.data.source import ArrayData
path = sys.argv[1]
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
after_imports = rss()
start = time.perf_counter()
result = {statement}
seconds = time.perf_counter() - start
peak = rss()
print(json.dumps({{"seconds": seconds, "read_mib": peak - after_imports, "peak_rss_mib": peak,
                  "rss_after_imports_mib": after_imports}}))
"""


def write_csv(path: Path, rows: int, cols: int, seed: int = 0) -> None:
    """A header ``c0,...`` and ``rows`` lines of ``cols`` standard normal numbers as ``%.6f``."""
    rng = np.random.default_rng(seed)
    with open(path, "w") as handle:
        handle.write(",".join(f"c{j}" for j in range(cols)) + "\n")
        for start in range(0, rows, 100_000):
            np.savetxt(handle, rng.standard_normal((min(100_000, rows - start), cols)), fmt="%.6f", delimiter=",")


def measure(reader: str, path: Path) -> dict:
    """One read in a fresh process: seconds, the read's own memory, peak RSS and RSS after the
    imports (MiB)."""
    code = _CHILD.format(statement=READERS[reader])
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--cols", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=1, help="fresh processes per reader; the fastest is kept")
    ap.add_argument("--readers", default=",".join(READERS),
                    help=f"comma-separated, pandas among them (the reference): {', '.join(READERS)}")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    args = ap.parse_args(argv)
    readers = args.readers.split(",")
    if "pandas" not in readers or not set(readers) <= set(READERS):
        ap.error(f"--readers must name pandas and any of {', '.join(READERS)}; got {args.readers}")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "table.csv"
        start = time.perf_counter()
        write_csv(path, args.rows, args.cols)
        result = {"rows": args.rows, "cols": args.cols, "file_mib": round(path.stat().st_size / 2**20, 1),
                  "write_seconds": round(time.perf_counter() - start, 2), "readers": {}}
        for reader in readers:
            runs = [measure(reader, path) for _ in range(args.repeat)]
            result["readers"][reader] = min(runs, key=lambda run: run["seconds"])
    base = result["readers"]["pandas"]
    base_mib = max(base["read_mib"], 1.0)  # a tiny --rows reads in no measurable memory
    result["ratios_to_pandas"] = {
        reader: {"time": round(run["seconds"] / base["seconds"], 2),
                 "memory": round(run["read_mib"] / base_mib, 2)}
        for reader, run in result["readers"].items() if reader != "pandas"}
    result["within_2x"] = all(r["time"] < 2 and r["memory"] < 2 for r in result["ratios_to_pandas"].values())
    text = json.dumps(result)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return result


if __name__ == "__main__":
    main()
