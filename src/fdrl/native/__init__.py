"""The fused CPU flow for MLP estimators (``mlp_flow.cpp``): K steps of Eq. 9 in one call.

The C++ source ships with the package and is compiled on first use with the machine's C++
compiler (``-O3 -march=native``, no torch headers, about a second), cached under
``$FDRL_CACHE_DIR`` (default ``~/.cache/fdrl``) by a hash of the source, the compiler and the
CPU, and called through ctypes with the tensors' data pointers. Where no compiler runs, the
flow keeps its torch route (:func:`fdrl.flow.flow`), with a one-line notice.

The kernel computes what :func:`fdrl.nets.mlp.mlp_input_gradient` computes, for the four
pairings' potentials f'(NN) (Eq. 22-24), whose derivative in the network output is
``a + b * sigmoid(s * out)`` (:data:`OUTPUT_DERIVATIVE`); the particles equal the plain path's up
to float rounding (tests/test_native_flow.py).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

SOURCE = Path(__file__).with_name("mlp_flow.cpp")
FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-pthread")

#: phi'(out) = a + b * sigmoid(s * out) for phi = f' of each pairing, out = the network's output:
#: LSIF-chi2 2 (r - 1) -> 2; LR-KL out + 1 -> 1; LR-JS log 2 + LS(out) -> sigmoid(-out);
#: LR-logD 1 - LS(-out) -> sigmoid(out)
OUTPUT_DERIVATIVE: dict[str, tuple[float, float, float]] = {
    "lsif-chi2": (2.0, 0.0, 0.0),
    "lr-kl": (1.0, 0.0, 0.0),
    "lr-js": (0.0, 1.0, -1.0),
    "lr-logd": (0.0, 1.0, 1.0),
}

#: the widest MLP the kernel runs by default (``flow.cpu_kernel: null``), by the vector registers
#: it was built for (bytes); AVX2 builds also need inputs no wider than the width. Measured per
#: flow step against the compiled torch route, one thread, on an AVX-512 CPU with both builds
#: (``benchmarks/cpu_kernel_shapes.py --march native x86-64-v3``, README "Speed and scale"):
#: AVX-512 faster at every shape tried (widths 32-256, inputs 2-784); AVX2 faster at widths <= 64,
#: within +-10% of torch at 128 and slower at 256. Not measured on a CPU with AVX2 alone or
#: elsewhere than x86-64.
DEFAULT_MAX_WIDTH = {64: 256, 32: 64}


def cache_dir() -> Path:
    """Where compiled kernels are kept: ``$FDRL_CACHE_DIR/kernels`` or ``~/.cache/fdrl/kernels``."""
    root = os.environ.get("FDRL_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "fdrl")
    return Path(root) / "kernels"


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        path = shutil.which(name) if name else None
        if path:
            return path
    return None


def _cpu_signature() -> str:
    """The CPU the build targets (-march=native): its flags line on Linux, else the platform."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() + platform.machine()


def _build(compiler: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        built = Path(scratch) / target.name
        subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", str(built)], check=True, capture_output=True,
                       text=True, timeout=300)
        os.replace(built, target)  # atomic: concurrent processes (torchrun ranks) never see half a file


def _load(compiler: str, target: Path) -> ctypes.CDLL:
    """The library at ``target``, built there if missing or damaged (unloadable), or in a
    temporary folder if the cache cannot be written."""
    try:
        if target.exists():
            try:
                return ctypes.CDLL(str(target))
            except OSError:  # a damaged or truncated cache file: build it again
                pass
        _build(compiler, target)
    except OSError:  # cache folder not writable (or not a folder)
        target = Path(tempfile.mkdtemp(prefix="fdrl-kernels-")) / target.name
        _build(compiler, target)
    return ctypes.CDLL(str(target))


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernel, built on first use; ``None`` (with one warning) where it cannot be."""
    compiler = _compiler()
    if compiler is None:
        warnings.warn("no C++ compiler found (c++, g++, clang++ or $CXX): the CPU MLP flow runs on torch")
        return None
    try:
        version = subprocess.run([compiler, "--version"], check=True, capture_output=True, text=True,
                                 timeout=60).stdout
        key = hashlib.sha256("\0".join([SOURCE.read_text(), version, " ".join(FLAGS), _cpu_signature()])
                             .encode()).hexdigest()[:16]
        lib = _load(compiler, cache_dir() / f"mlp_flow-{key}.so")
    except Exception as err:  # compiler fails, -march=native unsupported, damaged cache file, ...
        failed = err.stderr if isinstance(err, subprocess.CalledProcessError) and err.stderr else str(err)
        detail = failed.strip().splitlines()[0] if failed.strip() else ""
        warnings.warn(f"the CPU MLP flow kernel did not build ({type(err).__name__}: {detail}); "
                      "the flow runs on torch")
        return None
    return bind(lib)


def bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Declare the C signatures of a loaded build of ``mlp_flow.cpp`` (any ``-march``)."""
    pointer, integer, real = ctypes.c_void_p, ctypes.c_int, ctypes.c_float
    lib.fdrl_mlp_flow.restype = None
    lib.fdrl_mlp_flow.argtypes = [pointer, integer, integer, integer, pointer, real, real, integer, integer,
                                  pointer, pointer, pointer, pointer, real, real, real, real, real, integer]
    lib.fdrl_vector_bytes.restype = integer
    return lib


