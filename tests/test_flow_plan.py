"""A flow's route is planned once (fdrl.flow.plan_flow) from one dataclass of switches
(fdrl.config.FlowSwitches): a run records its plan, `fdrl info` shows it, a saved or loaded model
keeps it and its samples take the same route; the route table comes from the same code."""

import dataclasses
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fdrl import native
from fdrl.native import route as native_route
from fdrl.config import FlowSwitches, load_config
from fdrl.flow import ROUTES, FlowOptions, FlowPlan, flow, flow_route, frozen, plan_flow, ratio_potential
from fdrl.model import FDRL
from fdrl.nets import MLP
from fdrl.objectives import get_objective
from fdrl.flow_setup import cpu_compiler_found
from fdrl.route_table import route_table, route_table_markdown
from fdrl.train import Trainer

flow_module = importlib.import_module("fdrl.flow")
needs_kernel = pytest.mark.skipif(native.library() is None, reason="no C++ compiler builds the kernel here")
TINY = ["train.steps=2", "flow.steps=3", "flow.refine_steps=1", "train.batch_size=8", "train.sample_n=8",
        "train.eval_n=8", "device=cpu"]


def _train(tmp_path, *overrides):
    trainer = Trainer(load_config("swissroll", [*TINY, *overrides]), tmp_path / "run", progress=False)
    return trainer, trainer.fit()


def _plans(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("event") == "flow_plan"]


def _spy_routes(monkeypatch):
    """The route names of every flow run from now on (each flow builds its route's eager steps once)."""
    taken = []
    for route in ROUTES.values():
        original = type(route).steps

        def spy(self, potential, plan, compiled, original=original):
            if not compiled:
                taken.append(self.name)
            return original(self, potential, plan, compiled)

        monkeypatch.setattr(type(route), "steps", spy)
    return taken


@needs_kernel
@pytest.mark.parametrize("cpu_kernel,route", [("true", "cpu_kernel"), ("false", "closed_form")])
def test_a_run_records_its_plan_and_its_samples_take_that_route(tmp_path, monkeypatch, cpu_kernel, route):
    """Planned once at the first flow (one record), kept in the checkpoints and the saved model;
    FDRL.load(run) and FDRL.load(saved) sample on the training route, whatever the measurement
    would now say for the sampling batch."""
    trainer, model = _train(tmp_path, f"flow.cpu_kernel={cpu_kernel}", "flow.compile=false")
    (record,) = _plans(tmp_path / "run")
    assert record["route"] == route and trainer.flow_plan.route == route
    assert FlowPlan.from_mapping(record) == trainer.flow_plan
    saved = model.save(tmp_path / "saved")
    assert json.loads((saved / "fdrl.json").read_text())["flow_plan"]["route"] == route
    monkeypatch.setenv("FDRL_CPU_KERNEL_ROUTE", "torch" if route == "cpu_kernel" else "kernel")
    for loaded in (FDRL.load(tmp_path / "run"), FDRL.load(saved)):
        assert loaded.flow_plan == trainer.flow_plan
        taken = _spy_routes(monkeypatch)
        loaded.sample(5, seed=1)
        assert taken == [route]


@needs_kernel
def test_the_measured_choice_is_made_once_per_run(tmp_path, monkeypatch):
    """cpu_kernel=null: the route of the first flow is every training flow's route (no flow of the
    run plans again), and sampling takes it too."""
    monkeypatch.setenv("FDRL_CPU_KERNEL_ROUTE", "kernel")
    trainer = Trainer(load_config("swissroll", TINY), tmp_path / "run", progress=False)
    taken = _spy_routes(monkeypatch)
    decided = []
    original = native_route.kernel_chosen
    monkeypatch.setattr(native_route, "kernel_chosen", lambda *a: decided.append(1) or original(*a))
    model = trainer.fit()
    assert len(decided) == 1  # at the first flow only: not per training flow, not for the samples
    assert set(taken) == {"cpu_kernel"}
    monkeypatch.setenv("FDRL_CPU_KERNEL_ROUTE", "torch")
    assert model.flow_options().cpu_kernel is True


def test_fdrl_info_says_which_route_the_training_flow_took(tmp_path):
    _train(tmp_path, "flow.cpu_kernel=false", "flow.compile=false")
    done = subprocess.run([sys.executable, "-m", "fdrl.cli", "info", str(tmp_path / "run")], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("flow ")]
    assert "closed_form (eager, 1 step per call)" in line


