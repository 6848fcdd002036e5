"""Composition subcommands (:mod:`fdrl.guidance`); ``register`` adds them to ``add_subparsers``.

* ``fdrl sample-conditional RUN --classifier DIR|FILE --label N|all [--phi 0.1] [--n N]
  [--steps S] [--seed N] [--batch B] [--out FILE] [--arch NAME --num-classes N]``:
  class-conditional samples (Eq. 12, 29-31) of an unconditional run composed with a classifier.
* ``fdrl translate RUN --input DIR|FILE --out DIR [--steps S] [--columns C] [--rows R]``:
  unpaired image-to-image translation (Sec. 6.5) with a run trained on a source-domain prior;
  writes ``DIR/NAME.png`` per input and ``DIR/translation.png`` (Fig. 7: source, intermediate
  steps, result).
* ``fdrl refine RUN --input DIR|FILE --out DIR [--steps S]``: DGflow-style refinement of another
  generator's samples with a run whose prior is that generator (writes PNGs and
  ``DIR/refined.safetensors``).

For ``fdrl sample``, :func:`add_guidance_arguments` adds ``--classifier``, ``--label``, ``--phi``
(and ``--arch``, ``--num-classes``) and :func:`guidance_from_args` builds the guidance (None
when ``--classifier`` is absent). Handlers raise ValueError / FileNotFoundError (one line).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from fdrl.classifier import load_classifier, load_torchvision_classifier
from fdrl.cli.common import out_dir, out_file, seed
from fdrl.guidance import ClassGuidance, all_labels, process_figure, refine, translate
from fdrl.image_io import default_scale, image_grid, save_png, save_pngs
from fdrl.model import FDRL
from fdrl.sample_files import load_input_images


def _label(text: str) -> int | str:
    if text == "all":
        return "all"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--label must be a class number or 'all', got '{text}'") from None


def add_guidance_arguments(p: argparse.ArgumentParser, required: bool = False) -> None:
    """The class-guidance flags, shared by ``sample`` and ``sample-conditional``."""
    p.add_argument("--classifier", type=Path, required=required, metavar="DIR|FILE",
                   help="a `fdrl train-classifier` folder, or a weights file with --arch")
    p.add_argument("--label", type=_label, default=None, metavar="N|all",
                   help="class of every sample, or 'all' (samples cycle through the classes)")
    p.add_argument("--phi", type=float, default=0.1, help="weight of log p(y|x) (Eq. 31; default 0.1)")
    p.add_argument("--arch", metavar="NAME",
                   help="for a weights file: robust_cifar10_resnet50, or a torchvision name (with --num-classes)")
    p.add_argument("--num-classes", type=int, metavar="N", help="classes of a torchvision weights file")


def load_any_classifier(spec: Path, device: Any, arch: str | None = None, num_classes: int | None = None) -> Any:
    """A classifier named on the command line: a directory from ``fdrl train-classifier``, or a
    weights file with ``arch`` (``robust_cifar10_resnet50``, or a torchvision name plus
    ``num_classes``)."""
    if spec.is_dir():
        return load_classifier(spec, device, num_classes)
    if arch is None:
        raise ValueError(f"'{spec}' is not a classifier directory; for a weights file pass --arch "
                         "(robust_cifar10_resnet50 or a torchvision name) and --num-classes")
    if arch == "robust_cifar10_resnet50":
        from fdrl_studies.robust_cifar import load_robust_cifar10_resnet50

        return load_robust_cifar10_resnet50(spec, device)
    if num_classes is None:
        raise ValueError(f"--num-classes is needed for a {arch} weights file")
    return load_torchvision_classifier(spec, arch, num_classes, device)


def guidance_from_args(args: argparse.Namespace, model: Any, n: int) -> Any:
    """A :class:`~fdrl.guidance.ClassGuidance` from the flags, or None without ``--classifier``."""
    if getattr(args, "classifier", None) is None:
        if getattr(args, "label", None) is not None:
            raise ValueError("--label needs --classifier")
        return None
    if args.label is None:
        raise ValueError("--classifier needs --label N or --label all")
    if not args.phi >= 0:
        raise ValueError(f"phi must be a finite number >= 0, got {args.phi}")
    classifier = load_any_classifier(args.classifier, model.device, args.arch, args.num_classes)
    if args.label == "all":
        probe = ClassGuidance(classifier, 0, args.phi)
        labels = all_labels(n, probe.check(model))
    else:
        labels = args.label
    return ClassGuidance(classifier, labels, args.phi)


def _save_samples(samples: torch.Tensor, out: Path, labels: torch.Tensor | None = None) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".png":
        if samples.ndim != 4:
            raise ValueError("a .png output needs image samples; use .pt, .safetensors or .npy")
        classes = len(set(labels.tolist())) if labels is not None else 1
        nrow = classes if classes > 1 else max(1, round(len(samples) ** 0.5))  # --label all: a column per class
        save_png(image_grid(samples, nrow, default_scale(samples.shape[1:])), out)
    elif out.suffix == ".npy":
        import numpy as np

        np.save(out, samples.numpy())
    elif out.suffix in (".pt", ".safetensors"):
        from safetensors.torch import save_file

        tensors = {"samples": samples.contiguous()}
        if labels is not None:
            tensors["labels"] = labels.long().contiguous()
        save_file(tensors, str(out))
    else:
        raise ValueError(f"--out must end in .png, .npy, .pt or .safetensors, got '{out.name}'")


def cmd_sample_conditional(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise ValueError(f"--n must be a positive integer, got {args.n}")
    model = FDRL.load(args.run, device=args.device or "auto")
    guidance = guidance_from_args(args, model, args.n)
    samples = model.sample(args.n, steps=args.steps, seed=args.seed, batch_size=args.batch, guidance=guidance)
    out = args.out or args.run / "samples-conditional.safetensors"
    labels = guidance.labels_for(args.n)
    _save_samples(samples, out, labels)
    print(f"wrote {args.n} class-conditional samples (labels {args.label}, phi {args.phi}) to {out}")
    return 0


def _load_for_transport(args: argparse.Namespace) -> tuple[Any, torch.Tensor, list[str]]:
    if args.steps is not None and args.steps < 0:
        raise ValueError(f"--steps must be >= 0, got {args.steps}")
    model = FDRL.load(args.run, device=args.device or "auto")
    model.require_pixels(f"fdrl {args.command}")  # before the shape check, which would misname the problem
    shape = tuple(model.prior.shape)
    if len(shape) != 3:
        raise ValueError(f"'{args.run}' is not a run on images (samples of shape {shape})")
    x, names = load_input_images(args.input, shape)
    return model, x, names


def cmd_translate(args: argparse.Namespace) -> int:
    model, x, names = _load_for_transport(args)
    result, snaps, show = translate(model, x, args.steps, args.seed, args.batch, args.columns)
    save_pngs(result, names, args.out)
    figure = process_figure(snaps, args.out / "translation.png", rows=args.rows)
    print(f"translated {len(x)} image(s) in {show[-1]} flow steps to {args.out}; figure {figure} "
          f"(columns at steps {','.join(map(str, show))})")
    return 0


def cmd_refine(args: argparse.Namespace) -> int:
    from safetensors.torch import save_file

    model, x, names = _load_for_transport(args)
    result = refine(model, x, steps=args.steps, seed=args.seed, batch_size=args.batch)
    save_pngs(result, names, args.out)
    save_file({"samples": result.contiguous()}, str(args.out / "refined.safetensors"))
    steps = model.total_steps(args.steps)
    print(f"refined {len(x)} image(s) in {steps} flow steps; PNGs and refined.safetensors in {args.out}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``sample-conditional``, ``translate`` and ``refine`` to ``subparsers``."""
    p = subparsers.add_parser("sample-conditional",
                              help="class-conditional samples: a run composed with a classifier (Eq. 12)")
    p.add_argument("run", type=Path, metavar="RUN", help="run directory or saved model directory")
    add_guidance_arguments(p, required=True)
    p.add_argument("--n", type=int, default=100, help="samples (default 100)")
    p.add_argument("--steps", type=int, metavar="S", help="total flow steps (default K + kappa)")
    p.add_argument("--batch", type=int, metavar="B", help="samples per batch")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--out", type=out_file, metavar="FILE",
                   help=".png, .npy, .pt or .safetensors (samples + labels; default RUN/samples-conditional.safetensors)")
    p.add_argument("--device", metavar="DEVICE", help="auto (default), cpu, cuda, cuda:N or mps")
    p.set_defaults(func=cmd_sample_conditional)

    for name, helptext, func in (
        ("translate", "unpaired image-to-image translation with a source-domain-prior run (Sec. 6.5, Fig. 7)",
         cmd_translate),
        ("refine", "refine another generator's samples with a run trained on them as prior (DGflow)", cmd_refine),
    ):
        p = subparsers.add_parser(name, help=helptext)
        p.add_argument("run", type=Path, metavar="RUN", help="run directory or saved model directory")
        p.add_argument("--input", type=Path, required=True, metavar="DIR|FILE",
                       help="a folder of images, one image, or a tensor file (.pt, .safetensors, .npy)")
        p.add_argument("--out", type=out_dir, required=True, metavar="DIR")
        p.add_argument("--steps", type=int, metavar="S", help="flow steps (default K + kappa)")
        p.add_argument("--batch", type=int, metavar="B", help="images per batch")
        p.add_argument("--seed", type=seed, default=0)
        p.add_argument("--device", metavar="DEVICE", help="auto (default), cpu, cuda, cuda:N or mps")
        if name == "translate":
            p.add_argument("--columns", type=int, default=6, help="figure columns: source, steps, result (default 6)")
            p.add_argument("--rows", type=int, default=8, help="images shown in the figure (default 8)")
        p.set_defaults(func=func)
