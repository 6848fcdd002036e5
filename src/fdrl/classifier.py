"""Image classifiers for guidance and evaluation: the model, its files, and loaders.

Class-conditional generation (Sec. 6.4, App. E) composes the unconditional FDRL estimator
with a classifier p(y | x); its samples are then judged by a *second*, independent classifier
(another architecture, another seed), and images in general by the Frechet distance in a
classifier's penultimate features (:class:`PenultimateFeatures`; the ``classifier_fd`` metric
of :mod:`fdrl.evaluate.classifier_report`), the FID of small grayscale digits, for which an
ImageNet Inception network is no judge.

:class:`DigitClassifier` takes 1-channel images in [-1, 1] (scikit-learn's 8x8 ``digits``,
28x28 ``mnist``; any (C, H, W) works) and has two architectures:

* ``cnn``: 3x3 convolutions of ``width``, ``2 * width`` and ``2 * width`` channels (ReLU), the
  first two followed by 2x2 max-pooling, then a ReLU layer of ``4 * width`` units (the
  penultimate features) and the linear class layer;
* ``mlp``: the flattened image through two ReLU layers of ``4 * width`` units (the second is
  the penultimate features), then the class layer. Different inductive bias, so a classifier
  of the other architecture and seed is a fair, independent judge of guided samples.

Training one (plain or adversarial) is :mod:`fdrl_studies.classifier_training`
(``fdrl train-classifier``). :func:`load_torchvision_classifier` reads a plain torchvision
classifier (a state-dict file and an architecture name) without unpickling code, wrapped to
take [-1, 1] images.

Saved as ``classifier.safetensors`` (weights) + ``classifier.json`` (architecture, training
settings, held-out accuracy); :func:`load_classifier` reads them back, no pickle involved.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from fdrl.model import resolve_device

ARCHITECTURES = ("cnn", "mlp")
WEIGHTS_FILE, CONFIG_FILE = "classifier.safetensors", "classifier.json"
FORMAT = "fdrl-classifier"


class DigitClassifier(nn.Module):
    """A small classifier of (C, H, W) images in [-1, 1]; see the module docstring."""

    def __init__(self, in_shape: tuple[int, ...], num_classes: int = 10, arch: str = "cnn", width: int = 32):
        super().__init__()
        if arch not in ARCHITECTURES:
            raise ValueError(f"unknown classifier architecture '{arch}'; choose one of: {', '.join(ARCHITECTURES)}")
        if width < 1 or num_classes < 2:
            raise ValueError(f"a classifier needs width >= 1 and >= 2 classes, got width {width}, "
                             f"{num_classes} classes")
        in_shape = tuple(int(s) for s in in_shape)
        if len(in_shape) != 3:
            raise ValueError(f"a digit classifier takes images (C, H, W), got sample shape {in_shape}")
        self.in_shape, self.num_classes, self.arch, self.width = in_shape, int(num_classes), arch, int(width)
        self.feature_dim = 4 * width
        c, h, w = in_shape
        if arch == "cnn":
            if h < 4 or w < 4:
                raise ValueError(f"the cnn classifier needs images of at least 4x4, got {h}x{w}")
            self.body = nn.Sequential(
                nn.Conv2d(c, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(),
                nn.Flatten(), nn.Linear(2 * width * (h // 4) * (w // 4), self.feature_dim), nn.ReLU(),
            )
        else:
            self.body = nn.Sequential(
                nn.Flatten(), nn.Linear(c * h * w, self.feature_dim), nn.ReLU(),
                nn.Linear(self.feature_dim, self.feature_dim), nn.ReLU(),
            )
        self.head = nn.Linear(self.feature_dim, self.num_classes)

    def check_input(self, x: Tensor) -> None:
        """Raise ValueError (one line) unless ``x`` is a batch of images of :attr:`in_shape`."""
        if x.ndim != 4 or tuple(x.shape[1:]) != self.in_shape:
            raise ValueError(
                f"this classifier takes images of shape {self.in_shape}, got a batch of shape {tuple(x.shape)}"
            )

    def penultimate_features(self, x: Tensor) -> Tensor:
        """The (b, 4 * width) activations before the class layer: the feature space of the
        classifier Frechet distance and of nearest-neighbour search."""
        self.check_input(x)
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (b, num_classes)."""
        return self.head(self.penultimate_features(x))

    def spec(self) -> dict[str, Any]:
        """What :class:`DigitClassifier` needs to be rebuilt."""
        return {"arch": self.arch, "width": self.width, "in_shape": list(self.in_shape),
                "num_classes": self.num_classes}


class PenultimateFeatures(nn.Module):
    """A classifier's penultimate features as a feature extractor (for
    :func:`fdrl.evaluate.frechet.frechet_feature_distance`). ``identity`` names the classifier
    and a hash of its weights, so reference statistics of another classifier are refused."""

    def __init__(self, classifier: DigitClassifier):
        super().__init__()
        self.classifier = classifier
        self.identity = {"name": "fdrl-classifier-penultimate", **classifier.spec(),
                         "weights": f"sha256:{weights_digest(classifier)}"}

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier.penultimate_features(x)


def weights_digest(model: nn.Module) -> str:
    """SHA-256 over the names, shapes and bytes of a model's state (in name order)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_classifier(model: DigitClassifier, directory: str | Path) -> Path:
    """Write ``classifier.safetensors`` and ``classifier.json`` (the model's ``info``, or just
    its architecture) to ``directory``; each file is written to a temporary name and renamed."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    info = {"format": FORMAT, **getattr(model, "info", {}), **model.spec()}
    for name, write in ((WEIGHTS_FILE, lambda p: save_file(state, str(p))),
                        (CONFIG_FILE, lambda p: p.write_text(json.dumps(info, indent=2)))):
        tmp = directory / f".{name}.tmp-{os.getpid()}"
        write(tmp)
        tmp.replace(directory / name)
    return directory


