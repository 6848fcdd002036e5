"""The composition must-shows, end to end (``benchmarks/composition_digits.py`` is the script).

* :func:`conditional_study`: a trained digits (or mnist) run + a guiding classifier (trained here,
  adversarially, unless given) -> ``n_per_class`` guided samples of every class
  (``--label all``), judged by a *separately trained* classifier of another architecture and
  seed; reports the share of each class's samples the judge assigns to that class (target:
  >= 0.9 for every class), next to the unguided class histogram. phi is given, or chosen by
  :func:`select_phi` with a third (validation) classifier on other samples.
* :func:`translation_study`: unpaired translation of one digit into another (MNIST 3 -> 8):
  trains (or takes) a run whose prior is the source digit's train images and whose data is the
  target digit's, translates the held-out source images, and reports the share the judge calls
  the target digit (target: >= 0.8), the share still called the source digit, and the Frechet
  distance of the source and translated images to the held-out target digits (App. F's
  evaluation, in the judge's features).
* :func:`domain_translation_study`: the same with whole datasets as domains (digits -> MNIST at
  8 x 8): class preservation and the Frechet distance to the target domain, before and after.
* :func:`refinement_study`: DGflow as FDRL with a fixed generator as the prior; the generator
  degrades digits (:func:`degrade`) and the refined held-out set's Frechet distance must fall.

A study trains its run in ``out/run`` unless one is given. Each writes ``metrics.json`` and a
figure to ``out`` and returns the metrics.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision.transforms.functional import gaussian_blur

from fdrl.classifier import PenultimateFeatures, load_classifier
from fdrl.config import load_config
from fdrl.data import build_image_data
from fdrl.evaluate.frechet import frechet_feature_distance
from fdrl.guidance import ClassGuidance, all_labels, process_figure, refine, translate
from fdrl.image_io import default_scale, image_grid, save_png
from fdrl.model import FDRL
from fdrl.train import Trainer
from fdrl_studies.classifier_training import train_classifier


def _classifier(path: Path | None, out: Path, name: str, dataset: str, device: Any, **train_args: Any):
    if path is not None:
        return load_classifier(path, device), str(path)
    target = out / name
    if (target / "classifier.json").is_file():
        return load_classifier(target, device), str(target)
    model, _ = train_classifier(dataset, target, device=device, **train_args)
    return model, str(target)


def _study_model(run: str | Path | None, out: Path, config: Callable[[], Any], device: Any,
                 progress: bool) -> tuple[FDRL, Path]:
    """The study's model: the given run, else one trained (or resumed) in ``out/run`` from
    ``config()``."""
    if run is None:
        run = out / "run"
        Trainer(config(), run, progress=progress).fit()
    return FDRL.load(run, device=device), Path(run)


@torch.no_grad()
def _predict(judge: torch.nn.Module, x: torch.Tensor, batch: int = 512) -> torch.Tensor:
    first = next(judge.parameters(), None)  # a classifier without parameters runs on the CPU
    device = first.device if first is not None else torch.device("cpu")
    return torch.cat([judge(c.to(device)).argmax(1).cpu() for c in x.split(batch)])


def _per_class_accuracy(classifier: torch.nn.Module, x: Tensor, labels: Tensor, n_classes: int) -> dict[int, float]:
    pred = _predict(classifier, x)
    return {c: float((pred[labels == c] == c).float().mean()) for c in range(n_classes)}


def select_phi(model: FDRL, guide: torch.nn.Module, validator: torch.nn.Module, phis: Sequence[float],
               n_per_class: int, steps: int | None, seed: int, batch_size: int, threshold: float) -> dict[str, Any]:
    """The smallest phi of ``phis`` whose guided samples (seed ``seed``) the *validator* (a third
    classifier, neither guide nor judge) assigns to their class at >= ``threshold`` for every
    class; the largest phi if none does. Eq. 31's phi balances the classifier's gradients against
    the estimator's, which depends on both networks, so it is chosen on held-out judgement,
    never on the judge that reports the result."""
    if not phis:
        raise ValueError("select_phi needs at least one candidate phi")
    n_classes = ClassGuidance(guide, 0).check(model)
    labels = all_labels(n_per_class * n_classes, n_classes)
    table = []
    for phi in sorted(phis):
        guided = model.sample(len(labels), steps=steps, seed=seed, batch_size=batch_size,
                              guidance=ClassGuidance(guide, labels, phi))
        per_class = _per_class_accuracy(validator, guided, labels, n_classes)
        table.append({"phi": phi, "min_class_accuracy": min(per_class.values()),
                      "mean_class_accuracy": sum(per_class.values()) / n_classes})
    chosen = next((row["phi"] for row in table if row["min_class_accuracy"] >= threshold), table[-1]["phi"])
    return {"phi": chosen, "seed": seed, "threshold": threshold, "table": table}


def conditional_study(run: str | Path, out: str | Path, guide: str | Path | None = None,
                      judge: str | Path | None = None, n_per_class: int = 200, phi: float | str = "auto",
                      steps: int | None = None, seed: int = 1, batch_size: int = 500, dataset: str = "digits",
                      adversarial_eps: float = 2.0, classifier_epochs: int | None = None,
                      device: str | torch.device = "cpu", threshold: float = 0.9,
                      validator: str | Path | None = None, phis: Sequence[float] = (0.1, 0.3, 1.0, 3.0, 10.0),
                      validation_threshold: float = 0.95) -> dict[str, Any]:
    """Class-conditional generation judged by an independent classifier (see the module docstring).

    ``phi="auto"``: chosen by :func:`select_phi` on samples of seed ``seed - 1`` judged by a
    validator (a CNN of seed 2, trained here unless given), then the reported samples use
    ``seed``. Classifiers: guide = CNN seed 0, adversarially trained with L2 epsilon
    ``adversarial_eps`` (2.0 on [-1, 1] images = the paper's epsilon 1 on [0, 1]); judge = MLP
    seed 1, plain."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = FDRL.load(run, device=device)
    guide_model, guide_path = _classifier(guide, out, "guide", dataset, model.device, seed=0, arch="cnn",
                                          epochs=classifier_epochs, adversarial_eps=adversarial_eps)
    judge_model, judge_path = _classifier(judge, out, "judge", dataset, model.device, seed=1, arch="mlp",
                                          epochs=classifier_epochs)
    selection = None
    if phi == "auto":
        validator_model, validator_path = _classifier(validator, out, "validator", dataset, model.device, seed=2,
                                                      arch="cnn", epochs=classifier_epochs)
        selection = select_phi(model, guide_model, validator_model, phis, max(n_per_class // 2, 1), steps, seed - 1,
                               batch_size, validation_threshold)
        selection["validator"] = validator_path
        phi = selection["phi"]
    phi = float(phi)
    n_classes = ClassGuidance(guide_model, 0, phi).check(model)
    n = n_per_class * n_classes
    labels = all_labels(n, n_classes)
    guided = model.sample(n, steps=steps, seed=seed, batch_size=batch_size,
                          guidance=ClassGuidance(guide_model, labels, phi))
    unguided = model.sample(n, steps=steps, seed=seed, batch_size=batch_size)
    per_class = _per_class_accuracy(judge_model, guided, labels, n_classes)
    metrics = {
        "run": str(run), "guide": guide_path, "judge": judge_path, "phi": phi, "phi_selection": selection,
        "n_per_class": n_per_class, "steps": model.total_steps(steps),
        "seed": seed,
        "per_class_accuracy": per_class,
        "min_class_accuracy": min(per_class.values()),
        "mean_class_accuracy": sum(per_class.values()) / n_classes,
        "guide_per_class_accuracy": _per_class_accuracy(guide_model, guided, labels, n_classes),
        "unguided_histogram": torch.bincount(_predict(judge_model, unguided), minlength=n_classes).tolist(),
        "threshold": threshold,
    }
    metrics["passed"] = metrics["min_class_accuracy"] >= threshold
    per_row = min(n_per_class, 10)
    shown = torch.cat([guided[labels == c][:per_row] for c in range(n_classes)])  # one row per class (Fig. 6)
    save_png(image_grid(shown, per_row, default_scale(shown.shape[1:])), out / "conditional.png")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    torch.save({"samples": guided, "labels": labels}, out / "samples.pt")
    return metrics


def translation_config(dataset: str, source: int, target: int, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """The preset ``dataset`` (digits | mnist) with the prior = train images of digit ``source``
    and the data = train images of digit ``target`` (Sec. 6.5 with digits as domains)."""
    return load_config(dataset, [f"data.params.classes=[{target}]", "prior.name=dataset",
                                 f"prior.params.data={{name: {dataset}, params: {{split: train, classes: [{source}]}}}}",
                                 *overrides])


def translation_study(out: str | Path, run: str | Path | None = None, dataset: str = "mnist", source: int = 3,
                      target: int = 8, judge: str | Path | None = None, train_overrides: list[str] | tuple[str, ...] = (),
                      steps: int | None = None, seed: int = 0, classifier_epochs: int | None = None,
                      device: str | torch.device = "cpu", threshold: float = 0.8,
                      progress: bool = False) -> dict[str, Any]:
    """Translate held-out ``source`` digits into ``target`` digits (see the module docstring)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    judge_model, judge_path = _classifier(judge, out, "judge", dataset, device, seed=1, arch="mlp",
                                          epochs=classifier_epochs)  # first: a bad path fails before training
    model, run = _study_model(run, out, lambda: translation_config(dataset, source, target, train_overrides), device,
                              progress)
    x, target_test = _all_images(dataset, "test", [source]), _all_images(dataset, "test", [target])
    result, snaps, show = translate(model, x, steps=steps, seed=seed, batch_size=500)
    pred, pred_source = _predict(judge_model, result), _predict(judge_model, x)
    features = PenultimateFeatures(judge_model)
    metrics = {
        "run": str(run), "judge": judge_path, "dataset": dataset, "source": source, "target": target,
        "n": len(x), "steps": show[-1], "seed": seed,
        "target_rate": float((pred == target).float().mean()),
        "source_rate_after": float((pred == source).float().mean()),
        "target_rate_before": float((pred_source == target).float().mean()),
        "source_rate_before": float((pred_source == source).float().mean()),
        # App. F's evaluation offline: test-A (translated) against test-B in the judge's features
        "frechet_to_target_before": frechet_feature_distance(x, target_test, features),
        "frechet_to_target_after": frechet_feature_distance(result, target_test, features),
        "frechet_floor_target_train_vs_test": frechet_feature_distance(_all_images(dataset, "train", [target]),
                                                                       target_test, features),
        "threshold": threshold,
    }
    metrics["passed"] = metrics["target_rate"] >= threshold
    process_figure(snaps, out / "translation.png", rows=8)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def domain_translation_config(source: str, target: str, preset: str = "digits",
                              overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """The preset with the prior = the train split of dataset ``source`` and the data = the
    train split of dataset ``target`` (Sec. 6.5 with whole datasets as domains)."""
    return load_config(preset, [f"data.name={target}", "data.params={split: train}", "prior.name=dataset",
                                f"prior.params.data={{name: {source}, params: {{split: train}}}}", *overrides])


def domain_translation_study(out: str | Path, run: str | Path | None = None, source: str = "digits",
                             target: str = "mnist8", judge: str | Path | None = None,
                             train_overrides: list[str] | tuple[str, ...] = (), steps: int | None = None,
                             seed: int = 0, classifier_epochs: int | None = None,
                             device: str | torch.device = "cpu", progress: bool = False) -> dict[str, Any]:
    """Translate the held-out images of dataset ``source`` into dataset ``target``'s domain
    (digits -> MNIST at 8 x 8) and report, without a bar: how often a classifier trained on the
    target domain gives each image its own digit before and after (class preservation), and the
    Frechet distance to the target's held-out images in that classifier's features before and
    after."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    judge_model, judge_path = _classifier(judge, out, "judge", target, device, seed=1, arch="cnn",
                                          epochs=classifier_epochs)  # first: a bad path fails before training
    model, run = _study_model(run, out, lambda: domain_translation_config(source, target, overrides=train_overrides),
                              device, progress)
    test = build_image_data(source, split="test")
    x, labels = test.images(range(len(test))), test.labels
    target_images = _all_images(target, "test")
    result, snaps, show = translate(model, x, steps=steps, seed=seed, batch_size=500)
    features = PenultimateFeatures(judge_model)
    metrics = {
        "run": str(run), "judge": judge_path, "source": source, "target": target, "n": len(x), "steps": show[-1],
        "seed": seed,
        "class_preserved_before": float((_predict(judge_model, x) == labels).float().mean()),
        "class_preserved_after": float((_predict(judge_model, result) == labels).float().mean()),
        "frechet_to_target_before": frechet_feature_distance(x, target_images, features),
        "frechet_to_target_after": frechet_feature_distance(result, target_images, features),
        "frechet_floor_target_train_vs_test": frechet_feature_distance(_all_images(target, "train"), target_images,
                                                                       features),
    }
    process_figure(snaps, out / "translation.png", rows=8)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def _all_images(dataset: str, split: str, classes: Sequence[int] | None = None) -> Tensor:
    """Every clean image of a split (of ``classes`` only, when given)."""
    data = build_image_data(dataset, split=split, classes=classes)
    return data.images(range(len(data)))


def degrade(images: Tensor, blur_sigma: float = 1.0, noise: float = 0.2, seed: int = 0) -> Tensor:
    """A deliberately bad "generator": Gaussian blur (3 x 3 kernel, ``blur_sigma``) plus
    Gaussian pixel noise of std ``noise``, clamped to [-1, 1]."""
    blurred = gaussian_blur(images, kernel_size=[3, 3], sigma=[blur_sigma, blur_sigma])
    jitter = noise * torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    return (blurred + jitter).clamp(-1.0, 1.0)


def refinement_study(out: str | Path, run: str | Path | None = None, dataset: str = "digits",
                     classifier: str | Path | None = None, blur_sigma: float = 1.0, noise: float = 0.2,
                     train_overrides: list[str] | tuple[str, ...] = (), steps: int | None = None, seed: int = 0,
                     classifier_epochs: int | None = None, device: str | torch.device = "cpu",
                     progress: bool = False) -> dict[str, Any]:
    """DGflow-style refinement (Section 5): the "generator" degrades images (:func:`degrade`);
    FDRL is trained with its samples of the training split as the prior (``prior.name=dataset``)
    and the clean training split as the data, then refines the degraded *held-out* images.
    Reports the digit-classifier Frechet distance to the clean held-out images before and after
    (and the floor: clean training vs held-out images)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    train_clean, test_clean = _all_images(dataset, "train"), _all_images(dataset, "test")
    degraded_train = degrade(train_clean, blur_sigma, noise, seed=seed)
    degraded_test = degrade(test_clean, blur_sigma, noise, seed=seed + 1)

    def config() -> Any:
        prior_file = out / "degraded_train.npy"
        np.save(prior_file, degraded_train.numpy())
        return load_config(dataset, ["prior.name=dataset", f"prior.params.path={prior_file}", *train_overrides])

    clf, clf_path = _classifier(classifier, out, "classifier", dataset, device, seed=0, arch="cnn",
                                epochs=classifier_epochs)  # first: a bad path fails before training
    model, run = _study_model(run, out, config, device, progress)
    refined = refine(model, degraded_test, steps=steps, seed=seed, batch_size=500)
    features = PenultimateFeatures(clf)
    metrics = {
        "run": str(run), "classifier": clf_path, "dataset": dataset, "blur_sigma": blur_sigma, "noise": noise,
        "n": len(test_clean), "steps": model.total_steps(steps), "seed": seed,
        "frechet_degraded": frechet_feature_distance(degraded_test, test_clean, features),
        "frechet_refined": frechet_feature_distance(refined, test_clean, features),
        "frechet_floor_train_vs_test": frechet_feature_distance(train_clean, test_clean, features),
    }
    metrics["passed"] = metrics["frechet_refined"] < metrics["frechet_degraded"]
    rows = torch.stack([test_clean[:10], degraded_test[:10], refined[:10]]).flatten(0, 1)
    save_png(image_grid(rows, 10, default_scale(rows.shape[1:])), out / "refinement.png")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
