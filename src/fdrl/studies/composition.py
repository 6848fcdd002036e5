"""The composition must-shows, end to end (``benchmarks/composition_digits.py`` is the script).

* :func:`conditional_study`: a trained digits (or mnist) run + a guiding classifier (trained here,
  optionally adversarially, unless given) -> ``n_per_class`` guided samples of every class
  (``--label all``), judged by a *separately trained* classifier of another architecture and
  seed; reports the share of each class's samples the judge assigns to that class (target:
  >= 0.9 for every class), next to the unguided class histogram.
* :func:`translation_study`: unpaired translation of one digit into another (MNIST 3 -> 8):
  trains (or takes) a run whose prior is the source digit's train images and whose data is the
  target digit's, translates the held-out source images, and reports the share the judge calls
  the target digit (target: >= 0.8) and the share still called the source digit.

Both write ``metrics.json`` and figures to ``out`` and return the metrics.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from fdrl.classifier import load_classifier, train_classifier
from fdrl.guidance import ClassGuidance, all_labels, process_figure, translate
from fdrl.model import FDRL


def _classifier(path: Path | None, out: Path, name: str, dataset: str, device: Any, **train_args: Any):
    if path is not None:
        return load_classifier(path, device), str(path)
    target = out / name
    if (target / "classifier.json").is_file():
        return load_classifier(target, device), str(target)
    model, _ = train_classifier(dataset, target, device=device, **train_args)
    return model, str(target)


@torch.no_grad()
def _predict(judge: torch.nn.Module, x: torch.Tensor, batch: int = 512) -> torch.Tensor:
    device = next(judge.parameters()).device
    return torch.cat([judge(c.to(device)).argmax(1).cpu() for c in x.split(batch)])


def conditional_study(run: str | Path, out: str | Path, guide: str | Path | None = None,
                      judge: str | Path | None = None, n_per_class: int = 100, phi: float = 0.1,
                      steps: int | None = None, seed: int = 0, batch_size: int = 500, dataset: str = "digits",
                      adversarial_eps: float = 0.5, classifier_epochs: int | None = None,
                      device: str | torch.device = "cpu", threshold: float = 0.9) -> dict[str, Any]:
    """Class-conditional generation judged by an independent classifier (see the module docstring)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = FDRL.load(run, device=device)
    guide_model, guide_path = _classifier(guide, out, "guide", dataset, model.device, seed=0, arch="cnn",
                                          epochs=classifier_epochs, adversarial_eps=adversarial_eps)
    judge_model, judge_path = _classifier(judge, out, "judge", dataset, model.device, seed=1, arch="mlp",
                                          epochs=classifier_epochs)
    n_classes = ClassGuidance(guide_model, 0, phi).check(model)
    n = n_per_class * n_classes
    labels = all_labels(n, n_classes)
    guided = model.sample(n, steps=steps, seed=seed, batch_size=batch_size,
                          guidance=ClassGuidance(guide_model, labels, phi))
    unguided = model.sample(n, steps=steps, seed=seed, batch_size=batch_size)
    pred, pred_unguided = _predict(judge_model, guided), _predict(judge_model, unguided)
    per_class = {int(c): float((pred[labels == c] == c).float().mean()) for c in range(n_classes)}
    metrics = {
        "run": str(run), "guide": guide_path, "judge": judge_path, "phi": phi, "n_per_class": n_per_class,
        "steps": steps if steps is not None else model.steps + model.refine_steps, "seed": seed,
        "per_class_accuracy": per_class,
        "min_class_accuracy": min(per_class.values()),
        "mean_class_accuracy": sum(per_class.values()) / n_classes,
        "guide_per_class_accuracy": {int(c): float((_predict(guide_model, guided)[labels == c] == c).float().mean())
                                     for c in range(n_classes)},
        "unguided_histogram": torch.bincount(pred_unguided, minlength=n_classes).tolist(),
        "threshold": threshold,
    }
    metrics["passed"] = metrics["min_class_accuracy"] >= threshold
    from fdrl.studies.image_figures import default_scale, image_grid, save_png

    shown = guided[: n_classes * min(n_per_class, 10)]
    save_png(image_grid(shown, n_classes, default_scale(shown.shape[1:])), out / "conditional.png")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def translation_config(dataset: str, source: int, target: int, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """The preset ``dataset`` (digits | mnist) with the prior = train images of digit ``source``
    and the data = train images of digit ``target`` (Sec. 6.5 with digits as domains)."""
    from fdrl.config import load_config

    return load_config(dataset, [f"data.params.classes=[{target}]", "prior.name=dataset",
                                 f"prior.params.data={{name: {dataset}, params: {{split: train, classes: [{source}]}}}}",
                                 *overrides])


def translation_study(out: str | Path, run: str | Path | None = None, dataset: str = "mnist", source: int = 3,
                      target: int = 8, judge: str | Path | None = None, train_overrides: list[str] | tuple[str, ...] = (),
                      steps: int | None = None, seed: int = 0, classifier_epochs: int | None = None,
                      device: str | torch.device = "cpu", threshold: float = 0.8,
                      progress: bool = False) -> dict[str, Any]:
    """Translate held-out ``source`` digits into ``target`` digits (see the module docstring)."""
    from fdrl.data import build_image_data

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if run is None:
        from fdrl.train import Trainer

        run = out / "run"
        Trainer(translation_config(dataset, source, target, train_overrides), run, progress=progress).fit()
    model = FDRL.load(run, device=device)
    judge_model, judge_path = _classifier(judge, out, "judge", dataset, model.device, seed=1, arch="mlp",
                                          epochs=classifier_epochs)
    test = build_image_data(dataset, split="test", classes=[source])
    x = test.images(range(len(test)))
    result, snaps, show = translate(model, x, steps=steps, seed=seed, batch_size=500)
    pred, pred_source = _predict(judge_model, result), _predict(judge_model, x)
    metrics = {
        "run": str(run), "judge": judge_path, "dataset": dataset, "source": source, "target": target,
        "n": len(x), "steps": show[-1], "seed": seed,
        "target_rate": float((pred == target).float().mean()),
        "source_rate_after": float((pred == source).float().mean()),
        "target_rate_before": float((pred_source == target).float().mean()),
        "source_rate_before": float((pred_source == source).float().mean()),
        "threshold": threshold,
    }
    metrics["passed"] = metrics["target_rate"] >= threshold
    process_figure(snaps, out / "translation.png", rows=8)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
