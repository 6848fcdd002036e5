"""Compositions of a trained FDRL model: class guidance (Sec. 6.4, App. E), translation and
refinement (Sec. 6.5, DGflow as FDRL with a fixed prior).

Class-conditional generation (Eq. 12, 29)
-----------------------------------------
A classifier over N classes is a density ratio, p(y=n|x) = N^-1 p(x|y=n) / p(x), so the
unconditional estimator r(x) = q~(x)/p(x) composes into a conditional one without retraining:

    log r(x | y=n) = log r(x) - log N - phi * log p(y=n | x)                  (Eq. 12, 29, 31)

with phi = 1 the exact composition and phi < 1 (the paper uses 0.1) scaling the classifier's
gradients down to the estimator's. The flow's potential is the pairing's f' of that log-ratio,
``objective.f_prime_of_log_ratio(log r_cond)``, so every pairing works:

* LR-KL: f' = log r + 1, so the drift is grad log r - phi grad log p(y|x) (Eq. 31; the paper's
  factor 2 in front of eta is absorbed in eta);
* LR-JS, LR-logD: the classifier term enters through a sigmoid of log r_cond, so its weight
  varies with the estimator's value;
* LSIF-chi2: the network outputs r itself; log r is log of the output clamped at the smallest
  positive float. f' = 2 (r p(y|x)^-phi / N - 1) is then *multiplicative*: the estimator's
  gradient is scaled by p^-phi / N (so the flow is about N times slower than unguided for
  phi -> 0) and the classifier's by r / N; where the output is <= 0 the clamp makes the whole
  gradient zero (the particle only diffuses). LR pairings do not have this limitation.

Each particle carries its own label, so one batch can hold every class.
:class:`ClassGuidance` is passed to :meth:`fdrl.model.FDRL.sample` (``guidance=``), or use
:func:`conditional_sample`.

Translation and refinement
--------------------------
:func:`transport` flows given images (not prior draws) with a model's own potential: with a run
trained on a source-domain prior (``prior.name=dataset prior.params.data=...``, presets
``cat2dog``) it translates source images into the target domain (Fig. 7); with a run whose prior
is another generator's samples (``prior.name=dataset prior.params.path=samples.npy``) it refines
that generator's samples as DGflow does. :func:`refine` takes a tensor or a callable generator.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fdrl import seeding
from fdrl.flow import Potential, frozen
from fdrl.image_io import default_scale, rows_grid, save_png
from fdrl.model import FDRL

__all__ = ["ClassGuidance", "conditional_sample", "guided_potential", "transport", "refine", "translate",
           "process_figure"]


# -- class guidance -----------------------------------------------------------------------------

def guided_potential(estimator: nn.Module, objective: Any, classifier: nn.Module, labels: Tensor, phi: float,
                     num_classes: int) -> Potential:
    """V(x) = f'(exp(log r(x) - log N - phi log p(y|x))) for one label per particle (Eq. 29, 31)."""
    log_n = math.log(num_classes)
    labels = labels.long()

    def potential(x: Tensor) -> Tensor:
        if labels.shape != (x.shape[0],):
            raise ValueError(f"class guidance has {labels.shape[0]} labels for a batch of {x.shape[0]} particles")
        log_r = objective.log_ratio(estimator(x))
        log_p = F.log_softmax(classifier(x), dim=-1)
        log_p_y = log_p.gather(1, labels.to(x.device)[:, None]).squeeze(1)
        return objective.f_prime_of_log_ratio(log_r - log_n - phi * log_p_y)

    return potential


def _labels_tensor(labels: int | Sequence[int] | Tensor | np.ndarray) -> Tensor:
    if isinstance(labels, (int, np.integer)):
        return torch.tensor([int(labels)])
    t = torch.as_tensor(np.asarray(labels) if not isinstance(labels, Tensor) else labels)
    if t.ndim == 0:
        t = t.reshape(1)
    if t.ndim != 1 or t.numel() == 0:
        raise ValueError(f"labels must be an integer or a non-empty 1-D sequence of integers, got shape {tuple(t.shape)}")
    if t.is_floating_point() or t.dtype == torch.bool:
        if t.dtype == torch.bool or not torch.equal(t, t.round()):
            raise ValueError("labels must be integers")
    return t.long().cpu()


