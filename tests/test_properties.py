"""Property-based tests (hypothesis): config parsing and the objectives' numerics.

* Any valid ``key=value`` override lands in the config unchanged and survives the round trips
  a run makes (mapping, YAML file); any junk gives ConfigError, never another exception.
* For finite network outputs, including +-80, every pairing's loss and f' are finite and so
  are their gradients (LSIF-chi2 outputs r itself, so it gets its own, wider range).
"""

import json

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fdrl.config import ConfigError, load_config
from fdrl.objectives import OBJECTIVES

SETTINGS = settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])

#: what a command line can carry: letters, digits, punctuation, symbols, spaces
names = st.text(st.characters(categories=("L", "N", "P", "S", "Zs")), min_size=1, max_size=12)

#: Config keys and strategies for valid values.
VALID = {
    "name": names,
    "objective": st.sampled_from(sorted(OBJECTIVES)),
    "device": st.sampled_from(["auto", "cpu", "cuda", "cuda:1", "mps"]),
    "data.params.noise": st.floats(0.0, 10.0),
    "model.params.width": st.integers(1, 4096),
    "flow.eta": st.floats(1e-6, 1e3),
    "flow.noise": st.floats(0.0, 10.0),
    "flow.steps": st.integers(1, 10**6),
    "flow.refine_steps": st.integers(0, 10**6),
    "train.steps": st.integers(1, 10**9),
    "train.batch_size": st.integers(1, 10**5),
    "train.lr": st.floats(1e-9, 1.0),
    "train.betas": st.lists(st.floats(0.0, 0.9999), min_size=2, max_size=2),
    "train.lr_decay_at": st.lists(st.integers(-10**6, 10**6), max_size=4),
    "train.lr_decay_factor": st.floats(1e-3, 1.0),
    "train.ema": st.floats(0.0, 0.9999),
    "train.seed": st.integers(0, 2**32 - 1),
    "train.checkpoint_every": st.integers(1, 10**6),
    "train.eval_every": st.integers(0, 10**6),
    "train.guard_max_ratio": st.floats(1e-3, 1e30),
    "train.guard_retries": st.integers(0, 100),
    "train.guard_lr_factor": st.floats(0.01, 0.99),
}


def _get(mapping: dict, key: str):
    for part in key.split("."):
        mapping = mapping[part]
    return mapping


@SETTINGS
@given(st.fixed_dictionaries({}, optional=VALID))
def test_valid_overrides_round_trip(tmp_path_factory, chosen):
    overrides = [f"{key}={json.dumps(value, ensure_ascii=False)}" for key, value in chosen.items()]  # JSON is YAML
    config = load_config("swissroll", overrides)
    as_dict = config.to_dict()
    for key, value in chosen.items():
        assert _get(as_dict, key) == value, key
    assert load_config(as_dict) == config
    stored = tmp_path_factory.mktemp("cfg") / "config.yaml"  # what a run directory keeps
    stored.write_text(yaml.safe_dump(as_dict, sort_keys=False))
    assert load_config(str(stored)) == config


TRICKY_VALUES = ["", "nan", ".nan", ".inf", "-.inf", "1e400", "-1", "0", "[1, 2", "{a: 1}", "[nan, 0.5]",
                 "2001-02-30", "!!float x", "!!int 1.5", "!!python/object:os.system x", "!!binary ~~", "~",
                 "true", "1" * 400, "[0.9]", "{steps: {x: 1}}", "a: b: c", "\t"]
junk_keys = st.one_of(st.sampled_from([*VALID, "train", "flow", "data", "data.params", "train.steps.x",
                                       "", ".", "train..steps", "extends"]), st.text(max_size=15))
junk_values = st.one_of(st.sampled_from(TRICKY_VALUES), st.text(max_size=15), st.integers().map(str),
                        st.floats().map(repr))


@SETTINGS
@given(st.lists(st.one_of(st.tuples(junk_keys, junk_values).map("=".join), st.text(max_size=15)),
                min_size=1, max_size=4))
def test_junk_overrides_give_config_error_and_nothing_else(overrides):
    try:
        load_config("swissroll", overrides)
    except ConfigError:
        pass


yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10))
yaml_trees = st.recursive(yaml_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.one_of(st.sampled_from(["train", "flow", "steps", "eta", "params", "name"]),
                              st.text(max_size=8), st.integers()), inner, max_size=3)), max_leaves=10)


@SETTINGS
@given(yaml_trees)
def test_junk_config_files_give_config_error_and_nothing_else(tmp_path_factory, tree):
    path = tmp_path_factory.mktemp("cfg") / "junk.yaml"
    path.write_text(yaml.safe_dump(tree))
    try:
        load_config(str(path))
    except ConfigError:
        pass


# -- objectives ----------------------------------------------------------------------------------
def _outputs(bound: float):
    """1-D float32 network outputs in [-bound, bound], the ends and 0 included often."""
    element = st.one_of(st.sampled_from([-bound, bound, 0.0]), st.floats(-bound, bound, width=32))
    return st.lists(element, min_size=1, max_size=32).map(lambda v: torch.tensor(v, requires_grad=True))


def _finite(*tensors: torch.Tensor) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


#: LR outputs log r (+-80 is far past any trained network); LSIF-chi2 outputs r itself.
OUTPUT_BOUND = {"lsif-chi2": 1e6, "lr-kl": 80.0, "lr-js": 80.0, "lr-logd": 80.0}


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
@SETTINGS
@given(data=st.data())
def test_loss_is_finite_with_finite_gradients(name, data):
    objective, bound = OBJECTIVES[name], OUTPUT_BOUND[name]
    out_data, out_particles = data.draw(_outputs(bound)), data.draw(_outputs(bound))
    loss = objective.loss(out_data, out_particles)
    loss.backward()
    assert _finite(loss, out_data.grad, out_particles.grad)


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
@SETTINGS
@given(data=st.data())
def test_f_prime_is_finite_with_finite_gradients(name, data):
    """f' of the network output drives the flow; f' of a log ratio is used when composing."""
    objective = OBJECTIVES[name]
    out, log_r = data.draw(_outputs(OUTPUT_BOUND[name])), data.draw(_outputs(80.0))
    f_out, f_log_r = objective.f_prime(out), objective.f_prime_of_log_ratio(log_r)
    (f_out.sum() + f_log_r.sum()).backward()
    assert _finite(f_out, f_log_r, out.grad, log_r.grad, objective.ratio(out.detach()))
