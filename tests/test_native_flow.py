"""The fused C++ MLP flow (``fdrl.native``, ``FlowOptions.cpu_kernel``): the same particles as the
plain path for every pairing and MLP shape (odd ones included) on three instruction-set builds,
the hand-derived gradient equal to autograd's, any thread count giving the same bits, inputs
checked before the call, the default route measured per shape, and a missing compiler or a
damaged cache never breaking a flow."""

import importlib
import json
import subprocess
import sys
import warnings

import pytest
import torch

from fdrl import native
from fdrl.native import route
from fdrl.flow import FlowOptions, flow, flow_route, frozen, potential_gradient, ratio_potential
from fdrl.nets import MLP
from fdrl.objectives import OBJECTIVES, get_objective

flow_module = importlib.import_module("fdrl.flow")

pytestmark = pytest.mark.skipif(native.library() is None, reason="no C++ compiler builds the kernel here")

#: (sample shape, width, depth, batch): 2-D toy, padded width (50 is no multiple of a vector),
#: one hidden layer, 2-D samples flattened, a batch that is no multiple of a tile, inputs wide
#: enough for the input-gradient product (20 features: padded), weights too large for one tile at
#: a time (panels of tiles, a last panel cut short)
SHAPES = [((2,), 64, 4, 300), ((5,), 50, 1, 37), ((2, 3), 20, 2, 11), ((1,), 7, 3, 5), ((20,), 24, 2, 50),
          ((64,), 256, 3, 130)]
#: odd shapes: batch 1, width 1, inputs wider than the width, a width above 256
ODD_SHAPES = [((2,), 16, 2, 1), ((3,), 1, 2, 9), ((40,), 8, 2, 13), ((5,), 300, 2, 17)]
KERNEL = FlowOptions(cpu_kernel=True)
#: the instruction sets the kernel's correctness is tested on: baseline x86-64 (SSE2 only, the
#: generic 16-byte vectors), AVX2 + FMA, and this machine's own
MARCHES = ["x86-64", "x86-64-v3", "native"]


@pytest.fixture(scope="module", params=MARCHES)
def build(request):
    """The kernel built with ``-march=<param>`` (skipped where this CPU cannot run that build)."""
    march = request.param
    if march != "native" and "__x86_64__" not in native.target_signature(native._compiler()):
        pytest.skip("an x86-64 instruction-set build")
    if march == "x86-64-v3" and "__AVX2__" not in native.target_signature(native._compiler()):
        pytest.skip("this CPU has no AVX2")
    return native.build_private(march)


@pytest.fixture
def kernel_build(build, monkeypatch):
    """Every kernel flow in the test runs on ``build``."""
    monkeypatch.setattr(native, "library", lambda: build)
    return build


def _flow(net, x0, objective, options, steps=20, generator=None, **kwargs):
    with frozen(net):
        return flow(x0, ratio_potential(net, get_objective(objective)), steps, 0.05, 0.01,
                    generator if generator is not None else torch.Generator().manual_seed(1), options=options,
                    **kwargs)


@pytest.mark.parametrize("objective", list(OBJECTIVES))
@pytest.mark.parametrize("shape,width,depth,batch", SHAPES + ODD_SHAPES)
def test_kernel_particles_equal_the_plain_path(kernel_build, objective, shape, width, depth, batch):
    """20 noisy steps: the kernel's particles equal the plain (autograd) path's to float rounding
    (measured at most 2.2e-6 on drifts of 0.07-0.43), on each instruction-set build."""
    torch.manual_seed(0)
    net = MLP(shape, width=width, depth=depth)
    x0 = torch.randn(batch, *shape)
    plain = _flow(net, x0, objective, FlowOptions())
    with frozen(net):
        assert flow_route(ratio_potential(net, get_objective(objective)), x0, KERNEL) == "cpu_kernel"
    kernel = _flow(net, x0, objective, KERNEL)
    assert kernel.shape == x0.shape
    assert float((plain - x0).abs().max()) > 0.02  # the flow moved the particles
    torch.testing.assert_close(kernel, plain, rtol=0, atol=1e-5)


