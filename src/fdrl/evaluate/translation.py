"""Table 4's protocol for unpaired image-to-image translation (Section 6.5, App. F).

A model trained with the prior q' = domain A's training images (``prior.name=dataset``) and
the data p = domain B's training images carries *test* images of A to B by the flow of Eq. 9
(K + kappa steps, as ``fdrl translate``). The translation is scored by the Frechet distance
(FID, Heusel et al.; or the same distance in a digit classifier's penultimate features) of the
translated test-A images to the test-B images. :func:`translation_report` gives it beside two
reference points in the same features and against the same test-B images:

* ``before``: the untranslated test-A images (what the flow starts from);
* ``after``: the translated test-A images (Table 4's number);
* ``floor``: as many of the run's B *training* images as there are test-A images (a seeded
  subset without repeats; all of them if there are fewer), i.e. what a translation whose
  results were indistinguishable from fresh B images would score. The Frechet distance of a
  finite set is biased upwards by an amount that shrinks with its size, so the floor uses the
  size of the translated set, not the whole training set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

from fdrl.classifier import PenultimateFeatures, load_classifier
from fdrl.evaluate.fid import WEIGHTS_ENV, load_inception, resolve_inception_weights
from fdrl.evaluate.frechet import Extractor, feature_stats
from fdrl.guidance import transport
from fdrl.model import FDRL

#: Priors under which a run translates: the source domain as samples or as an image dataset.
TRANSLATION_PRIORS = ("dataset", "data_source")
#: Feature batch sizes by extractor when none is given (Inception at 299 x 299 is the heavy one).
FEATURE_BATCH = {"fid": 50, "classifier_fd": 256}


def translation_extractor(shape: tuple[int, ...], inception_weights: str | Path | None = None,
                          classifier: str | Path | None = None,
                          device: Any = "cpu") -> tuple[str, Extractor, dict[str, Any]]:
    """The feature extractor of the Frechet distance for images of ``shape`` (C, H, W): FID's
    Inception pool3 with ``inception_weights`` (a file; ``$FDRL_INCEPTION_WEIGHTS`` counts when
    no classifier is given), else the penultimate features of the ``fdrl train-classifier``
    classifier in ``classifier``. Returns (metric name, extractor, its identity). Neither, both,
    or a classifier for another image shape is a one-line ValueError."""
    if inception_weights is not None and classifier is not None:
        raise ValueError("pass one of --inception-weights FILE (FID) or --classifier DIR (classifier Frechet "
                         "distance), not both")
    if classifier is None:
        weights = resolve_inception_weights(inception_weights)  # a missing file is a one-line error here
        if weights is None:
            raise ValueError(f"translation scoring needs features: pass --inception-weights FILE for FID (or set "
                             f"{WEIGHTS_ENV}), or --classifier DIR for the classifier Frechet distance "
                             f"(train one with: fdrl train-classifier mnist --out DIR)")
        network = load_inception(weights, device)
        return "fid", network, network.identity
    model = load_classifier(classifier, device=device)
    if tuple(model.in_shape) != tuple(shape):
        raise ValueError(f"classifier '{classifier}' takes images of shape {tuple(model.in_shape)}, "
                         f"but the run's images have shape {tuple(shape)}")
    extractor = PenultimateFeatures(model)
    return "classifier_fd", extractor, {**extractor.identity, "path": str(classifier)}


def translation_report(model: FDRL, source: Tensor, target: Tensor, floor: Tensor, extractor: Extractor,
                       steps: int | None = None, seed: int = 0, batch_size: int = 500,
                       feature_batch: int = 256) -> dict[str, Any]:
    """Flow the test-A images ``source`` with ``model`` for ``steps`` (default K + kappa) steps
    of Eq. 9, seeded and batched as :func:`fdrl.guidance.transport` (so ``fdrl translate`` with
    the same seed and ``--batch`` gives the same images), and return the squared Frechet
    distances in ``extractor``'s features of ``source`` (before), the translated images (after)
    and ``floor`` (B training images) to the test-B images ``target``."""
    for name, images in (("test-A", source), ("test-B", target), ("floor", floor)):
        if len(images) < 2:
            raise ValueError(f"the {name} set holds {len(images)} image(s); a Frechet distance needs at least 2")
    total = model.total_steps(steps)
    translated, _ = transport(model, source, total, seed, batch_size)
    reference = feature_stats(target, extractor, feature_batch)

    def distance(images: Tensor) -> float:
        return feature_stats(images, extractor, feature_batch).frechet_distance(reference)

    return {"before": distance(source), "after": distance(translated), "floor": distance(floor),
            "n": len(source), "target_n": len(target), "floor_n": len(floor), "steps": total, "seed": seed,
            "batch": batch_size}