def load_classifier(
    directory: str | Path, device: str | torch.device = "cpu", num_classes: int | None = None
) -> DigitClassifier:
    """The classifier saved in ``directory`` (eval mode, on ``device``), with its JSON
    description as ``.info``. ``num_classes``, when given, must match the saved classifier."""
    directory = Path(directory)
    weights, config = directory / WEIGHTS_FILE, directory / CONFIG_FILE
    if not weights.is_file() or not config.is_file():
        raise FileNotFoundError(
            f"no classifier in '{directory}' (needs {CONFIG_FILE} and {WEIGHTS_FILE}); "
            f"train one with: fdrl train-classifier digits --out {directory}"
        )
    try:
        info = json.loads(config.read_text())
        if info.get("format") != FORMAT:
            raise ValueError(f"format is {info.get('format')!r}, not {FORMAT!r}")
        model = DigitClassifier(tuple(info["in_shape"]), int(info["num_classes"]), info["arch"], int(info["width"]))
        model.load_state_dict(load_file(str(weights)))
    except (SafetensorError, ValueError, KeyError, TypeError, RuntimeError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"classifier in '{directory}' is damaged or of another version ({reason})") from None
    if num_classes is not None and model.num_classes != num_classes:
        raise ValueError(f"classifier in '{directory}' has {model.num_classes} classes, {num_classes} were expected")
    model.info = info
    return model.to(as_device(device)).eval()


def as_device(device: str | torch.device) -> torch.device:
    """A torch device from a name (``auto`` picks CUDA, then MPS, then the CPU) or a device."""
    return resolve_device(device) if isinstance(device, str) else device


# -- plain torchvision-style classifiers --------------------------------------------------------

class Normalized(nn.Module):
    """Wraps a classifier of normalised [0, 1] images so it takes this project's [-1, 1] images:
    x -> ((x + 1) / 2 - mean) / std -> net. ``num_classes`` is carried for guidance checks."""

    def __init__(self, net: nn.Module, mean: tuple[float, ...] | None, std: tuple[float, ...] | None,
                 num_classes: int | None = None, from_unit_range: bool = True):
        super().__init__()
        self.net, self.from_unit_range = net, from_unit_range
        shape = (1, -1, 1, 1)
        self.register_buffer("mean", torch.tensor(mean if mean is not None else (0.0,)).reshape(shape))
        self.register_buffer("std", torch.tensor(std if std is not None else (1.0,)).reshape(shape))
        if num_classes is not None:
            self.num_classes = int(num_classes)

    def forward(self, x: Tensor) -> Tensor:
        if self.from_unit_range:
            x = (x + 1.0) * 0.5
        return self.net((x - self.mean) / self.std)


def _cifar_stem(net: nn.Module) -> nn.Module:
    """The CIFAR ResNet stem of the robustness library: 3x3 stride-1 conv1, no max-pool."""
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


def load_torchvision_classifier(
    path: str | Path, arch: str, num_classes: int, device: str | torch.device = "cpu",
    mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
    strip_prefix: str | None = None, key: str | None = None, cifar_stem: bool = False,
    from_unit_range: bool = True,
) -> Normalized:
    """A torchvision classifier ``arch`` (e.g. ``resnet50``) with ``num_classes`` outputs, weights
    from the state-dict file ``path`` (.safetensors, or .pt/.pth read with
    ``torch.load(weights_only=True)``: no code runs). ``key`` selects a nested dict (e.g.
    ``model``), ``strip_prefix`` is removed from names (e.g. ``module.model.``; other names are
    dropped when it is given), ``cifar_stem`` uses a 3x3 stride-1 first convolution without
    max-pool (the robustness library's CIFAR ResNets, whose last layer ``linear`` is renamed
    ``fc``). The result takes [-1, 1] images and normalises them with ``mean`` and ``std``.
    Any failure is one ValueError line."""
    import torchvision

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no classifier weights at '{path}'")
    builder = getattr(torchvision.models, arch, None)
    if builder is None or not callable(builder):
        raise ValueError(f"unknown torchvision architecture '{arch}' (e.g. resnet18, resnet50, wide_resnet50_2)")
    net = builder(weights=None, num_classes=int(num_classes))
    if cifar_stem:
        net = _cifar_stem(net)
    try:
        if path.suffix == ".safetensors":
            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        if key is not None:
            state = state[key]
        if isinstance(state, dict) and "state_dict" in state and key is None:
            state = state["state_dict"]
        if strip_prefix:
            state = {k[len(strip_prefix):]: v for k, v in state.items() if k.startswith(strip_prefix)}
            if not state:
                raise ValueError(f"no weights start with '{strip_prefix}'")
        if cifar_stem:
            state = {("fc." + k[len("linear."):] if k.startswith("linear.") else k): v for k, v in state.items()}
        net.load_state_dict(state)
    except (SafetensorError, ValueError, KeyError, TypeError, RuntimeError, AttributeError,
            pickle.UnpicklingError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"cannot load {arch} weights from '{path}' ({reason[:300]})") from None
    model = Normalized(net, mean, std, num_classes, from_unit_range)
    return model.to(as_device(device)).eval()
