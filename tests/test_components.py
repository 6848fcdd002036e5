"""The torch-free option tables of fdrl.components agree with the builders they describe, and a
typo in any params section is a config error naming the valid keys."""

import inspect

import pytest

from fdrl.components import DATA_OPTIONS, MODEL_OPTIONS, PRIOR_OPTIONS
from fdrl.config import ConfigError, load_config
from fdrl.data.images import IMAGE_DATASETS, FileOptions
from fdrl.data.toy import TOY_SAMPLERS
from fdrl.nets.mlp import MLP
from fdrl.nets.registry import ESTIMATORS
from fdrl.nets.resnet import ResNet
from fdrl.priors import PRIOR_NAMES


def _keywords(fn, skip=()):
    return {p.name for p in inspect.signature(fn).parameters.values()
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name not in skip}


def test_data_tables_match_the_builders():
    for name, sampler in TOY_SAMPLERS.items():
        assert set(DATA_OPTIONS[name]) == _keywords(sampler, ("n", "rng")), name
    file_options = {f for f in FileOptions.__dataclass_fields__}
    for name, builder in IMAGE_DATASETS.items():
        takes_files = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(builder).parameters.values())
        expected = _keywords(builder) | (file_options if takes_files else set()) | {"pca"}  # fdrl.data.principal
        assert set(DATA_OPTIONS[name]) == expected, name
    assert set(DATA_OPTIONS) == set(TOY_SAMPLERS) | {"array"} | set(IMAGE_DATASETS)


def test_model_and_prior_tables_match_the_builders():
    assert set(MODEL_OPTIONS) == set(ESTIMATORS)
    assert set(MODEL_OPTIONS["mlp"]) == _keywords(MLP, ("self", "in_shape"))
    assert set(MODEL_OPTIONS["resnet32"]) == _keywords(ResNet, ("self", "in_shape", "arch"))
    assert set(PRIOR_OPTIONS) == set(PRIOR_NAMES)


@pytest.mark.parametrize("typo", ["model.params.widht=3", "prior.params.rnak=4", "data.params.nosie=0.5"])
def test_a_typo_in_params_is_an_unknown_key(typo):
    with pytest.raises(ConfigError, match=r"unknown config key '.*\.params\.(widht|rnak|nosie)'.*valid keys here"):
        load_config("swissroll", [typo, "prior.name=data_gaussian"])
