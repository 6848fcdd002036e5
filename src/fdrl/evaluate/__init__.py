"""Sample-quality metrics."""

from fdrl.evaluate.metrics import c2st_accuracy, energy_distance, evaluate_vectors

__all__ = ["c2st_accuracy", "energy_distance", "evaluate_vectors"]