@pytest.mark.parametrize("objective", list(OBJECTIVES))
@pytest.mark.parametrize("spectral_norm", [False, True])
def test_one_kernel_step_is_minus_eta_times_the_autograd_gradient(kernel_build, objective, spectral_norm):
    """One step without noise from x0 moves x0 by -eta grad_x f'(NN(x0)): the kernel's gradient,
    read off the step, equals autograd's (in float64) within float32 rounding."""
    torch.manual_seed(3)
    net, wide = (MLP((3,), width=40, depth=3, spectral_norm=spectral_norm, negative_slope=0.1) for _ in "ab")
    wide.load_state_dict(net.state_dict())
    wide.double()
    x0 = torch.randn(64, 3) * 2
    eta = 0.5
    with frozen(net), frozen(wide):
        x1 = flow(x0, ratio_potential(net, get_objective(objective)), 1, eta, 0.0, options=KERNEL)
        reference = potential_gradient(ratio_potential(wide, get_objective(objective)), x0.double())
    gradient = (x0.double() - x1.double()) / eta
    scale = float(reference.abs().max())
    assert scale > 1e-3
    torch.testing.assert_close(gradient, reference, rtol=0, atol=1e-5 * max(scale, 1.0))


@pytest.mark.parametrize("features,width", [(2, 64), (64, 256)])  # one tile at a time; panels
def test_threads_split_rows_without_changing_a_bit(features, width):
    torch.manual_seed(0)
    net = MLP((features,), width=width, depth=3)
    x0 = torch.randn(1001, features)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _flow(net, x0, "lr-js", KERNEL)
        torch.set_num_threads(3)
        three = _flow(net, x0, "lr-js", KERNEL)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, three)


def test_trajectory_and_sharded_generators_match_the_plain_path():
    """Recording every 3 steps (the kernel runs 3 steps per call) and one generator per shard of
    the batch (what distributed ranks do) give the plain path's frames and particles."""
    torch.manual_seed(0)
    net = MLP((2,), width=32, depth=2)
    x0 = torch.randn(40, 2)
    frames = {}
    for name, options in (("plain", FlowOptions()), ("kernel", KERNEL)):
        frames[name] = []
        generators = [torch.Generator().manual_seed(s) for s in (4, 5)]
        _flow(net, x0, "lsif-chi2", options, steps=10, generator=generators, trajectory=frames[name],
              record_every=3)
    assert len(frames["kernel"]) == len(frames["plain"]) == 5  # steps 0, 3, 6, 9, 10
    for got, expected in zip(frames["kernel"], frames["plain"]):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_a_nan_row_leaves_the_other_rows_untouched(kernel_build):
    torch.manual_seed(0)
    net = MLP((4,), width=24, depth=2)
    x0 = torch.randn(20, 4)
    clean = _flow(net, x0, "lr-js", KERNEL)
    x0[7, 2] = float("nan")
    dirty = _flow(net, x0, "lr-js", KERNEL)
    others = torch.arange(20) != 7
    assert torch.equal(dirty[others], clean[others])
    assert dirty[7].isnan().any()


def test_float64_default_dtype_packs_float32_weights(kernel_build):
    """With torch's default dtype float64 the padded weights are still float32 (read as floats by
    the kernel): the same particles as the plain path."""
    torch.manual_seed(0)
    net = MLP((3,), width=20, depth=2)
    x0 = torch.randn(30, 3)
    plain = _flow(net, x0, "lsif-chi2", FlowOptions())
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        kernel = _flow(net, x0, "lsif-chi2", KERNEL)
    finally:
        torch.set_default_dtype(default)
    assert kernel.dtype == torch.float32
    torch.testing.assert_close(kernel, plain, rtol=0, atol=1e-5)


def test_wrong_features_or_too_many_rows_are_refused_before_the_call():
    torch.manual_seed(0)
    net = MLP((3,), width=16, depth=2)
    with frozen(net), pytest.raises(ValueError, match="2 features per row, but the MLP's first layer takes 3"):
        flow(torch.randn(5, 2), ratio_potential(net, get_objective("lr-kl")), 2, 0.1, 0.01, options=KERNEL)
    packed = native.PackedMLP(*net.weights_and_biases(), net.negative_slope)
    huge = torch.zeros(1, 3).expand(2**31, 3)  # 2^31 rows in no memory: refused before any copy
    with pytest.raises(ValueError, match="rows 2147483648 exceeds"):
        packed.flow(huge, "lr-kl", None, 1, 0.1, 0.0)
    with pytest.raises(ValueError, match="noise draws"):
        packed.flow(torch.zeros(4, 3), "lr-kl", [torch.zeros(4, 2)], 1, 0.1, 0.01)


