"""``fdrl.fit``: train FDRL on your own data from Python, scikit-learn style.

    import numpy as np, fdrl
    model = fdrl.fit(np.random.randn(2000, 3))        # a normal run directory, scored on held-out rows
    x = model.sample(500)                             # in the units of the data
    score = -model.log_ratio(x)                       # higher: more like the data than the particles

The same path as ``fdrl train FILE``: in-memory data is written into the run directory as
``data.npy`` and the run's config points at it, so the run can be resumed, sampled and
evaluated from the command line like any other.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from fdrl.config import Config, load_config, load_raw

DATA_FILE = "data.npy"


def _as_array(data: Any) -> np.ndarray:
    """A NumPy array, tensor, or ``torch.utils.data.Dataset`` of tensors or ``(x, y)`` pairs ->
    float32 array (n, ...)."""
    import torch

    if isinstance(data, torch.Tensor):
        return data.detach().cpu().float().numpy()
    if isinstance(data, np.ndarray):
        if not (np.issubdtype(data.dtype, np.number) or data.dtype == bool):
            raise ValueError(f"fdrl.fit needs numbers; the array holds {data.dtype}")
        return data.astype(np.float32)
    if isinstance(data, torch.utils.data.Dataset):
        try:
            count = len(data)  # type: ignore[arg-type]
        except TypeError:
            raise ValueError("fdrl.fit needs a Dataset with a length (a map-style dataset)") from None
        if count == 0:
            raise ValueError("fdrl.fit got an empty Dataset")
        rows = []
        for i in range(count):
            item = data[i]
            x = item[0] if isinstance(item, (tuple, list)) else item
            rows.append(torch.as_tensor(x, dtype=torch.float32))
        return torch.stack(rows).numpy()
    raise TypeError(f"fdrl.fit takes a NumPy array, a tensor, a torch Dataset or a path; got {type(data).__name__}")


def _override_texts(overrides: dict[str, Any]) -> list[str]:
    """``{"train__steps": 500, "flow.eta": 0.1}`` -> ``["train.steps=500", "flow.eta=0.1"]``."""
    return [f"{key.replace('__', '.')}={json.dumps(value)}" for key, value in overrides.items()]


def build_fit_config(source: str, preset: str | None, overrides: dict[str, Any]) -> Config:
    """The config of :func:`fit`: the data at ``source`` (a file or a folder) with the preset
    for its kind, or ``preset``'s settings with that data section."""
    raw = load_raw(source)
    if preset is not None:
        raw = {**load_raw(preset), "data": raw["data"], "name": raw["name"]}
    return load_config(raw, _override_texts(overrides))


def fit(data: Any, *, preset: str | None = None, out: str | Path | None = None, progress: bool = True,
        **overrides: Any) -> Any:
    """Train FDRL (Algorithm 1) on ``data`` and return the trained :class:`fdrl.FDRL`.

    ``data``: a NumPy array or tensor (n, features) or (n, ...); a ``torch.utils.data.Dataset``
    of tensors or ``(x, y)`` pairs (labels are ignored); or a path: a ``.npy`` / ``.csv`` /
    ``.txt`` file of vectors, or a folder of images. Vectors are standardised per feature for
    training and ``model.sample(n)`` returns your units, as a NumPy array if ``data`` was one
    (``model.numpy_output``), else as a tensor.
    ``preset``: start from another preset's settings (default: ``vectors`` for arrays and
    files, ``images`` for folders). ``out``: the run directory (default: a new temporary
    folder; ``model.run_dir`` says where). ``overrides``: any config key, with ``__`` for the
    dots (``train__steps=500``, ``objective="lr-kl"``), or dotted through a dict
    (``**{"flow.eta": 0.1}``).

    The run is scored on held-out data beside a Gaussian, a Gaussian mixture and the floor:
    ``model.metrics`` (also in ``RUN/metrics.json``).
    """
    from fdrl.model import FDRL

    run_dir = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="fdrl-"))
    if isinstance(data, (str, Path)):
        source = str(data)
    else:
        array = _as_array(data)
        run_dir.mkdir(parents=True, exist_ok=True)
        source = str(run_dir / DATA_FILE)
        _keep_or_write(array, run_dir / DATA_FILE)
    config = build_fit_config(source, preset, overrides)
    _, metrics = train_and_score(config, run_dir, progress)
    model = FDRL.load(run_dir)
    model.run_dir, model.metrics = run_dir, metrics
    model.numpy_output = isinstance(data, np.ndarray)  # scikit-learn style: NumPy in, NumPy out
    return model


def _keep_or_write(array: np.ndarray, path: Path) -> None:
    """Write ``array`` as the run's data, unless the run already holds the same data (fit again
    on the same ``out`` resumes it); other data in an existing run is refused, never replaced."""
    if path.exists():
        try:
            same = np.array_equal(np.load(path, allow_pickle=False), array)
        except (ValueError, OSError, EOFError):
            same = False
        if not same:
            raise ValueError(f"'{path.parent}' already holds a run trained on other data ({path.name}); "
                             "pass another out=")
        return
    np.save(path, array)


def train_and_score(config: Config, run_dir: str | Path, progress: bool = True) -> tuple[Any, dict[str, Any] | None]:
    """Algorithm 1 to ``train.steps`` in ``run_dir``, then the held-out report
    (``metrics.json``) if training finished; what ``fdrl train`` and :func:`fit` both run.
    Returns the trainer and the report (None if training stopped early or on ranks > 0)."""
    from fdrl.train import Trainer

    trainer = Trainer(config, run_dir, progress=progress)
    trainer.fit()
    if not trainer.dist.is_main or trainer.step < config.train.steps:
        return trainer, None
    return trainer, trainer.evaluate()
