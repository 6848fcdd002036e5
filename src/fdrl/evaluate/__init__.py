"""Sample-quality metrics: one registry (:data:`METRICS`), FID, Frechet statistics, ablations."""

from fdrl.evaluate.ablation import ablate_steps
from fdrl.evaluate.fid import (
    InceptionWeightsError,
    fid_from_samples,
    fid_reference_stats,
    inception_features,
    load_inception,
    to_uint8_rgb,
)
from fdrl.evaluate.frechet import FeatureStats, cached_stats, feature_stats, frechet_distance, frechet_feature_distance
from fdrl.evaluate.metrics import (
    METRICS,
    c2st_accuracy,
    classifier_fd,
    energy_distance,
    get_metric,
    mmd2,
    sliced_wasserstein,
)

__all__ = [
    "FeatureStats", "InceptionWeightsError", "METRICS", "ablate_steps", "c2st_accuracy", "cached_stats",
    "classifier_fd", "energy_distance", "feature_stats", "fid_from_samples", "fid_reference_stats",
    "frechet_distance", "frechet_feature_distance", "get_metric", "inception_features", "load_inception",
    "mmd2", "sliced_wasserstein", "to_uint8_rgb",
]
