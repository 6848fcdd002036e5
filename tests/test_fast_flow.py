"""The flow's fast path (fdrl.flow.FlowOptions): same particles as the plain path, spectral
norm computed once per flow and finite right after construction."""

import importlib

import pytest
import torch
from torch.nn.utils.parametrizations import _SpectralNorm

from fdrl.flow import FlowOptions, flow, frozen, prepare_estimator, ratio_potential
from fdrl.nets import MLP, build_estimator
from fdrl.objectives import get_objective

flow_module = importlib.import_module("fdrl.flow")  # fdrl.flow the attribute is the function
flow_setup = importlib.import_module("fdrl.flow_setup")


def _flows(net, x0, options, steps=6, objective="lsif-chi2"):
    with frozen(net, options):
        return flow(x0, ratio_potential(net, get_objective(objective)), steps, 0.05, 0.01,
                    torch.Generator().manual_seed(1), options=options)


def test_channels_last_fast_path_gives_the_plain_particles_on_a_resnet():
    """fp32 on the CPU: channels_last model and particles vs the plain path, within 1e-5."""
    torch.manual_seed(0)
    net = build_estimator("resnet32", (3, 32, 32), width=0.0625, spectral_norm=True)
    net(torch.randn(2, 3, 32, 32))
    x0 = torch.randn(4, 3, 32, 32)
    plain = _flows(net, x0, None)
    prepare_estimator(net, FlowOptions(channels_last=True))
    assert net.stem[0].parametrizations.weight.original.is_contiguous(memory_format=torch.channels_last)
    fast = _flows(net, x0, FlowOptions.for_device("cpu", channels_last=True))
    assert fast.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)


def test_compiled_flow_step_gives_the_plain_particles_and_compiles_once(monkeypatch):
    """torch.compile of the step (aot_eager backend: no C++ compiler needed), fp32, within 1e-6;
    a fresh potential closure each flow (as each training step makes) does not recompile."""
    from torch._dynamo.utils import counters

    monkeypatch.setattr(flow_module, "COMPILE_BACKEND", "aot_eager")
    monkeypatch.setattr(flow_module, "_COMPILED", {})
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    net = MLP((2,), width=16, depth=2, spectral_norm=True)
    x0 = torch.randn(32, 2)
    for _ in range(3):
        fast = _flows(net, x0, FlowOptions(compile=True), objective="lr-kl")
        plain = _flows(net, x0, None, objective="lr-kl")
        torch.testing.assert_close(fast, plain, rtol=1e-6, atol=1e-6)
    assert counters["stats"]["unique_graphs"] == 1


def test_a_failing_compile_falls_back_to_eager_with_a_warning(monkeypatch):
    net = MLP((2,), width=8, depth=1)
    x0 = torch.randn(8, 2)

    def broken(*args):
        raise RuntimeError("no compiler")

    monkeypatch.setattr(flow_module, "_compiled", lambda kind, fn, mode: broken)
    with pytest.warns(UserWarning, match="torch.compile of the flow step failed"):
        fast = _flows(net, x0, FlowOptions(compile=True))
    torch.testing.assert_close(fast, _flows(net, x0, None))


def test_spectral_norm_power_iteration_does_not_run_during_the_flow(monkeypatch):
    """Each normalised weight is computed once per flow (on entering frozen), never per step,
    and the power iteration (which only runs in training mode) never runs."""
    net = build_estimator("resnet32", (3, 32, 32), width=0.0625, spectral_norm=True)
    layers = sum(isinstance(m, _SpectralNorm) for m in net.modules())
    calls = {"forward": 0, "power": 0}
    forward, power = _SpectralNorm.forward, _SpectralNorm._power_method

    def counted_forward(self, w):
        calls["forward"] += 1
        return forward(self, w)

    def counted_power(self, w, n):
        calls["power"] += 1
        return power(self, w, n)

    monkeypatch.setattr(_SpectralNorm, "forward", counted_forward)
    monkeypatch.setattr(_SpectralNorm, "_power_method", counted_power)
    _flows(net, torch.randn(2, 3, 32, 32), FlowOptions.for_device("cpu"), steps=5)
    assert calls == {"forward": layers, "power": 0}


def test_spectral_norm_in_eval_mode_right_after_construction_is_finite():
    """torch's spectral norm runs 15 power iterations at construction, so an estimator frozen
    before any training-mode forward (step 0 of a run, sampling a fresh model) is finite."""
    torch.manual_seed(0)
    for net in (MLP((2,), width=16, depth=2, spectral_norm=True),
                build_estimator("resnet32", (3, 32, 32), width=0.0625, spectral_norm=True)):
        x0 = torch.randn(2, *net.in_shape)
        with frozen(net):
            assert torch.isfinite(net(x0)).all()
        assert torch.isfinite(_flows(net, x0, FlowOptions.for_device("cpu"), steps=2)).all()


