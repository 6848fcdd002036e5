"""Image folders on a CPU: candidates scored on held-out images beside the Gaussian of Eq. 8, with
the CPU time of each run (one thread). Prints one JSON line per run, then all of them.

    python benchmarks/images_cpu.py --folders /tmp/folders images images_resnet "images:data.params.pca=0.95"

Builds two folders of ``--images`` (400) images under ``--folders`` unless they are there (default: a
temporary folder): ``digits``
(scikit-learn's 8x8 digits upscaled to 32x32, grayscale PNG) and ``photos`` (32x32 patches cut
at random from scikit-learn's two sample photos, china and flower, colour PNG). A candidate is
a preset with optional ``KEY=VALUE`` overrides after a colon, separated by commas; each is
trained with ``fdrl train``'s Trainer on each folder (``data.params.root`` set) and scored by
its held-out report (``RUN/metrics.json``): energy distance and C2ST accuracy of the samples
and of the Gaussian baseline, against the 20% of images held out. With ``--sets S`` the samples
and the Gaussian are also scored as S fresh sets of the held-out size (the report's scoring with
seeds 0..S-1) and averaged (``*_mean``): one set of 80 images moves C2ST by about 0.05.

    python benchmarks/images_cpu.py --folders /tmp/folders --only digits --classifier CLF images

With ``--classifier CLF`` (``fdrl train-classifier digits --out CLF``) each run on the digits
folder also gets the classifier Frechet distance of 1000 samples and of 1000 draws of the Eq. 8
Gaussian to the held-out images, and of the training images (the floor), all averaged down to
the classifier's 8 x 8 grayscale input.

    python benchmarks/images_cpu.py --folders /tmp/folders --ceiling 15,64,128

The ceiling of a principal space of k directions, with no estimator: the training images' own
k coefficients decoded with the Gaussian's other directions (what a perfect flow would give),
the same with the other directions left at the mean, and Gaussian coefficients, each scored
against the held-out images as ``--sets`` (default 5 here) sets of their size.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

FOLDERS = ("digits", "photos")


def write_folders(root: Path, n: int = 400) -> None:
    """The ``digits`` and ``photos`` folders of the module docstring, unless they exist."""
    from PIL import Image
    from sklearn.datasets import load_digits, load_sample_images

    rng = np.random.default_rng(0)
    if not (root / "digits").is_dir():
        (root / "digits").mkdir(parents=True)
        images = load_digits().images
        for i in rng.permutation(len(images))[:n]:
            pixels = Image.fromarray((images[i] / 16 * 255).astype(np.uint8))
            pixels.resize((32, 32), Image.BILINEAR).save(root / "digits" / f"d{i:04d}.png")
    if not (root / "photos").is_dir():
        (root / "photos").mkdir(parents=True)
        photos = load_sample_images().images
        for j in range(n):
            photo = photos[j % len(photos)]
            y, x = rng.integers(0, photo.shape[0] - 32), rng.integers(0, photo.shape[1] - 32)
            Image.fromarray(photo[y:y + 32, x:x + 32]).save(root / "photos" / f"p{j:04d}.png")


def averaged_scores(trainer, sets: int) -> dict:
    """The samples and the Gaussian scored as ``sets`` fresh sets against the held-out images
    (:func:`fdrl.evaluate.heldout.heldout_report`, seed s for set s), averaged."""
    import torch

    from fdrl.evaluate.heldout import heldout_report

    model, data = trainer.model(), trainer.data
    images = getattr(data, "image_data", data)
    heldout = torch.cat(list(data.held_out().iter_batches(512)))
    train = torch.cat(list(images.iter_batches(512)))
    m = heldout.shape[0]
    keys = ("energy", "c2st", "gaussian_energy", "gaussian_c2st", "near_copies")
    totals = dict.fromkeys(keys, 0.0)
    for s in range(sets):
        samples = model.sample(m, seed=1000 + s)
        prior = model.decode(model.prior.sample(m, torch.Generator().manual_seed(s)), torch.Generator().manual_seed(s))
        report = heldout_report(samples, train, heldout, prior, seed=s, value_range=images.value_range)
        gaussian = report["baselines"]["gaussian"]
        for key, value in zip(keys, (report["energy_distance"], report["c2st_accuracy"], gaussian["energy_distance"],
                                     gaussian["c2st_accuracy"],
                                     report["memorisation"]["share_closer_than_heldout_1pct"])):
            totals[key] += value / sets
    return {f"{key}_mean": round(value, 4) for key, value in totals.items()}


def ceiling(folder: Path, k: int, sets: int) -> dict:
    """What a principal space of ``k`` directions allows on ``folder`` (module docstring)."""
    import torch

    from fdrl.config import load_config, load_raw
    from fdrl.data.principal import build_run_data
    from fdrl.evaluate.metrics import c2st_accuracy, energy_distance

    raw = load_raw("images")
    raw["data"]["params"].update(root=str(folder), pca=k)
    data = build_run_data(load_config(raw, ["device=cpu"]).data.spec)
    space, coefficients = data.space, data.samples
    heldout = torch.cat(list(data.held_out().iter_batches(512)))
    m = heldout.shape[0]
    decoders = {
        "training_coefficients": lambda g: space.decode(coefficients[torch.randperm(len(coefficients), generator=g)[:m]], g),
        "training_coefficients_rest_at_mean": lambda g: space.decode(
            coefficients[torch.randperm(len(coefficients), generator=g)[:m]]).clamp(*space.gaussian.clamp),
        "gaussian_coefficients": lambda g: space.decode(torch.randn(m, space.k, generator=g), g),
    }
    out = {"folder": folder.name, "space": space.describe()}
    for name, draw in decoders.items():
        c2st = energy = 0.0
        for s in range(sets):
            x = draw(torch.Generator().manual_seed(s))
            c2st += c2st_accuracy(x, heldout, seed=s) / sets
            energy += float(energy_distance(x.flatten(1), heldout.flatten(1))) / sets
        out[name] = {"c2st": round(c2st, 3), "energy": round(energy, 4)}
    return out


def classifier_scores(trainer, classifier: Path) -> dict:
    """The digits classifier's Frechet distances of samples, the Gaussian and the floor (module
    docstring), images pooled to its input size."""
    import torch
    import torch.nn.functional as F

    from fdrl.classifier import load_classifier
    from fdrl.evaluate.classifier_report import classifier_frechet_distance
    from fdrl.priors import GaussianPrior

    judge = load_classifier(classifier)
    channels, side = judge.in_shape[0], judge.in_shape[-1]
    images, seed = trainer.data.image_data, trainer.config.train.seed
    train = torch.cat(list(images.iter_batches(512)))
    heldout = torch.cat(list(trainer.data.held_out().iter_batches(512)))

    def pooled(x):
        x = x.mean(1, keepdim=True) if channels == 1 else x
        return F.adaptive_avg_pool2d(x, side)

    gaussian = GaussianPrior.fit([train.flatten(1)], shape=tuple(train.shape[1:]), clamp=images.value_range)
    sets = {"classifier_fd": trainer.model().sample(1000, seed=seed),
            "gaussian_classifier_fd": gaussian.sample(1000, torch.Generator().manual_seed(seed)),
            "floor_classifier_fd": train}
    return {name: round(classifier_frechet_distance(pooled(x), pooled(heldout), judge), 3) for name, x in sets.items()}


def run(folder: Path, candidate: str, out: Path, sets: int = 0, classifier: Path | None = None) -> dict:
    """Train ``candidate`` (``PRESET[:KEY=VALUE,...]``) on ``folder``; its scores and CPU seconds
    (and ``sets`` averaged scores: :func:`averaged_scores`)."""
    import torch

    from fdrl.config import load_config, load_raw
    from fdrl.train import Trainer, TrainingError

    preset, _, overrides = candidate.partition(":")
    raw = load_raw(preset)
    raw["data"]["params"]["root"] = str(folder)
    config = load_config(raw, [o for o in overrides.split(",") if o] + ["device=cpu"])
    torch.set_num_threads(1)
    start, wall = time.process_time(), time.perf_counter()
    trainer = Trainer(config, out, progress=False)
    try:
        trainer.fit()
    except TrainingError as err:  # a run the guard stopped is a result too, not the end of the benchmark
        return {"folder": folder.name, "candidate": candidate, "error": str(err)}
    train_cpu = time.process_time() - start
    metrics = trainer.evaluate()
    space = getattr(trainer.data, "space", None)
    gaussian = metrics["baselines"]["gaussian"]
    return {
        "folder": folder.name, "candidate": candidate, "space": space.describe() if space else "pixels",
        "train_cpu_s": round(train_cpu, 1), "total_wall_s": round(time.perf_counter() - wall, 1),
        "energy": round(metrics["energy_distance"], 4), "energy_se": round(metrics["energy_distance_se"], 4),
        "c2st": round(metrics["c2st_accuracy"], 3),
        "gaussian_energy": round(gaussian["energy_distance"], 4), "gaussian_c2st": round(gaussian["c2st_accuracy"], 3),
        "floor_energy": round(metrics["energy_distance_floor"], 4), "floor_c2st": round(metrics["c2st_accuracy_floor"], 3),
        **(averaged_scores(trainer, sets) if sets else {}),
        **(classifier_scores(trainer, classifier) if classifier and folder.name == "digits" else {}),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser()
    ap.add_argument("candidates", nargs="*", help="PRESET[:KEY=VALUE,...]")
    ap.add_argument("--folders", type=Path, help="where the digits and photos folders are (or go)")
    ap.add_argument("--only", help="NAME[,NAME...]: these folders under --folders only (your own folders too)")
    ap.add_argument("--images", type=int, default=400, help="images per folder written (default 400)")
    ap.add_argument("--sets", type=int, default=0, help="also score S fresh sample sets and average (default 0)")
    ap.add_argument("--classifier", type=Path, help="a digits classifier: Frechet distances on the digits folder")
    ap.add_argument("--ceiling", help="K1,K2,...: the ceiling of principal spaces of these sizes instead")
    args = ap.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folders = args.folders or Path(tmp) / "folders"
        names = args.only.split(",") if args.only else FOLDERS
        if set(names) & set(FOLDERS):
            write_folders(folders, args.images)
        for name in names:
            for k in [int(k) for k in args.ceiling.split(",")] if args.ceiling else []:
                results.append(ceiling(folders / name, k, args.sets or 5))
                print(json.dumps(results[-1]), flush=True)
            for i, candidate in enumerate(args.candidates):
                results.append(run(folders / name, candidate, Path(tmp) / f"{name}-{i}", args.sets, args.classifier))
                print(json.dumps(results[-1]), flush=True)
    print(json.dumps({"runs": results}))
    return results


if __name__ == "__main__":
    main()