class ClassGuidance:
    """Class guidance by ``classifier`` (any nn.Module returning logits over N classes).

    ``labels``: one class, or one per particle (then its length must equal the number of
    samples). ``phi`` >= 0 weights log p(y|x) (Eq. 31; 0 is unguided, 1 the exact Eq. 12).
    ``num_classes``: N, when known (e.g. the dataset's); it must match the classifier's output
    width. Bad input raises ValueError with one line.
    """

    def __init__(self, classifier: nn.Module, labels: int | Sequence[int] | Tensor, phi: float = 0.1,
                 num_classes: int | None = None):
        phi = float(phi)
        if not math.isfinite(phi) or phi < 0:
            raise ValueError(f"phi must be a finite number >= 0, got {phi}")
        if not isinstance(classifier, nn.Module):
            raise ValueError(f"the classifier must be a torch nn.Module returning logits, got {type(classifier).__name__}")
        self.classifier, self.phi = classifier, phi
        self.labels = _labels_tensor(labels)
        declared = getattr(classifier, "num_classes", None)
        if num_classes is not None and declared is not None and int(declared) != int(num_classes):
            raise ValueError(f"the classifier has {declared} classes, but num_classes={num_classes} was given")
        self.num_classes = int(num_classes if num_classes is not None else declared) if (
            num_classes is not None or declared is not None) else None
        if self.num_classes is not None:
            self._check_range(self.num_classes)

    def _check_range(self, n_classes: int) -> None:
        if n_classes < 2:
            raise ValueError(f"class guidance needs a classifier of >= 2 classes, got {n_classes}")
        low, high = int(self.labels.min()), int(self.labels.max())
        if low < 0 or high >= n_classes:
            bad = low if low < 0 else high
            raise ValueError(f"label {bad} is out of range for a classifier of {n_classes} classes (0..{n_classes - 1})")

    def labels_for(self, n: int) -> Tensor:
        """The label of each of ``n`` particles (one label is repeated)."""
        if self.labels.numel() == 1:
            return self.labels.expand(n).clone()
        if self.labels.numel() != n:
            raise ValueError(f"{self.labels.numel()} labels were given for {n} samples; give one label or one per sample")
        return self.labels

    @torch.no_grad()
    def check(self, model: FDRL) -> int:
        """Probe the classifier on one prior draw: it must take the model's samples and return
        (1, N) logits with N matching ``num_classes`` and the labels. Returns N."""
        probe = model.prior.sample(1, torch.Generator().manual_seed(0), device=model.device)
        was_training = self.classifier.training
        self.classifier.eval()
        try:
            logits = self.classifier(probe)
        except (RuntimeError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f"the classifier does not take this model's samples of shape "
                             f"{tuple(probe.shape[1:])} ({first})") from None
        finally:
            self.classifier.train(was_training)
        if logits.ndim != 2 or logits.shape[0] != 1:
            raise ValueError(f"the classifier must return logits of shape (batch, classes), got {tuple(logits.shape)}")
        width = int(logits.shape[1])
        if self.num_classes is not None and width != self.num_classes:
            raise ValueError(f"the classifier returns {width} logits but has {self.num_classes} classes")
        self.num_classes = width
        self._check_range(width)
        return width

    @contextlib.contextmanager
    def bound(self, model: FDRL, n: int) -> Iterator["ClassGuidance"]:
        """Check against ``model`` and ``n`` samples, move the classifier to the model's device and
        freeze it (eval mode, no parameter gradients) for the duration."""
        self.labels_for(n)
        self.classifier.to(model.device)
        self.check(model)
        with frozen(self.classifier):
            yield self

    def potential(self, model: FDRL, labels: Tensor) -> Potential:
        """The guided potential of ``model`` for particles with ``labels``."""
        if self.num_classes is None:
            self.check(model)
        return guided_potential(model.estimator, model.objective, self.classifier, labels, self.phi, self.num_classes)


def conditional_sample(model: FDRL, classifier: nn.Module, labels: int | Sequence[int] | Tensor, phi: float = 0.1,
                       n: int | None = None, steps: int | None = None, seed: int = 0, batch_size: int | None = None,
                       num_classes: int | None = None) -> Tensor:
    """Class-conditional samples (Eq. 12 with weight ``phi``): one per label, or ``n`` of one label."""
    guidance = ClassGuidance(classifier, labels, phi, num_classes)
    if n is None:
        n = guidance.labels.numel()
    return model.sample(n, steps=steps, seed=seed, batch_size=batch_size, guidance=guidance)