def test_trajectory_noise_is_drawn_a_bounded_number_of_steps_at_a_time(monkeypatch):
    """A trajectory recorded every 50 steps draws at most CPU_KERNEL_NOISE_FLOATS of noise per
    kernel call (not 50 steps' worth), and still gives the plain path's frames."""
    torch.manual_seed(0)
    net = MLP((2,), width=16, depth=2)
    x0 = torch.randn(10, 2)
    monkeypatch.setattr(flow_module, "CPU_KERNEL_NOISE_FLOATS", 3 * x0.numel())
    counts = []
    original = native.PackedMLP.flow
    monkeypatch.setattr(native.PackedMLP, "flow", lambda self, x, o, xis, count, *a: (
        counts.append(count), original(self, x, o, xis, count, *a))[1])
    frames = {"plain": [], "kernel": []}
    for name, options in (("plain", FlowOptions()), ("kernel", KERNEL)):
        _flow(net, x0, "lr-kl", options, steps=120, trajectory=frames[name], record_every=50)
    assert max(counts) == 3 and sum(counts) == 120
    assert len(frames["kernel"]) == len(frames["plain"]) == 4  # steps 0, 50, 100, 120
    for got, expected in zip(frames["kernel"], frames["plain"]):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_default_route_is_the_measured_one_and_forced_by_the_environment(monkeypatch):
    """``cpu_kernel=None`` takes the kernel where FDRL_CPU_KERNEL_ROUTE says so, or where the
    measurement found it 1.1x faster; other potentials, float64 particles or the switch off keep
    the torch routes."""
    toy = MLP((2,), width=64, depth=3)
    default = FlowOptions.for_device("cpu")
    potential = ratio_potential(toy, get_objective("lsif-chi2"))
    monkeypatch.setattr(route, "_decided", {})
    with frozen(toy):
        for forced, expected in (("kernel", "cpu_kernel"), ("torch", "closed_form")):
            monkeypatch.setenv(route.FORCE_ENV, forced)
            assert flow_route(potential, torch.randn(4, 2), default) == expected
        monkeypatch.delenv(route.FORCE_ENV)
        for speedup, expected in ((1.5, "cpu_kernel"), (1.05, "closed_form")):
            monkeypatch.setattr(flow_module, "_measure_routes", lambda *a, s=speedup: {"kernel": 1.0, "torch": s})
            monkeypatch.setattr(route, "decisions_file", lambda: None)
            assert flow_route(potential, torch.randn(4 + int(speedup * 10), 2), default) == expected
        assert flow_route(potential, torch.randn(4, 2, dtype=torch.float64),
                          FlowOptions.for_device("cpu", cpu_kernel=True)) == "closed_form"
        assert flow_route(potential, torch.randn(4, 2),
                          FlowOptions.for_device("cpu", cpu_kernel=False)) == "closed_form"
        composed = lambda x: potential(x) * 2  # noqa: E731
        assert flow_route(composed, torch.randn(4, 2), KERNEL) == "autograd"
    assert not FlowOptions.for_device("cuda").cpu_kernel
    monkeypatch.setenv(route.FORCE_ENV, "sometimes")
    with pytest.raises(ValueError, match="FDRL_CPU_KERNEL_ROUTE must be"):
        route.forced()


def test_a_measured_decision_is_kept_beside_the_library_and_not_measured_again(fresh_library, monkeypatch):
    monkeypatch.delenv(route.FORCE_ENV, raising=False)
    monkeypatch.setattr(route, "_decided", {})
    calls = []

    def measure():
        calls.append(1)
        return {"kernel": 1.0, "torch": 2.0}

    assert route.kernel_chosen("shape-a", measure)
    route._decided.clear()  # a new process: only the file remembers
    assert route.kernel_chosen("shape-a", lambda: pytest.fail("measured again"))
    assert calls == [1]
    (file,) = fresh_library.glob("*.routes.json")
    assert file.name.startswith(native.library_name(native._compiler()).removesuffix(".so"))
    file.chmod(0o666)  # writable by others: not believed
    route._decided.clear()
    assert not route.kernel_chosen("shape-a", lambda: {"kernel": 1.0, "torch": 1.0})