def test_flow_options_defaults_per_device(monkeypatch):
    """CPU: the fused MLP kernel where it suits (None), else the closed-form MLP gradient, several
    steps per compiled call, compile of the closed-form steps only (None) where a compiler runs and
    none where it does not; CUDA: no CPU kernel, compile everything,
    TF32, channels_last only for the estimators checked in it; bf16 autocast off everywhere
    unless asked for (then on any device)."""
    monkeypatch.setattr(flow_setup, "cpu_compiler_found", lambda: True)
    cpu, cuda = FlowOptions.for_device("cpu", estimator="resnet32"), FlowOptions.for_device("cuda", estimator="resnet32")
    assert cpu == FlowOptions(compile=None, closed_form=True, steps_per_call=flow_module.CPU_STEPS_PER_CALL,
                              cpu_kernel=None)
    assert cuda == FlowOptions(channels_last=True, tf32=True, compile=True, cpu_kernel=False)
    for estimator in ("mlp", "resnet64", "resnet64_shallow", "resnet128", None):
        assert not FlowOptions.for_device("cuda", estimator=estimator).channels_last
    assert FlowOptions.for_device("cpu", autocast_bf16=True).autocast_bf16
    assert FlowOptions.for_device("cuda", tf32=False).tf32 is False
    assert FlowOptions.for_device("cpu", compile=True).compile
    monkeypatch.setattr(flow_setup, "cpu_compiler_found", lambda: False)
    assert FlowOptions.for_device("cpu").compile is False
    with pytest.raises(ValueError, match="compile_mode"):
        FlowOptions.for_device("cpu", compile_mode="fast")
    with pytest.raises(ValueError, match="steps_per_call"):
        FlowOptions(steps_per_call=0)


def test_compiler_check_without_a_compiler_warns_once_and_says_no(monkeypatch):
    from torch._inductor import cpp_builder

    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", lambda: "/nonexistent/c++")
    flow_setup.cpu_compiler_found.cache_clear()
    try:
        with pytest.warns(UserWarning, match="no working C\\+\\+ compiler"):
            assert flow_setup.cpu_compiler_found() is False
        assert flow_setup.cpu_compiler_found() is False  # cached: no second check, no second notice
    finally:
        flow_setup.cpu_compiler_found.cache_clear()


def test_sharded_noise_generators_draw_each_shard_from_its_own_stream():
    x0 = torch.zeros(6, 2)
    gens = [torch.Generator().manual_seed(s) for s in (3, 4)]
    both = flow(x0, lambda x: x.sum(1) * 0, 1, 0.1, 1.0, gens)
    one = [flow(x0[:3], lambda x: x.sum(1) * 0, 1, 0.1, 1.0, torch.Generator().manual_seed(s)) for s in (3, 4)]
    assert torch.equal(both, torch.cat(one))


def test_narrow_input_weights_are_column_major_only_inside_a_flow(monkeypatch):
    """frozen() stores a 2-input linear weight column-major (same values) and restores the
    original tensor on exit; the particles equal those of the row-major layout within 1e-6."""
    torch.manual_seed(0)
    net = MLP((2,), width=32, depth=2)
    first, hidden = net.net[0].weight, net.net[2].weight
    storage, values = first.data_ptr(), first.detach().clone()
    with frozen(net):
        assert first.stride() == (1, 32) and torch.equal(first, values)  # (out=32, in=2), column-major
        assert hidden.is_contiguous()  # 32 inputs: left alone
    assert first.data_ptr() == storage and first.is_contiguous() and first.requires_grad
    x0 = torch.randn(64, 2)
    column_major = _flows(net, x0, None)
    monkeypatch.setattr(flow_setup, "NARROW_INPUT_FEATURES", 0)
    with frozen(net):
        assert first.is_contiguous()
    torch.testing.assert_close(column_major, _flows(net, x0, None), rtol=1e-6, atol=1e-6)


def _power_vectors(net):
    return [m._u.clone() for m in net.modules() if isinstance(m, _SpectralNorm)]


def _train_mode_flow(net, x0, steps, objective="lsif-chi2"):
    """The authors' flow, written out: the estimator in train mode, so each forward runs spectral
    norm's power iteration and divides by the new sigma; the same step and noise as ``_flows``."""
    f_prime, generator, x = get_objective(objective).f_prime, torch.Generator().manual_seed(1), x0.clone()
    net.train()
    for _ in range(steps):
        x.requires_grad_(True)
        (grad,) = torch.autograd.grad(f_prime(net(x)).sum(), x)
        x = x.detach() - 0.05 * grad + 0.01 * torch.randn(x.shape, generator=generator)
    return x


