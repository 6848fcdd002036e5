"""Training the digit classifiers of the composition studies, plain or adversarially robust.

:func:`train_classifier` trains a :class:`~fdrl.classifier.DigitClassifier` on the dataset's
``train`` split (Adam, cosine learning rate decay, inputs with the dataset's dequantisation
noise, as the generative model sees them) and reports accuracy on the held-out ``test`` split,
which plays no part in training (no early stopping or model selection on it). Every training
step goes through :func:`_train_step`; with ``adversarial_eps`` > 0 it first replaces the
inputs by PGD-L2 perturbations (:func:`pgd_l2`, Santurkar et al. 2019), which gives the robust
classifiers guidance needs (Sec. 6.4). ``fdrl train-classifier`` runs it.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fdrl import seeding
from fdrl.classifier import FORMAT, DigitClassifier, as_device, save_classifier
from fdrl.data import build_image_data

#: datasets with class labels a classifier can be trained on
LABELLED_DATASETS = ("digits", "mnist", "mnist8")
#: epochs when not given: enough for >= 97% held-out accuracy (digits) on a CPU in seconds
DEFAULT_EPOCHS = {"digits": 30, "mnist": 15, "mnist8": 15}


def labelled_images(dataset_name: str, split: str, test_fraction: float = 0.2) -> tuple[Tensor, Tensor]:
    """Clean images in [-1, 1] (N, C, H, W) and labels (N,) of a labelled dataset's split."""
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
    device = as_device(device)
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
