"""The robust CIFAR10 classifier of the paper's guidance experiments (App. F), loaded as weights.

The robustness library's L2-robust ResNet-50 (eps = 1 on [0, 1] images) is read with
:func:`fdrl.classifier.load_torchvision_classifier`, without importing that library or
unpickling code.
"""

from __future__ import annotations

from pathlib import Path

import torch

from fdrl.classifier import Normalized, load_torchvision_classifier

#: mean and std of the robustness library's CIFAR10 normaliser (inputs in [0, 1])
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


def load_robust_cifar10_resnet50(path: str | Path, device: str | torch.device = "cpu") -> Normalized:
    """The robustness library's L2-robust CIFAR10 ResNet-50 (App. F: eps = 1), without importing
    that library: its checkpoint's ``model`` dict, names starting ``module.model.`` (the
    attacker's copy and the normaliser are dropped), a torchvision resnet50 with the CIFAR stem,
    and the CIFAR10 normalisation of the library's ``InputNormalize``."""
    return load_torchvision_classifier(path, "resnet50", 10, device, CIFAR10_MEAN, CIFAR10_STD,
                                       strip_prefix="module.model.", key="model", cifar_stem=True)
