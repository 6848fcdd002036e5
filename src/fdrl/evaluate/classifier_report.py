"""How a labelled-image model's samples look to a classifier trained on the data (digits, MNIST).

:func:`classifier_frechet_distance` is the ``classifier_fd`` metric: the Frechet distance in a
classifier's penultimate features.

Three numbers per image set, each against held-out data: the Frechet distance in the
classifier's penultimate features, the mean max-softmax confidence (blurry, in-between images
score low), and the entropy of the predicted-class histogram (a collapse onto few classes
scores low; ln 10 is uniform over ten classes).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fdrl.classifier import DigitClassifier, PenultimateFeatures, load_classifier
from fdrl.evaluate.frechet import frechet_feature_distance


def classifier_frechet_distance(
    samples: Tensor, reference: Any, classifier: DigitClassifier | str | Path, batch_size: int = 256
) -> float:
    """The Frechet distance between ``samples`` and ``reference`` (images, or
    :class:`~fdrl.evaluate.frechet.FeatureStats` of the same classifier) in the penultimate
    features of ``classifier`` (a model or a saved classifier's directory)."""
    model = load_classifier(classifier) if isinstance(classifier, (str, Path)) else classifier
    return frechet_feature_distance(samples, reference, PenultimateFeatures(model), batch_size)


@torch.no_grad()
def prediction_stats(images: Tensor, classifier: DigitClassifier, batch_size: int = 512) -> dict[str, Any]:
    """Mean max-softmax confidence and the predicted-class histogram with its entropy."""
    device = next(classifier.parameters()).device
    probs = torch.cat([classifier(x.to(device)).softmax(1).cpu() for x in images.split(batch_size)])
    counts = torch.bincount(probs.argmax(1), minlength=probs.shape[1]).double()
    freq = counts / counts.sum()
    entropy = float(-(freq[freq > 0] * freq[freq > 0].log()).sum())
    return {"confidence": float(probs.max(1).values.mean()), "class_histogram": counts.long().tolist(),
            "class_entropy": entropy, "class_entropy_max": math.log(probs.shape[1])}


#: at most this many disjoint training subsets of the samples' size are averaged for the floor
FLOOR_SUBSETS = 5


def classifier_report(
    samples: Tensor, prior_samples: Tensor, train_images: Tensor, test_images: Tensor, classifier: DigitClassifier,
    seed: int = 0,
) -> dict[str, Any]:
    """Samples and prior draws scored against held-out images. The floor (what a perfect model
    would score) is as many training images as there are samples against the held-out images:
    the Frechet distance of n points is biased upwards by about trace terms over n, so a floor of
    all training images sits below what n perfect samples reach (MNIST-5k: 13.3 with 4000
    images, about 24 with 1000). One subset of 1000 MNIST images scored between 16.7 and 28.5
    by its seed, so the floor is the mean over up to :data:`FLOOR_SUBSETS` disjoint subsets (a
    seeded permutation cut into pieces of n; ``classifier_fd_floor_subsets`` lists each). That of
    all training images is reported beside it (``classifier_fd_floor_all``)."""
    n = samples.shape[0]
    order = torch.randperm(train_images.shape[0], generator=torch.Generator().manual_seed(seed))
    pieces = [order[i:i + n] for i in range(0, order.numel() - n + 1, n)][:FLOOR_SUBSETS] or [order]
    floors = [classifier_frechet_distance(train_images[piece], test_images, classifier) for piece in pieces]
    fd = {name: classifier_frechet_distance(x, test_images, classifier)
          for name, x in (("samples", samples), ("prior", prior_samples), ("floor_all", train_images))}
    fd["floor"] = sum(floors) / len(floors)
    return {
        "classifier_fd": fd["samples"],
        "classifier_fd_prior": fd["prior"],
        "classifier_fd_floor": fd["floor"],
        "classifier_fd_floor_all": fd["floor_all"],
        "classifier_fd_floor_n": int(pieces[0].numel()),
        "classifier_fd_floor_subsets": floors,
        "classifier_fd_ratio": fd["samples"] / fd["prior"],
        "classifier_fd_to_floor": fd["samples"] / fd["floor"],
        "samples": prediction_stats(samples, classifier),
        "prior": prediction_stats(prior_samples, classifier),
        "n": int(n),
    }
