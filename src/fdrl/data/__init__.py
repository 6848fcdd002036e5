"""Training data: toy distributions, vector arrays and images behind one interface."""

from fdrl.data.images import IMAGE_DATASETS, ImageData, build_image_data
from fdrl.data.order import SampleOrder
from fdrl.data.source import ArrayData, DataSource, build_data, build_held_out, DATASETS
from fdrl.data.toy import ToyDistribution

__all__ = [
    "ArrayData", "DataSource", "build_held_out", "ImageData", "SampleOrder", "ToyDistribution", "build_data",
    "build_image_data", "DATASETS", "IMAGE_DATASETS",
]