def test_a_close_call_is_measured_again_and_the_median_decides(fresh_library, monkeypatch):
    monkeypatch.delenv(route.FORCE_ENV, raising=False)
    monkeypatch.setattr(route, "_decided", {})
    timings = iter([{"kernel": 1.0, "torch": 0.9}, {"kernel": 1.0, "torch": 1.3}, {"kernel": 1.0, "torch": 1.25}])
    # a first timing taken under load says torch (0.9x), the next two say the kernel (1.3x, 1.25x)
    assert not route.kernel_chosen("shape-b", lambda: next(timings))
    route._decided.clear()  # a new process
    assert route.kernel_chosen("shape-b", lambda: next(timings))  # median of 0.9, 1.3: 1.1
    route._decided.clear()
    assert route.kernel_chosen("shape-b", lambda: next(timings))  # median of three: 1.25
    route._decided.clear()
    assert route.kernel_chosen("shape-b", lambda: pytest.fail("measured a settled shape again"))
    (file,) = fresh_library.glob("*.routes.json")
    assert json.loads(file.read_text())["shape-b"]["speedups"] == [0.9, 1.3, 1.25]
    # a clear margin settles at once; an old file's single speedup counts as one measurement
    assert route.settled([2.0]) and route.settled([0.5]) and not route.settled([1.2])
    assert route._speedups({"kernel": True, "speedup": 1.2}) == [1.2]
    assert route._speedups({"speedups": "junk"}) == [] and route._speedups(None) == []


def test_the_measurement_times_both_routes_interleaved():
    order = []
    seconds = route.time_routes(lambda: order.append("k"), lambda: order.append("t"), rounds=3)
    assert order == ["k", "t"] * 4  # one warm-up each, then alternating
    assert set(seconds) == {"kernel", "torch"}


def test_a_damaged_cached_kernel_is_rebuilt(fresh_library):
    # built by another process (this one must not have the file mapped when it is damaged)
    subprocess.run([sys.executable, "-c", "from fdrl import native; assert native.library() is not None"],
                   check=True, timeout=300)
    (built,) = fresh_library.glob("mlp_flow-*.so")
    built.write_bytes(b"\x7fELF truncated")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert native.library() is not None
    torch.manual_seed(0)
    net = MLP((2,), width=16, depth=2)
    x0 = torch.randn(8, 2)
    torch.testing.assert_close(_flow(net, x0, "lr-kl", KERNEL), _flow(net, x0, "lr-kl", FlowOptions()),
                               rtol=0, atol=1e-5)


def test_an_unwritable_cache_builds_in_a_temporary_folder(fresh_library, monkeypatch, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("FDRL_CACHE_DIR", str(blocker))
    assert native.library() is not None


def test_without_a_compiler_the_flow_warns_once_and_runs_on_torch(fresh_library, monkeypatch):
    monkeypatch.setattr(native, "_compiler", lambda: None)
    torch.manual_seed(0)
    net = MLP((2,), width=16, depth=2)
    x0 = torch.randn(8, 2)
    with pytest.warns(UserWarning, match="no C.. compiler"):
        kernel = _flow(net, x0, "lr-kl", KERNEL)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process, not once per flow
        _flow(net, x0, "lr-kl", KERNEL)
        with frozen(net):
            assert flow_route(ratio_potential(net, get_objective("lr-kl")), x0, KERNEL) == "autograd"
    torch.testing.assert_close(kernel, _flow(net, x0, "lr-kl", FlowOptions()), rtol=0, atol=1e-6)


def test_a_failing_compiler_warns_and_runs_on_torch(fresh_library, monkeypatch, tmp_path):
    fake = tmp_path / "broken-c++"
    fake.write_text("#!/bin/sh\necho 'fake compiler 1.0'\n[ \"$1\" = --version ] && exit 0\n"
                    "echo 'error: unsupported option' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CXX", str(fake))
    with pytest.warns(UserWarning, match="did not build.*unsupported option"):
        assert native.library() is None
