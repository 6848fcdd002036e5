"""The names of data sets, priors and estimators, and the options each takes, without PyTorch.

Configs are checked against these tables when they are loaded, so a typo in ``data.params``,
``prior.params`` or ``model.params`` is an error naming the valid options before anything is
built (and ``fdrl config`` can check without importing torch). ``tests/test_components.py``
checks that the tables agree with the builders' signatures.
"""

from __future__ import annotations

#: every image dataset may be modelled in a principal-component space (fdrl.data.principal)
_SPACE = ("pca",)
_FILE_OPTIONS = ("channels", "flip", "dequantize", "workers", "check_files", *_SPACE)
_GEOMETRY = ("image_size", "load_size", "pre_crop", "keep_aspect")

#: data.name -> its data.params
DATA_OPTIONS: dict[str, tuple[str, ...]] = {
    "swissroll": ("noise", "scale"),
    "8gaussians": ("radius", "std"),
    "25gaussians": ("spacing", "std"),
    "gaussian": ("mean", "variance"),
    "array": ("path", "test_fraction", "test_path", "standardize", "split_seed", "columns", "missing", "returns"),
    "cifar10": ("root", "split", "flip", "dequantize", *_SPACE),
    "celeba": ("root", "image_size", "pre_crop", *_FILE_OPTIONS),
    "lsun_church": ("root", "split", "image_size", "keep_aspect", *_FILE_OPTIONS),
    "folder": ("root", *_GEOMETRY, "split", "test_fraction", *_FILE_OPTIONS),
    "two_domain": ("root", "domain", "split", *_GEOMETRY, *_FILE_OPTIONS),
    "cat2dog": ("root", "domain", "split", "image_size", "load_size", *_FILE_OPTIONS),
    "digits": ("split", "test_fraction", "flip", "dequantize", "classes", *_SPACE),
    "mnist": ("split", "test_fraction", "flip", "dequantize", "classes", "image_size", *_SPACE),
    "mnist8": ("split", "test_fraction", "flip", "dequantize", "classes", *_SPACE),
}

#: prior.name -> its prior.params (fdrl.priors.build_prior)
PRIOR_OPTIONS: dict[str, tuple[str, ...]] = {
    "standard_normal": (),
    "gaussian": ("mean", "variance"),
    "data_gaussian": ("rank", "max_full_dim", "clamp", "batch_size", "seed", "oversample", "passes",
                      "fit_samples", "cache", "cache_dir"),
    "uniform": ("low", "high"),
    "dataset": ("path", "data"),
}

_RESNET = ("spectral_norm", "self_attention", "width", "negative_slope")
#: model.name -> its model.params (fdrl.nets.build_estimator)
MODEL_OPTIONS: dict[str, tuple[str, ...]] = {
    "mlp": ("width", "depth", "spectral_norm", "negative_slope"),
    "resnet": _RESNET,
    "resnet32": _RESNET,
    "resnet64": _RESNET,
    "resnet64_shallow": _RESNET,
    "resnet128": _RESNET,
    "resnet8": _RESNET,
    "resnet28": _RESNET,
}

SECTIONS = {"data": DATA_OPTIONS, "prior": PRIOR_OPTIONS, "model": MODEL_OPTIONS}
_KIND = {"data": "dataset", "prior": "prior", "model": "estimator"}


def check_component(section: str, name: str, params: dict) -> str | None:
    """What is wrong with ``section``'s ``name`` and ``params`` (one line), or None."""
    table = SECTIONS[section]
    if name not in table:
        return f"unknown {_KIND[section]} '{name}' ({section}.name); choose one of: {', '.join(table)}"
    unknown = sorted(str(k) for k in params if k not in table[name])
    if unknown:
        valid = ", ".join(f"{section}.params.{k}" for k in table[name]) or "none"
        return f"unknown config key '{section}.params.{unknown[0]}' for {section} '{name}'; valid keys here: {valid}"
    return None
