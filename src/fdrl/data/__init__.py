"""Training data: toy distributions, vector arrays and (later) images behind one interface."""

from fdrl.data.source import ArrayData, DataSource, build_data, DATASETS
from fdrl.data.toy import ToyDistribution

__all__ = ["ArrayData", "DataSource", "ToyDistribution", "build_data", "DATASETS"]
