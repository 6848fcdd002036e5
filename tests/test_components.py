"""The torch-free specs of fdrl.components agree with the builders they describe, and a typo or
a value of the wrong type in any params section is a one-line config error naming the key."""

import dataclasses
import inspect

import pytest

from fdrl.components import DATA_SPECS, MODEL_SPECS, PRIOR_SPECS, ArraySpec, MlpSpec, ResNetSpec, component_spec
from fdrl.config import ConfigError, load_config
from fdrl.data import ArrayData
from fdrl.data.toy import TOY_SAMPLERS
from fdrl.nets.mlp import MLP
from fdrl.nets.registry import ESTIMATORS
from fdrl.nets.resnet import ResNet
from fdrl.priors import PRIOR_NAMES


def _defaults(fn, skip=()):
    """Keyword -> default of ``fn``'s named parameters (``inspect.Parameter.empty`` if none)."""
    return {p.name: p.default for p in inspect.signature(fn).parameters.values()
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name not in skip}


def _spec_defaults(cls):
    return {f.name: f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
            for f in dataclasses.fields(cls) if f.name != "name"}


def test_toy_specs_are_their_samplers_keywords():
    for name, sampler in TOY_SAMPLERS.items():
        assert set(DATA_SPECS[name].options()) == set(_defaults(sampler, ("n", "rng"))), name


@pytest.mark.parametrize(("spec", "builder", "skip"), [
    (ArraySpec, ArrayData.from_file, ()), (MlpSpec, MLP, ("self", "in_shape")),
    (ResNetSpec, ResNet, ("self", "in_shape", "arch"))])
def test_specs_of_public_classes_have_their_defaults(spec, builder, skip):
    """MLP, ResNet and ArrayData.from_file keep keyword defaults for users who build them
    directly: the spec a config builds gives the same (a required option is None in the spec)."""
    expected = {k: (None if v is inspect.Parameter.empty else v) for k, v in _defaults(builder, skip).items()}
    assert _spec_defaults(spec) == expected


def test_every_name_has_a_spec():
    assert set(MODEL_SPECS) == set(ESTIMATORS)
    assert set(PRIOR_SPECS) == set(PRIOR_NAMES)


@pytest.mark.parametrize("typo", ["model.params.widht=3", "prior.params.rnak=4", "data.params.nosie=0.5"])
def test_a_typo_in_params_is_an_unknown_key(typo):
    with pytest.raises(ConfigError, match=r"unknown config key '.*\.params\.(widht|rnak|nosie)'.*valid keys here"):
        load_config("swissroll", [typo, "prior.name=data_gaussian"])


@pytest.mark.parametrize(("override", "message"), [
    ("model.params.width=1.5", r"^model\.params\.width must be int, got 1\.5 \(float\)$"),
    ("data.params.noise=loud", r"^data\.params\.noise must be a finite number, got 'loud'$"),
    ("prior.params.rank=2.5", r"^prior\.params\.rank must be int or str or null, got 2\.5 \(float\)$"),
    ("prior.params.clamp=[-1, x]", r"^prior\.params\.clamp\[1\] must be a finite number, got 'x'$"),
])
def test_a_value_of_the_wrong_type_names_its_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("swissroll", [override, "prior.name=data_gaussian"])


def test_specs_are_typed_and_keep_the_defaults():
    spec = load_config("swissroll", ["data.params.noise=2", "model.params.width=8"])
    assert spec.data.spec.params == {"noise": 2.0, "scale": 5.0} and isinstance(spec.data.spec.noise, float)
    assert spec.model.spec == MlpSpec(width=8)
    assert component_spec("data", "mnist8", {"classes": 3}).classes == 3


def test_a_dataset_priors_data_is_checked_where_it_is_written():
    with pytest.raises(ConfigError, match=r"unknown config key 'prior\.params\.data\.params\.colour' for data 'digits'"):
        load_config("swissroll", ["prior.name=dataset", "prior.params.data={name: digits, params: {colour: 1}}"])
    with pytest.raises(ConfigError, match=r"prior\.params\.data must be \{name: DATASET"):
        load_config("swissroll", ["prior.name=dataset", "prior.params.data={params: {}}"])
