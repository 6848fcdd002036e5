"""Digit classifiers trained by the project, for guidance and for evaluation.

Class-conditional generation (Sec. 6.4, App. E) composes the unconditional FDRL estimator
with a classifier p(y | x); its samples are then judged by a *second*, independent classifier
(another architecture, another seed), and images in general by the Frechet distance in a
classifier's penultimate features (:func:`classifier_frechet_distance`, the ``classifier_fd``
metric), the FID of small grayscale digits, for which an ImageNet Inception network is no
judge.

:class:`DigitClassifier` takes 1-channel images in [-1, 1] (scikit-learn's 8x8 ``digits``,
28x28 ``mnist``; any (C, H, W) works) and has two architectures:

* ``cnn``: 3x3 convolutions of ``width``, ``2 * width`` and ``2 * width`` channels (ReLU), the
  first two followed by 2x2 max-pooling, then a ReLU layer of ``4 * width`` units (the
  penultimate features) and the linear class layer;
* ``mlp``: the flattened image through two ReLU layers of ``4 * width`` units (the second is
  the penultimate features), then the class layer. Different inductive bias, so a classifier
  of the other architecture and seed is a fair, independent judge of guided samples.

:func:`train_classifier` trains on the dataset's ``train`` split (Adam, cosine learning rate
decay, inputs with the dataset's dequantisation noise, as the generative model sees them) and
reports accuracy on the held-out ``test`` split, which plays no part in training (no early
stopping or model selection on it). Every training step goes through :func:`_train_step`;
with ``adversarial_eps`` > 0 it first replaces the inputs by PGD-L2 perturbations
(:func:`pgd_l2`, Santurkar et al. 2019), which gives the robust classifiers guidance needs.

:func:`load_torchvision_classifier` reads a plain torchvision classifier (a state-dict file and
an architecture name) and :func:`load_robust_cifar10_resnet50` the robustness library's robust
CIFAR10 ResNet-50, both without unpickling code, wrapped to take [-1, 1] images.

Saved as ``classifier.safetensors`` (weights) + ``classifier.json`` (architecture, training
settings, held-out accuracy); :func:`load_classifier` reads them back, no pickle involved.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from fdrl import seeding

ARCHITECTURES = ("cnn", "mlp")
#: datasets with class labels a classifier can be trained on
LABELLED_DATASETS = ("digits", "mnist", "mnist8")
#: epochs when not given: enough for >= 97% held-out accuracy (digits) on a CPU in seconds
DEFAULT_EPOCHS = {"digits": 30, "mnist": 15, "mnist8": 15}
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


def labelled_images(dataset_name: str, split: str, test_fraction: float = 0.2) -> tuple[Tensor, Tensor]:
    """Clean images in [-1, 1] (N, C, H, W) and labels (N,) of a labelled dataset's split."""
    from fdrl.data import build_image_data

    if dataset_name not in LABELLED_DATASETS:
        raise ValueError(f"no class labels for dataset '{dataset_name}'; a classifier trains on: "
                         f"{', '.join(LABELLED_DATASETS)}")
    data = build_image_data(dataset_name, split=split, test_fraction=test_fraction)
    return data.images(range(len(data))), data.labels