def all_labels(n: int, num_classes: int) -> Tensor:
    """``n`` labels cycling through every class: 0, 1, ..., N-1, 0, 1, ..."""
    return torch.arange(n) % num_classes


# -- translation and refinement -----------------------------------------------------------------

def transport(model: FDRL, x: Tensor, steps: int | None = None, seed: int = 0, batch_size: int | None = None,
              record: Sequence[int] | None = None) -> tuple[Tensor, Tensor | None]:
    """Flow the given images ``x`` (instead of prior draws) for ``steps`` (default K + kappa) steps
    of Eq. 9 with the model's potential. Returns the result (CPU) and, when ``record`` lists flow
    steps, the snapshots at those steps, shape (len(record), n, ...)."""
    model.require_pixels("flowing given images (translation, refinement)")
    total = model.total_steps(steps)
    if total < 0:
        raise ValueError(f"steps must be >= 0, got {total}")
    shape = tuple(model.prior.shape) if hasattr(model.prior, "shape") else None
    if shape is not None and tuple(x.shape[1:]) != shape:
        raise ValueError(f"the model takes images of shape {shape}, got inputs of shape {tuple(x.shape[1:])}")
    if len(x) == 0:
        raise ValueError("no input images to flow")
    batch_size = batch_size or len(x)
    outs, snaps = [], []
    for i, start in enumerate(range(0, len(x), batch_size)):
        chunk = x[start:start + batch_size].float()
        trajectory: list[Tensor] | None = [] if record else None
        outs.append(model.flow(chunk, total, seeding.generator(seed, "flow", i, device=model.device),
                               trajectory=trajectory).cpu())
        if record:
            snaps.append(torch.stack([trajectory[min(max(s, 0), total)] for s in record]))
    return torch.cat(outs), (torch.cat(snaps, dim=1) if record else None)


def refine(model: FDRL, source: Tensor | Callable[[int], Tensor], n: int | None = None, steps: int | None = None,
           seed: int = 0, batch_size: int | None = None) -> Tensor:
    """DGflow-style refinement: flow another generator's samples with ``model``'s estimator.

    ``source`` is a tensor of samples or a callable ``generator(n) -> samples``; ``model`` should
    have been trained with that generator's samples as its prior (``prior.name=dataset
    prior.params.path=FILE.npy``), so that r estimates the generator's density over the data's.
    """
    if callable(source) and not isinstance(source, Tensor):
        if n is None or n < 1:
            raise ValueError("refine(model, generator) needs n >= 1 samples to draw")
        with torch.no_grad():
            x = source(n)
        if not isinstance(x, Tensor):
            raise ValueError(f"the generator must return a tensor, got {type(x).__name__}")
        x = x.detach()
    else:
        x = source if n is None else source[:n]
    return transport(model, x.to(model.device), steps, seed, batch_size)[0]


def translate(model: FDRL, x: Tensor, steps: int | None = None, seed: int = 0, batch_size: int | None = None,
              columns: int = 6) -> tuple[Tensor, Tensor, list[int]]:
    """Unpaired translation (Sec. 6.5) of source images ``x`` with a model trained on a
    source-domain prior: returns the results, snapshots at ``columns`` evenly spaced flow steps
    (source first, result last; (columns, n, ...)) and those steps."""
    total = model.total_steps(steps)
    columns = max(2, min(int(columns), total + 1))
    show = sorted({round(i * total / (columns - 1)) for i in range(columns)})
    result, snaps = transport(model, x, total, seed, batch_size, record=show)
    return result, snaps, show


# -- figure ------------------------------------------------------------------------------------

def process_figure(snapshots: Tensor, out: str | Path, rows: int = 8, scale: int | None = None) -> Path:
    """Fig. 7-like figure: one row per image, columns the flow snapshots (source ... result)."""
    rows = min(rows, snapshots.shape[1])
    scale = scale or default_scale(snapshots.shape[2:])
    return save_png(rows_grid(snapshots[:, :rows].transpose(0, 1), scale), out)