def runs_by_default() -> bool:
    """Whether ``flow.cpu_kernel: null`` may pick the kernel here: an x86-64 CPU with AVX (where it
    was measured) and a kernel that builds."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    lib = library()
    return lib is not None and lib.fdrl_vector_bytes() >= 32


def supports(objective_name: str, weights: Sequence[Tensor], x: Tensor) -> bool:
    """Whether the kernel computes this flow: fp32 CPU particles and a pairing it knows."""
    return (objective_name in OUTPUT_DERIVATIVE and x.device.type == "cpu" and x.dtype == torch.float32
            and all(w.device.type == "cpu" and w.dtype == torch.float32 for w in weights))


def suits_by_default(weights: Sequence[Tensor]) -> bool:
    """The shapes measured to gain here (:data:`DEFAULT_MAX_WIDTH`): width <= 256 with AVX-512,
    input features <= width <= 64 with AVX2."""
    lib = library()
    if lib is None:
        return False
    width, features = weights[0].shape
    vector_bytes = lib.fdrl_vector_bytes()
    return width <= DEFAULT_MAX_WIDTH.get(vector_bytes, 0) and (vector_bytes >= 64 or features <= width)


class PackedMLP:
    """An MLP's layers laid out for the kernel: hidden width zero-padded to whole vector
    registers (padded units have zero weights and bias, so they stay 0 and change nothing),
    each weight also transposed. Built once per flow: the weights are fixed during it."""

    def __init__(self, weights: Sequence[Tensor], biases: Sequence[Tensor], negative_slope: float):
        lanes = library().fdrl_vector_bytes() // 4
        width, features = weights[0].shape
        padded = -(-width // lanes) * lanes

        def pad(t: Tensor, rows: int, cols: int) -> Tensor:
            out = torch.zeros(rows, cols)
            out[: t.shape[0], : t.shape[1]] = t.detach()
            return out

        first = pad(weights[0], padded, features)
        hidden = [pad(m, padded, padded) for m in weights[1:-1]]
        # the first layer's weight also row-major with whole vectors of inputs (the kernel's
        # input-gradient product, for inputs at least one vector wide)
        wide_first = pad(weights[0], padded, -(-features // lanes) * lanes)
        self._tensors = ([m.t().contiguous() for m in [first, *hidden]] + [wide_first, *hidden]
                         + [pad(b[:, None], padded, 1).squeeze(1) for b in biases[:-1]]
                         + [pad(weights[-1].t(), padded, 1).squeeze(1)])
        layers = len(weights) - 1
        self._arrays = [(ctypes.c_void_p * layers)(*[t.data_ptr() for t in part]) for part in
                        (self._tensors[:layers], self._tensors[layers:2 * layers],
                         self._tensors[2 * layers:3 * layers])]
        self.layers, self.width, self.features = layers, padded, features
        self.out_weight, self.out_bias = self._tensors[-1], float(biases[-1].detach())
        self.negative_slope = negative_slope

    def flow(self, x: Tensor, objective_name: str, xis: Sequence[Tensor] | None, count: int, eta: float,
             noise: float) -> Tensor:
        """``count`` steps of Eq. 9 from ``x`` (not changed) with the draws ``xis`` (``None``: no noise)."""
        out = x.detach().reshape(x.shape[0], -1).to(torch.float32, copy=True).contiguous()
        draws = torch.stack([xi.reshape(out.shape) for xi in xis]).contiguous() if xis is not None else None
        a, b, s = OUTPUT_DERIVATIVE[objective_name]
        library().fdrl_mlp_flow(
            out.data_ptr(), out.shape[0], self.features, count, draws.data_ptr() if draws is not None else None,
            eta, noise if draws is not None else 0.0, self.layers, self.width, *self._arrays,
            self.out_weight.data_ptr(), self.out_bias, self.negative_slope, a, b, s, torch.get_num_threads())
        return out.reshape(x.shape)