@torch.no_grad()
def accuracy(model: DigitClassifier, images: Tensor, labels: Tensor, batch_size: int = 1024) -> float:
    """The share of ``images`` whose most probable class is their label."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for x, y in zip(images.split(batch_size), labels.split(batch_size)):
        correct += int((model(x.to(device)).argmax(1).cpu() == y).sum())
    model.train(was_training)
    return correct / len(labels)


def pgd_l2(model: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int, step_size: float,
           clamp: tuple[float, float] | None = (-1.0, 1.0), generator: torch.Generator | None = None,
           random_start: bool = False) -> Tensor:
    """L2 projected gradient ascent on the cross-entropy (Madry et al.; Santurkar et al. 2019):
    ``steps`` steps of size ``step_size`` along the per-sample normalised gradient, each followed
    by projection onto the L2 ball of radius ``eps`` around ``x`` and, if ``clamp``, onto the
    valid pixel range. Only the inputs get gradients; the model's parameters are untouched.
    Returns the perturbed inputs (detached). ``eps`` is measured in the model's input scale:
    [-1, 1] here, so eps = 1 on [0, 1] images (the robust CIFAR10 classifier) is 2."""
    if not (eps >= 0 and steps >= 0 and step_size >= 0):
        raise ValueError(f"PGD needs eps >= 0, steps >= 0 and step_size >= 0; got {eps}, {steps}, {step_size}")
    x = x.detach()
    flat = (-1,) + (1,) * (x.ndim - 1)

    def project(delta: Tensor) -> Tensor:
        norms = delta.reshape(len(delta), -1).norm(dim=1).reshape(flat)
        delta = delta * torch.clamp(eps / (norms + 1e-12), max=1.0)
        if clamp is not None:
            delta = (x + delta).clamp(*clamp) - x
        return delta

    delta = torch.zeros_like(x)
    if random_start and eps > 0:
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        delta = project(noise * eps / noise.reshape(len(x), -1).norm(dim=1).reshape(flat).clamp_min(1e-12)
                        * torch.rand((len(x),) + (1,) * (x.ndim - 1), generator=generator, device=x.device))
    if eps == 0 or steps == 0:
        return (x + delta).detach()
    with torch.enable_grad():
        for _ in range(steps):
            delta = delta.detach().requires_grad_(True)
            loss = F.cross_entropy(model(x + delta), y)
            (grad,) = torch.autograd.grad(loss, delta)
            norms = grad.reshape(len(grad), -1).norm(dim=1).reshape(flat).clamp_min(1e-12)
            delta = project(delta.detach() + step_size * grad / norms)
    return (x + delta).detach()


def _train_step(model: DigitClassifier, x: Tensor, y: Tensor, optimizer: torch.optim.Optimizer,
                adversarial: dict[str, Any] | None = None) -> float:
    """One optimiser step of cross-entropy on the batch (x, y); returns the loss. With
    ``adversarial`` ({eps, steps, step_size}) the inputs are first replaced by their PGD-L2
    perturbations (:func:`pgd_l2`), i.e. adversarial training (Santurkar et al. 2019)."""
    if adversarial:
        x = pgd_l2(model, x, y, adversarial["eps"], adversarial["steps"], adversarial["step_size"])
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def train_classifier(
    dataset_name: str,
    out_dir: str | Path | None,
    seed: int = 0,
    arch: str = "cnn",
    epochs: int | None = None,
    width: int = 32,
    batch_size: int = 64,
    lr: float = 2e-3,
    noise: float = 3e-2,
    test_fraction: float = 0.2,
    device: str | torch.device = "cpu",
    progress: bool = False,
    adversarial_eps: float = 0.0,
    pgd_steps: int = 7,
    pgd_step_size: float | None = None,
) -> tuple[DigitClassifier, dict[str, Any]]:
    """Train a :class:`DigitClassifier` on the ``train`` split of ``dataset_name`` (digits |
    mnist) and measure its accuracy on the held-out ``test`` split.

    ``noise`` is the sigma of the Gaussian added to training inputs (the dataset's
    dequantisation). Initialisation, batch order and noise are fixed by ``seed``; ``device``
    is a torch device or a name (``auto`` picks CUDA, then MPS, then the CPU). Writes the
    classifier to ``out_dir`` (unless None). Returns the model (eval mode, on ``device``) and
    the metrics: train and held-out accuracy, their sizes, and the training time in seconds.

    ``adversarial_eps`` > 0 trains adversarially (PGD-L2 of radius ``adversarial_eps`` in the
    [-1, 1] input scale, ``pgd_steps`` steps of ``pgd_step_size``, default 2.5 eps / steps as
    Madry et al.); robust classifiers give the perceptually aligned gradients guidance needs
    (Sec. 6.4). The attack settings are saved in ``classifier.json`` (training.adversarial).
    """
    if not (math.isfinite(adversarial_eps) and adversarial_eps >= 0):
        raise ValueError(f"the adversarial epsilon must be a finite number >= 0, got {adversarial_eps}")
    adversarial = None
    if adversarial_eps > 0:
        if pgd_steps < 1:
            raise ValueError(f"adversarial training needs >= 1 PGD step, got {pgd_steps}")
        step_size = 2.5 * adversarial_eps / pgd_steps if pgd_step_size is None else float(pgd_step_size)
        if not (math.isfinite(step_size) and step_size > 0):
            raise ValueError(f"the PGD step size must be a finite number > 0, got {step_size}")
        adversarial = {"norm": "l2", "eps": float(adversarial_eps), "steps": int(pgd_steps), "step_size": step_size}
    if epochs is None:
        epochs = DEFAULT_EPOCHS.get(dataset_name, 20)
    if epochs < 1 or batch_size < 1 or not lr > 0 or noise < 0:
        raise ValueError(f"need epochs >= 1, batch_size >= 1, lr > 0, noise >= 0; got {epochs}, {batch_size}, "
                         f"{lr}, {noise}")
    start = time.perf_counter()
    train_x, train_y = labelled_images(dataset_name, "train", test_fraction)
    test_x, test_y = labelled_images(dataset_name, "test", test_fraction)
    device = _resolve(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeding.derived_seed(seed, "init"))
        model = DigitClassifier(tuple(train_x.shape[1:]), int(train_y.max()) + 1, arch, width)
    model.to(device).train()
    steps_per_epoch = math.ceil(len(train_y) / batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps_per_epoch)
    epoch_iter = range(epochs)
    if progress:
        from tqdm.auto import tqdm

        epoch_iter = tqdm(epoch_iter, desc=f"classifier {dataset_name}/{arch}", unit="epoch")
    loss = float("nan")
    for epoch in epoch_iter:
        order = torch.randperm(len(train_y), generator=seeding.generator(seed, "epoch", epoch))
        jitter = noise * torch.randn(train_x.shape, generator=seeding.generator(seed, "augment", epoch))
        for idx in order.split(batch_size):
            x = (train_x[idx] + jitter[idx]).to(device)
            loss = _train_step(model, x, train_y[idx].to(device), optimizer, adversarial)
            schedule.step()
    model.eval()
    metrics = {
        "dataset": dataset_name,
        "arch": arch,
        "seed": seed,
        "epochs": epochs,
        "final_loss": loss,
        "train_accuracy": accuracy(model, train_x, train_y),
        "test_accuracy": accuracy(model, test_x, test_y),
        **({"test_robust_accuracy": robust_accuracy(model, test_x, test_y, adversarial)} if adversarial else {}),
        "train_n": len(train_y),
        "test_n": len(test_y),
        "seconds": time.perf_counter() - start,
    }
    model.info = {
        "format": FORMAT,
        **model.spec(),
        "value_range": [-1.0, 1.0],
        "dataset": {"name": dataset_name, "split": "train", "test_fraction": test_fraction},
        "training": {"seed": seed, "epochs": epochs, "batch_size": batch_size, "lr": lr, "noise": noise,
                     "schedule": "cosine", "optimizer": "adam", "adversarial": adversarial},
        "metrics": metrics,
    }
    if out_dir is not None:
        save_classifier(model, out_dir)
    return model, metrics


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
    return model.to(_resolve(device)).eval()


def _resolve(device: str | torch.device) -> torch.device:
    from fdrl.model import resolve_device

    return resolve_device(device) if isinstance(device, str) else device


def classifier_frechet_distance(
    samples: Tensor, reference: Any, classifier: DigitClassifier | str | Path, batch_size: int = 256
) -> float:
    """The Frechet distance between ``samples`` and ``reference`` (images, or
    :class:`~fdrl.evaluate.frechet.FeatureStats` of the same classifier) in the penultimate
    features of ``classifier`` (a model or a saved classifier's directory)."""
    from fdrl.evaluate.frechet import frechet_feature_distance

    model = load_classifier(classifier) if isinstance(classifier, (str, Path)) else classifier
    return frechet_feature_distance(samples, reference, PenultimateFeatures(model), batch_size)


def robust_accuracy(model: nn.Module, images: Tensor, labels: Tensor, adversarial: dict[str, Any],
                    batch_size: int = 512) -> float:
    """Accuracy under the PGD-L2 attack ``adversarial`` ({eps, steps, step_size})."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for x, y in zip(images.split(batch_size), labels.split(batch_size)):
        x, y = x.to(device), y.to(device)
        x_adv = pgd_l2(model, x, y, adversarial["eps"], adversarial["steps"], adversarial["step_size"])
        with torch.no_grad():
            correct += int((model(x_adv).argmax(1) == y).sum())
    model.train(was_training)
    return correct / len(labels)


# -- plain torchvision-style classifiers --------------------------------------------------------

#: mean and std of the robustness library's CIFAR10 normaliser (inputs in [0, 1])
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


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
            __import__("pickle").UnpicklingError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"cannot load {arch} weights from '{path}' ({reason[:300]})") from None
    model = Normalized(net, mean, std, num_classes, from_unit_range)
    return model.to(_resolve(device)).eval()


def load_robust_cifar10_resnet50(path: str | Path, device: str | torch.device = "cpu") -> Normalized:
    """The robustness library's L2-robust CIFAR10 ResNet-50 (App. F: eps = 1), without importing
    that library: its checkpoint's ``model`` dict, names starting ``module.model.`` (the
    attacker's copy and the normaliser are dropped), a torchvision resnet50 with the CIFAR stem,
    and the CIFAR10 normalisation of the library's ``InputNormalize``."""
    return load_torchvision_classifier(path, "resnet50", 10, device, CIFAR10_MEAN, CIFAR10_STD,
                                       strip_prefix="module.model.", key="model", cifar_stem=True)


def load_any_classifier(spec: str | Path, device: str | torch.device = "cpu", arch: str | None = None,
                        num_classes: int | None = None) -> nn.Module:
    """A classifier named on the command line: a directory from ``fdrl train-classifier``, or a
    weights file with ``arch`` (``robust_cifar10_resnet50``, or a torchvision name plus
    ``num_classes``)."""
    spec = Path(spec)
    if spec.is_dir():
        return load_classifier(spec, device, num_classes)
    if arch is None:
        raise ValueError(f"'{spec}' is not a classifier directory; for a weights file pass --arch "
                         "(robust_cifar10_resnet50 or a torchvision name) and --num-classes")
    if arch == "robust_cifar10_resnet50":
        return load_robust_cifar10_resnet50(spec, device)
    if num_classes is None:
        raise ValueError(f"--num-classes is needed for a {arch} weights file")
    return load_torchvision_classifier(spec, arch, num_classes, device)