def test_a_plan_runs_where_its_route_does_and_falls_back_to_eager_autograd():
    torch.manual_seed(0)
    net = MLP((2,), width=8, depth=1)
    potential, x0 = ratio_potential(net, get_objective("lr-kl")), torch.randn(6, 2)
    plan = FlowPlan("closed_form", compiled=False, steps_per_call=1)
    with frozen(net):
        assert plan_flow(potential, x0, plan) is plan
        composed = lambda x: potential(x) * 2  # noqa: E731
        assert plan_flow(composed, x0, plan) == FlowPlan("autograd", compiled=False, steps_per_call=1)
        plain = flow(x0, potential, 4, 0.1, 0.01, torch.Generator().manual_seed(0))
        planned = flow(x0, potential, 4, 0.1, 0.01, torch.Generator().manual_seed(0), options=plan)
    torch.testing.assert_close(planned, plain, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="flow plan route must be one of cpu_kernel, closed_form, autograd"):
        FlowPlan.from_mapping({"route": "fast"})


def test_each_route_owns_its_compile_rule():
    """compile=None: the closed form compiles, autograd does not, the kernel never; True: every
    torch route, autograd only with weights fixed during the flow."""
    auto, on = FlowOptions(compile=None), FlowOptions(compile=True)
    assert [ROUTES[name].compiles(auto) for name in ROUTES] == [False, True, False]
    assert [ROUTES[name].compiles(on) for name in ROUTES] == [False, True, True]
    assert not ROUTES["autograd"].compiles(FlowOptions(compile=True, spectral_norm_power="per_step"))
    assert not ROUTES["closed_form"].compiles(FlowOptions(compile=False))


def test_a_model_keeps_its_switches_whole_and_an_older_one_loads_with_defaults(tmp_path):
    """The switches dataclass is saved whole; a saved model whose `flow` has only some switches and no
    plan (written before the others existed) loads with the defaults of the rest."""
    _, model = _train(tmp_path, "flow.cpu_kernel=false", "flow.spectral_norm_power=per_step")
    saved = model.save(tmp_path / "saved")
    meta = json.loads((saved / "fdrl.json").read_text())
    assert meta["flow"] == dataclasses.asdict(FlowSwitches(cpu_kernel=False, spectral_norm_power="per_step"))
    meta["flow"] = {"compile": False}
    del meta["flow_plan"]
    (saved / "fdrl.json").write_text(json.dumps(meta))
    old = FDRL.load(saved)
    assert old.flow_switches == FlowSwitches(compile=False) and old.flow_plan is None
    assert old.sample(4, seed=0).shape == (4, 2)


def test_flow_options_take_one_switches_dataclass_and_refuse_unknown_switches():
    cpu = FlowOptions.for_device("cpu", FlowSwitches(cpu_kernel=False, compile=False))
    assert (cpu.cpu_kernel, cpu.compile, cpu.closed_form) == (False, False, True)
    with pytest.raises(TypeError, match="FlowOptions has no switch 'kernel'"):
        FlowOptions.for_device("cpu", kernel=True)


def test_sampling_steps_is_k_plus_kappa_unless_asked():
    config = load_config("swissroll")
    model = FDRL(MLP((2,), width=4, depth=1), "lr-kl", None, 0.1, 0.01, steps=7, refine_steps=3)
    assert (model.sampling_steps, model.total_steps(None), model.total_steps(4)) == (10, 10, 4)
    assert config.flow.sampling_steps == 120


def test_the_route_table_comes_from_plan_flow():
    """Rows that hold on every machine (the kernel's rows depend on a compiler and the CPU)."""
    rows = {(r["estimator"], r["device"], r["switches"]): r["route"] for r in route_table()}
    assert rows[("mlp", "cpu", "cpu_kernel=False, compile=False")] == "closed_form (eager, 1 step per call)"
    assert rows[("mlp", "cpu", "autocast_bf16=True")] == "autograd (eager, 1 step per call, autocast_bf16)"
    assert rows[("mlp", "cpu", "spectral_norm_power=per_step")] == ("autograd (eager, 1 step per call, "
                                                                    "spectral_norm_power=per_step)")
    assert rows[("resnet32", "cpu", "defaults")] == "autograd (eager, 1 step per call)"
    assert rows[("resnet32", "cuda", "defaults")] == "autograd (compiled, 1 step per call, channels_last, tf32)"
    assert rows[("mlp", "cuda", "cpu_kernel=True")] == "autograd (compiled, 1 step per call, tf32)"
    net = MLP((2,), width=8, depth=1)
    with frozen(net):
        assert flow_route(ratio_potential(net, get_objective("lr-kl")), torch.zeros(3, 2),
                          FlowOptions(cpu_kernel=False, closed_form=True)) == "closed_form"


@needs_kernel
def test_the_docs_route_table_is_what_the_code_prints():
    """docs/flow-routes.md shows `python -m fdrl.route_table` (on a machine where the kernel builds
    and torch.compile has a compiler, which decide the CPU rows)."""
    if not cpu_compiler_found():
        pytest.skip("no C++ compiler for torch.compile")
    doc = (Path(__file__).resolve().parents[1] / "docs" / "flow-routes.md").read_text()
    assert route_table_markdown() in doc