@pytest.mark.parametrize("name", ["mlp", "resnet32"])
def test_per_step_spectral_norm_runs_one_power_iteration_per_flow_step_like_the_train_mode_flow(name, monkeypatch):
    """flow.spectral_norm_power=per_step: K power iterations per layer during a K-step flow (the
    CPU defaults' closed form and compile are bypassed), particles and power-iteration vectors
    equal to those of the train-mode flow within 1e-5."""
    import copy

    torch.manual_seed(0)
    shape = (2,) if name == "mlp" else (3, 32, 32)
    net = build_estimator(name, shape, width=16 if name == "mlp" else 0.0625, spectral_norm=True)
    reference = copy.deepcopy(net)
    x0, steps = torch.randn(4, *shape), 5
    layers = sum(isinstance(m, _SpectralNorm) for m in net.modules())
    before = _power_vectors(net)
    power, calls = _SpectralNorm._power_method, []
    monkeypatch.setattr(_SpectralNorm, "_power_method", lambda self, w, n: calls.append(n) or power(self, w, n))
    fast = _flows(net, x0, FlowOptions.for_device("cpu", spectral_norm_power="per_step"), steps=steps)
    assert calls == [1] * (layers * steps)
    monkeypatch.setattr(_SpectralNorm, "_power_method", power)
    expected = _train_mode_flow(reference, x0, steps)
    torch.testing.assert_close(fast, expected, rtol=1e-5, atol=1e-5)
    after = _power_vectors(net)
    for u, u_ref, u0 in zip(after, _power_vectors(reference), before):
        torch.testing.assert_close(u, u_ref, rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(u, u0) for u, u0 in zip(after, before))  # the iterations were kept
    assert net.training and all(p.requires_grad for p in net.parameters())  # restored on exit


def test_once_spectral_norm_is_the_flow_of_the_weights_normalised_on_entry():
    """spectral_norm_power=once (the default): the particles of a plain network holding W / sigma
    computed from the power-iteration vectors as they stand (no iteration), and the vectors untouched."""
    from torch.nn.utils import parametrize

    torch.manual_seed(0)
    net = build_estimator("resnet32", (3, 32, 32), width=0.0625, spectral_norm=True)
    net(torch.randn(2, 3, 32, 32))  # one training-mode forward: vectors away from construction
    net.eval()
    with torch.no_grad():  # eval mode: W / sigma(u, v) without a power iteration
        state = {k: v for k, v in net.state_dict().items() if ".parametrizations." not in k}
        state.update({f"{name}.weight": m.weight.clone() for name, m in net.named_modules()
                      if parametrize.is_parametrized(m)})
    net.train()
    plain = build_estimator("resnet32", (3, 32, 32), width=0.0625)
    plain.load_state_dict(state)
    x0, before = torch.randn(3, 3, 32, 32), _power_vectors(net)
    once = _flows(net, x0, FlowOptions(spectral_norm_power="once"))
    torch.testing.assert_close(once, _flows(plain, x0, None), rtol=1e-6, atol=1e-6)
    assert all(torch.equal(u, u0) for u, u0 in zip(_power_vectors(net), before))
    assert torch.equal(once, _flows(net, x0, None))  # the default is once


def test_spectral_norm_power_is_checked():
    from fdrl.config import ConfigError, load_config

    with pytest.raises(ValueError, match="spectral_norm_power must be one of once, per_step, got 'always'"):
        FlowOptions(spectral_norm_power="always")
    with pytest.raises(ConfigError, match="^flow.spectral_norm_power must be one of once, per_step, got 'always'$"):
        load_config("swissroll", ["flow.spectral_norm_power=always"])
    assert load_config("swissroll", ["flow.spectral_norm_power=per_step"]).flow.spectral_norm_power == "per_step"


def test_a_run_from_before_spectral_norm_power_resumes_as_once():
    """A stored config without the key (written before it existed, when the flow behaved as
    "once") resumes with the default, and conflicts with per_step."""
    from fdrl.config import load_config
    from fdrl.rundir import config_conflict

    old = load_config("swissroll").to_dict()
    del old["flow"]["spectral_norm_power"]
    assert config_conflict(old, load_config("swissroll").to_dict()) is None
    per_step = load_config("swissroll", ["flow.spectral_norm_power=per_step"]).to_dict()
    assert config_conflict(old, per_step) == "flow.spectral_norm_power='once', not 'per_step'"
