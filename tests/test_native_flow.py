"""The fused C++ MLP flow (``fdrl.native``, ``FlowOptions.cpu_kernel``): the same particles as the
plain path for every pairing and MLP shape, the hand-derived gradient equal to autograd's, any
thread count giving the same bits, and a missing compiler or a damaged cache never breaking a
flow."""

import importlib
import subprocess
import sys
import warnings

import pytest
import torch

from fdrl import native
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
KERNEL = FlowOptions(cpu_kernel=True)


def _flow(net, x0, objective, options, steps=20, generator=None, **kwargs):
    with frozen(net):
        return flow(x0, ratio_potential(net, get_objective(objective)), steps, 0.05, 0.01,
                    generator if generator is not None else torch.Generator().manual_seed(1), options=options,
                    **kwargs)


@pytest.mark.parametrize("objective", list(OBJECTIVES))
@pytest.mark.parametrize("shape,width,depth,batch", SHAPES)
def test_kernel_particles_equal_the_plain_path(objective, shape, width, depth, batch):
    """20 noisy steps: the kernel's particles equal the plain (autograd) path's to float rounding
    (measured at most 2.2e-6 on drifts of 0.07-0.43)."""
    torch.manual_seed(0)
    net = MLP(shape, width=width, depth=depth)
    x0 = torch.randn(batch, *shape)
    plain = _flow(net, x0, objective, FlowOptions())
    with frozen(net):
        assert flow_route(ratio_potential(net, get_objective(objective)), x0, KERNEL) == "cpu_kernel"
    kernel = _flow(net, x0, objective, KERNEL)
    assert kernel.shape == x0.shape
    assert float((plain - x0).abs().max()) > 0.05  # the flow moved the particles
    torch.testing.assert_close(kernel, plain, rtol=0, atol=1e-5)


@pytest.mark.parametrize("objective", list(OBJECTIVES))
@pytest.mark.parametrize("spectral_norm", [False, True])
def test_one_kernel_step_is_minus_eta_times_the_autograd_gradient(objective, spectral_norm):
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


def test_default_route_takes_the_kernel_only_where_it_was_measured_to_gain():
    """Measured (README "Speed and scale"): AVX-512 builds gain at widths up to 256 whatever the
    inputs, AVX2 builds only up to width 64 with inputs no wider; wider nets keep the torch route."""
    toy, mnist, wide = MLP((2,), width=64, depth=3), MLP((784,), width=256, depth=3), MLP((2,), width=512, depth=2)
    default = FlowOptions.for_device("cpu")
    objective = get_objective("lsif-chi2")
    avx512 = native.runs_by_default() and native.library().fdrl_vector_bytes() == 64
    with frozen(toy), frozen(mnist), frozen(wide):
        assert flow_route(ratio_potential(toy, objective), torch.randn(4, 2), default) == (
            "cpu_kernel" if native.runs_by_default() else "closed_form")
        assert flow_route(ratio_potential(mnist, objective), torch.randn(4, 784), default) == (
            "cpu_kernel" if avx512 else "closed_form")
        assert flow_route(ratio_potential(wide, objective), torch.randn(4, 2), default) == "closed_form"
        # float64 particles, the switch off, or a potential that is not f'(MLP): the torch routes
        assert flow_route(ratio_potential(toy, objective), torch.randn(4, 2, dtype=torch.float64),
                          FlowOptions.for_device("cpu", cpu_kernel=True)) == "closed_form"
        assert flow_route(ratio_potential(toy, objective), torch.randn(4, 2),
                          FlowOptions.for_device("cpu", cpu_kernel=False)) == "closed_form"
        composed = lambda x: ratio_potential(toy, objective)(x) * 2  # noqa: E731
        assert flow_route(composed, torch.randn(4, 2), KERNEL) == "autograd"
    assert not FlowOptions.for_device("cuda").cpu_kernel


@pytest.fixture
def fresh_library(monkeypatch, tmp_path):
    """library() rebuilt from scratch in a temporary cache, and forgotten again afterwards."""
    monkeypatch.setenv("FDRL_CACHE_DIR", str(tmp_path / "cache"))
    native.library.cache_clear()
    yield tmp_path / "cache" / "kernels"
    native.library.cache_clear()


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
