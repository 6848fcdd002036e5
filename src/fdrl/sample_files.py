"""Sample files: what ``fdrl sample`` writes and what the image commands read back.

Formats, chosen by the output path:

* ``.pt``: the samples tensor saved with ``torch.save`` (``torch.load(path, weights_only=True)``
  reads it); ``.safetensors``: ``{"samples": tensor}``; ``.npy``: a NumPy array;
* ``.csv``: rows of a table, under the training file's header when it had one, each column
  in its type (labels, integers, booleans) and continuous values with the decimals the data
  had; for a table run also ``.tsv``, either compressed (``.csv.gz``, ``.tsv.xz``: any
  compression the reader takes), and ``.parquet`` (every dtype kept);
* ``.png``: a figure (a grid of at most :data:`GRID_MAX` images, or a scatter of vectors);
* a folder (a path ending in ``/``, or an existing directory): one PNG per image.

Image samples are clamped to the data's range [-1, 1] in every format, as a saved PNG is.
Every single-file format is written atomically (a temporary file beside it, then renamed): a
process killed mid-write, or a full disk, never leaves a half file under the requested name.
:func:`check_output` validates a path before any sampling work is done;
:func:`read_samples` and :func:`load_input_images` read samples back (the inputs of
translation, refinement and evaluation).
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fdrl import plots
from fdrl.data.files import read_array
from fdrl.image_io import IMAGE_SUFFIXES, read_image_files, save_pngs
from fdrl.outputs import check_writable
from fdrl.table_paths import PARQUET_SUFFIX, split_name

#: the most images a ``.png`` grid shows
GRID_MAX = 64
SAMPLE_SUFFIXES = (".pt", ".safetensors", ".npy", ".csv", ".png")
#: sample files that hold images as tensors (the inputs of translation and refinement)
TENSOR_SUFFIXES = (".pt", ".safetensors", ".npy")


def is_folder_target(out: Path, text: str | None = None) -> bool:
    """A folder target: an existing directory or a path written with a trailing slash."""
    return out.is_dir() or (text is not None and text.endswith(("/", os.sep)))


def table_sample_format(out: Path) -> str | None:
    """How a table run writes samples to ``out``: ``csv`` or ``tsv`` (optionally compressed),
    ``parquet``, or None for a path that is not a table file."""
    _, suffix, compression = split_name(out)
    if suffix == PARQUET_SUFFIX and compression is None:
        return "parquet"
    return suffix[1:] if suffix in (".csv", ".tsv") else None


def check_output(out: Path, images: bool, folder: bool = False, codec: Any = None) -> None:
    """Raise ValueError (one line, naming the fix) if ``out`` cannot take samples: an unknown
    suffix, CSV for images, a folder for vectors, an array format for a table with label
    columns (``codec``), a parent that is a file or not writable."""
    if folder and not images:
        raise ValueError(f"--out {out}/ writes one PNG per image, but this run samples vectors; "
                         "use .csv, .npy, .pt, .safetensors or .png")
    if not folder and not (codec is not None and table_sample_format(out)):
        if out.suffix not in SAMPLE_SUFFIXES:
            tables = " (a table run also .tsv, .csv.gz, .parquet)" if codec is not None else ""
            raise ValueError(f"--out must end in {', '.join(SAMPLE_SUFFIXES)}{tables} or name a folder (DIR/), "
                             f"got '{out.name}'")
        if out.suffix == ".csv" and images:
            raise ValueError("--out .csv is for vector runs; for images use a folder (DIR/), .png, .npy, .pt "
                             "or .safetensors")
        # arrays and the scatter figure hold numbers only: text labels and dates go to CSV
        labels = [] if codec is None else [name for name, kind in codec.kinds.items() if kind == "datetime"
                                           or (kind == "categorical" and not _numeric_labels(codec, name))]
        if labels and out.suffix in (".npy", ".pt", ".safetensors", ".png"):
            raise ValueError(f"this run's table has label or date columns ({', '.join(map(str, labels[:3]))}), "
                             f"which {out.suffix} cannot hold; write .csv, .tsv or .parquet")
    check_writable(out, folder)


def _numeric_labels(codec: Any, name: Any) -> bool:
    column = next(c for c in codec.columns if c.name == name)
    return all(isinstance(v, (bool, int, float)) for v in column.categories)


def _table(samples: Any, codec: Any) -> Any:
    """Samples of a table run (a DataFrame, an array or a tensor of its columns) as a DataFrame."""
    import pandas as pd

    if isinstance(samples, pd.DataFrame):
        return samples
    return pd.DataFrame(np.asarray(samples), columns=list(codec.kinds))


def _write_table(frame: Any, out: Path, form: str, codec: Any) -> None:
    """One row per sample, continuous columns with the decimals the data had; in CSV separated
    and with the decimal mark as the training file was (``;`` and ``1,5``, or ``,`` and
    ``1.5``), in TSV by tabs (compressed as ``out``'s name says); parquet keeps the dtypes."""
    frame = frame.copy()
    for column in codec.columns:
        if column.kind == "continuous" and column.decimals is not None and column.name in frame:
            frame[column.name] = frame[column.name].round(column.decimals)
    if form == "parquet":
        frame.columns = [str(name) for name in frame.columns]  # parquet names are text
        frame.to_parquet(out, index=False)
        return
    frame.to_csv(out, index=False, header=codec.header, sep=codec.csv_sep if form == "csv" else "\t",
                 decimal=codec.decimal, compression="infer")


@contextlib.contextmanager
def atomic_target(out: Path) -> Iterator[Path]:
    """A temporary path beside ``out`` (hidden, ending in ``out``'s suffix, so that writers pick
    the same format), renamed onto ``out`` once the block has written it; removed if it fails."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.partial{out.suffix}")
    try:
        yield tmp
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_samples(samples: Any, out: Path, folder: bool = False, columns: Sequence[str] | None = None,
                  codec: Any = None) -> str:
    """Write ``samples`` to ``out`` (format by suffix, or one PNG per image for a folder); returns
    a phrase saying what was written, for the user. ``codec``: the run's table columns
    (:class:`fdrl.data.columns.TableCodec`), when ``samples`` are rows of a table."""
    if codec is not None:
        frame = _table(samples, codec)
        form = table_sample_format(out)
        if form is not None:
            with atomic_target(out) as tmp:
                _write_table(frame, tmp, form, codec)
            return f"{len(frame)} samples to {out}"
        samples = torch.tensor(frame.to_numpy(dtype=np.float32))
    images = samples.ndim >= 3
    if images:
        samples = samples.clamp(-1.0, 1.0)
    n = samples.shape[0]
    if folder:
        width = len(str(n - 1))
        save_pngs(samples if samples.ndim == 4 else samples.unsqueeze(1), [f"{i:0{width}d}" for i in range(n)], out)
        return f"{n} images as PNG files in {out}"
    with atomic_target(out) as tmp:
        _write_file(samples, tmp, columns)
    if out.suffix == ".png" and images:
        return f"a grid of the first {min(n, GRID_MAX)} of {n} images to {out}"
    if out.suffix == ".png":
        return f"a {'scatter plot' if samples.reshape(n, -1).shape[1] > 1 else 'histogram'} of {n} samples to {out}"
    return f"{n} samples to {out}"


def _write_file(samples: Tensor, out: Path, columns: Sequence[str] | None) -> None:
    """``samples`` in the one-file format of ``out``'s suffix."""
    if out.suffix == ".png":
        plots.save_samples_figure(samples, out)
    elif out.suffix == ".npy":
        np.save(out, samples.numpy())
    elif out.suffix == ".pt":
        torch.save(samples.contiguous(), out)
    elif out.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({"samples": samples.contiguous()}, str(out))
    elif out.suffix == ".csv":
        with open(out, "w", newline="") as handle:
            writer = csv.writer(handle)
            if columns:
                writer.writerow(columns)
            writer.writerows(samples.reshape(samples.shape[0], -1).tolist())


def read_samples(path: Path) -> Tensor:
    """Samples from ``.npy``, ``.csv``, a ``.pt`` file (a tensor, or a mapping with the key
    ``samples``) or ``.safetensors`` with the key ``samples``."""
    if path.suffix in (".npy", ".csv"):
        return torch.from_numpy(read_array(path).values)
    if path.suffix not in (".pt", ".safetensors"):
        raise ValueError(f"sample files must end in .pt, .safetensors, .npy or .csv, got '{path.name}'")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as err:
        if path.suffix != ".pt":
            raise ValueError(f"{path} is not a safetensors file ({err})") from None
        try:  # a tensor or {"samples": tensor} saved by torch.save; weights_only: no code is run
            tensors = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err2:  # noqa: BLE001 - any failure is one message
            raise ValueError(f"{path} is neither safetensors nor a torch tensor file ({err2})") from None
        if isinstance(tensors, Tensor):
            return tensors.float()
    if not isinstance(tensors, dict) or "samples" not in tensors:
        keys = ", ".join(tensors) if isinstance(tensors, dict) else type(tensors).__name__
        raise ValueError(f"{path} has no 'samples' tensor (found: {keys})")
    return tensors["samples"].float()


def load_input_images(path: str | Path, shape: Sequence[int]) -> tuple[Tensor, list[str]]:
    """Images in [-1, 1] of exactly ``shape`` (C, H, W) from a folder of image files, one image
    file, or a tensor file (.pt / .safetensors with ``samples``, or .npy). Returns the images and
    a name for each. A wrong size or channel count, or an empty folder, is a one-line ValueError."""
    path, shape = Path(path), tuple(int(s) for s in shape)
    if not path.exists():
        raise FileNotFoundError(f"input '{path}' does not exist")
    if path.is_file() and path.suffix.lower() in TENSOR_SUFFIXES:
        x = read_samples(path)
        if x.ndim == 2 and x.shape[1] == math.prod(shape):
            x = x.reshape(-1, *shape)
        if x.ndim == 3 and shape[0] == 1 and tuple(x.shape[1:]) == shape[1:]:
            x = x[:, None]
        if tuple(x.shape[1:]) != shape or len(x) == 0:
            raise ValueError(f"{path} holds {len(x)} image(s) of shape {tuple(x.shape[1:])}; the model takes {shape}")
        return x.float(), [f"{i:05d}" for i in range(len(x))]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"input folder '{path}' holds no images ({', '.join(IMAGE_SUFFIXES)})")
    elif path.suffix.lower() in IMAGE_SUFFIXES:
        files = [path]
    else:
        raise ValueError(f"input '{path.name}' is neither an image ({', '.join(IMAGE_SUFFIXES)}), a tensor file "
                         f"({', '.join(TENSOR_SUFFIXES)}) nor a folder")
    return read_image_files(files, shape), [f.stem for f in files]
