"""The fused CPU flow for MLP estimators (``mlp_flow.cpp``): K steps of Eq. 9 in one call.

The C++ source ships with the package and is compiled on first use with the machine's C++
compiler (``-O3 -march=native``, no torch headers, about a second), cached under
``$FDRL_CACHE_DIR`` (default ``~/.cache/fdrl``) by a hash of the source, the compiler, the flags
and the instruction set the compiler targets (its predefined macros under ``-march=native``), and
called through ctypes with the tensors' data pointers. Where no compiler runs, the flow keeps its
torch route (:func:`fdrl.flow.flow`), with a one-line notice.

Only code this user built is loaded: the cache folders are created 0700, and a cached library is
loaded only if it and every folder from the cache root down are owned by this user and writable by
no one else; otherwise the kernel is built in a private temporary folder (one warning), which is
removed once the library is loaded. Which shapes take the kernel by default is measured on the
user's machine (:mod:`fdrl.native.route`).

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
import stat
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

#: the functions a build of ``mlp_flow.cpp`` exports; a library without them is a damaged one
SYMBOLS = ("fdrl_mlp_flow", "fdrl_vector_bytes")
#: the largest count the kernel's ``int`` parameters hold (rows, features, widths, steps)
C_INT_MAX = 2**31 - 1
#: what ``fdrl_mlp_flow``'s non-zero return codes mean
FAILURES = {1: "out of memory", 2: "an internal error"}


def cache_root() -> Path:
    """The cache root: ``$FDRL_CACHE_DIR``, else ``$XDG_CACHE_HOME/fdrl`` or ``~/.cache/fdrl``."""
    root = os.environ.get("FDRL_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "fdrl")
    return Path(root)


def cache_dir() -> Path:
    """Where compiled kernels are kept: ``kernels`` under :func:`cache_root`."""
    return cache_root() / "kernels"


def is_private(path: Path) -> bool:
    """Whether ``path`` (not a symlink) is owned by this user and writable by no one else, so that
    no other user can have put or changed what it holds. Without POSIX owners (Windows): never."""
    if not hasattr(os, "getuid"):
        return False
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return (not stat.S_ISLNK(info.st_mode) and info.st_uid == os.getuid()
            and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def private_cache() -> Path | None:
    """:func:`cache_dir`, created 0700 where missing, if it and the cache root are private
    (:func:`is_private`); ``None`` if either is not, or cannot be created."""
    root, kernels = cache_root(), cache_dir()
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        for folder in (root, kernels):
            if not folder.exists():
                folder.mkdir(mode=0o700)
    except OSError:
        return None
    return kernels if is_private(root) and is_private(kernels) else None


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        path = shutil.which(name) if name else None
        if path:
            return path
    return None


def target_signature(compiler: str, march: str = "native") -> str:
    """The instruction set ``compiler`` targets with ``-march=march``: its predefined macros
    (``__AVX2__``, ``__AVX512F__``, ...), one per line, sorted. Two CPUs with the same signature get
    the same code from the same source and flags, whatever the OS."""
    macros = subprocess.run([compiler, f"-march={march}", "-dM", "-E", "-x", "c++", os.devnull], check=True,
                            capture_output=True, text=True, timeout=60).stdout
    return "\n".join(sorted(macros.splitlines()))


def library_name(compiler: str) -> str:
    """The cached library's file name: a hash of the source, the compiler, the flags and
    :func:`target_signature`."""
    version = subprocess.run([compiler, "--version"], check=True, capture_output=True, text=True,
                             timeout=60).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), version, " ".join(FLAGS), target_signature(compiler)])
                         .encode()).hexdigest()[:16]
    return f"mlp_flow-{key}.so"


def _flags(march: str, extra: Sequence[str]) -> list[str]:
    return [f"-march={march}" if f.startswith("-march=") else f for f in FLAGS] + list(extra)


def _compile_and_load(compiler: str, folder: Path, march: str, extra: Sequence[str]) -> tuple[ctypes.CDLL, Path]:
    """Compile into a new file in ``folder`` and load it (bound: :func:`bind`); the file's path.
    Loaded under a name no earlier library had: the loader hands back an already loaded library
    of the same name, which may be the damaged one being replaced."""
    fd, built = tempfile.mkstemp(prefix=".mlp_flow-", suffix=".so", dir=folder)
    os.close(fd)
    try:
        subprocess.run([compiler, *_flags(march, extra), str(SOURCE), "-o", built], check=True,
                       capture_output=True, text=True, timeout=300)
        os.chmod(built, 0o755)  # not the umask's group write: is_private must accept it next time
        return bind(ctypes.CDLL(built)), Path(built)
    except BaseException:
        Path(built).unlink(missing_ok=True)
        raise


def build_private(march: str = "native", extra_flags: Sequence[str] = ()) -> ctypes.CDLL:
    """The kernel built with ``-march=march`` (and ``extra_flags``) in a private temporary
    folder (0700, ``fdrl-kernels-*``), loaded, and the folder removed (the loaded library stays
    mapped)."""
    compiler = _compiler()
    if compiler is None:
        raise OSError("no C++ compiler found (c++, g++, clang++ or $CXX)")
    folder = Path(tempfile.mkdtemp(prefix="fdrl-kernels-"))
    try:
        return _compile_and_load(compiler, folder, march, extra_flags)[0]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _load_cached(compiler: str, target: Path) -> ctypes.CDLL:
    """The library at ``target`` in the private cache folder, if it is private and whole (loads,
    exports :data:`SYMBOLS`); else built again and put there atomically (concurrent processes,
    torchrun ranks, never see half a file)."""
    if is_private(target):
        try:
            return bind(ctypes.CDLL(str(target)))
        except (OSError, AttributeError):  # damaged, truncated, or not our library: built again
            pass
    lib, built = _compile_and_load(compiler, target.parent, "native", ())
    try:
        os.replace(built, target)
    except OSError:
        built.unlink(missing_ok=True)
    return lib


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernel, built on first use; ``None`` (with one warning) where it cannot be."""
    compiler = _compiler()
    if compiler is None:
        warnings.warn("no C++ compiler found (c++, g++, clang++ or $CXX): the CPU MLP flow runs on torch")
        return None
    try:
        folder = private_cache()
        if folder is None:
            warnings.warn(f"the kernel cache {cache_dir()} is not private to this user (it or {cache_root()} "
                          "is writable by others, owned by someone else, or not a folder): building the CPU MLP "
                          "flow kernel in a temporary folder; chmod 700 both, or set FDRL_CACHE_DIR")
            return build_private()
        return _load_cached(compiler, folder / library_name(compiler))
    except Exception as err:  # compiler fails, -march=native unsupported, no symbols after a rebuild, ...
        failed = err.stderr if isinstance(err, subprocess.CalledProcessError) and err.stderr else str(err)
        detail = failed.strip().splitlines()[0] if failed.strip() else ""
        warnings.warn(f"the CPU MLP flow kernel did not build ({type(err).__name__}: {detail}); "
                      "the flow runs on torch")
        return None


def bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Declare the C signatures of a loaded build of ``mlp_flow.cpp`` (any ``-march``);
    AttributeError if it lacks one of :data:`SYMBOLS`."""
    pointer, integer, real = ctypes.c_void_p, ctypes.c_int, ctypes.c_float
    lib.fdrl_mlp_flow.restype = integer
    lib.fdrl_mlp_flow.argtypes = [pointer, integer, integer, integer, pointer, real, real, integer, integer,
                                  pointer, pointer, pointer, pointer, real, real, real, real, real, integer]
    lib.fdrl_vector_bytes.restype = integer
    lib.fdrl_vector_bytes.argtypes = []
    return lib


def runs_by_default() -> bool:
    """Whether ``flow.cpu_kernel: null`` may pick the kernel here at all: an x86-64 CPU (where it
    was tested) and a kernel that builds; which shapes take it is measured
    (:mod:`fdrl.native.route`)."""
    return platform.machine().lower() in ("x86_64", "amd64") and library() is not None


def supports(objective_name: str, weights: Sequence[Tensor], x: Tensor) -> bool:
    """Whether the kernel computes this flow: fp32 CPU particles and a pairing it knows."""
    return (objective_name in OUTPUT_DERIVATIVE and x.device.type == "cpu" and x.dtype == torch.float32
            and all(w.device.type == "cpu" and w.dtype == torch.float32 for w in weights))


def _within_c_int(**counts: int) -> None:
    for name, value in counts.items():
        if value > C_INT_MAX:
            raise ValueError(f"{name} {value} exceeds the CPU MLP flow kernel's limit {C_INT_MAX}; "
                             "flow fewer or smaller batches, or set flow.cpu_kernel=false")


class PackedMLP:
    """An MLP's layers laid out for the kernel: hidden width zero-padded to whole vector
    registers (padded units have zero weights and bias, so they stay 0 and change nothing),
    each weight also transposed. Built once per flow: the weights are fixed during it."""

    def __init__(self, weights: Sequence[Tensor], biases: Sequence[Tensor], negative_slope: float,
                 lib: ctypes.CDLL | None = None):
        self._lib = lib or library()
        if self._lib is None:
            raise RuntimeError("the CPU MLP flow kernel is not available here (see the warning); "
                               "set flow.cpu_kernel=false")
        lanes = self._lib.fdrl_vector_bytes() // 4
        width, features = weights[0].shape
        padded = -(-width // lanes) * lanes
        _within_c_int(**{"input features": -(-features // lanes) * lanes, "width": padded,
                         "layers": len(weights)})

        def pad(t: Tensor, rows: int, cols: int) -> Tensor:
            # float32 whatever torch's default dtype: the kernel reads floats
            out = torch.zeros(rows, cols, dtype=torch.float32)
            out[: t.shape[0], : t.shape[1]] = t.detach().to("cpu", torch.float32)
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
        """``count`` steps of Eq. 9 from ``x`` (not changed) with the draws ``xis`` (``None``: no noise),
        each shaped like ``x``. ValueError if a row of ``x`` is not the MLP's input, if a draw is not
        shaped like ``x``, or if a count exceeds the kernel's ``int``."""
        rows = x.shape[0] if x.ndim else 0
        features = x[0].numel() if rows else self.features
        if x.ndim < 2 or features != self.features:
            raise ValueError(f"particles of shape {tuple(x.shape)} have {features if x.ndim >= 2 else 'no'} "
                             f"features per row, but the MLP's first layer takes {self.features}; flow samples "
                             "shaped like the training data")
        if xis is not None and (len(xis) != count or any(xi.shape != x.shape for xi in xis)):
            raise ValueError(f"the kernel needs {count} noise draws shaped {tuple(x.shape)}, got "
                             f"{[tuple(xi.shape) for xi in xis]}")
        _within_c_int(rows=rows, steps=count)
        out = x.detach().to("cpu", torch.float32).reshape(rows, features).clone(memory_format=torch.contiguous_format)
        draws = None if xis is None else torch.stack(
            [xi.detach().to("cpu", torch.float32).reshape(rows, features) for xi in xis]).contiguous()
        a, b, s = OUTPUT_DERIVATIVE[objective_name]
        status = self._lib.fdrl_mlp_flow(
            out.data_ptr(), rows, self.features, count, draws.data_ptr() if draws is not None else None,
            eta, noise if draws is not None else 0.0, self.layers, self.width, *self._arrays,
            self.out_weight.data_ptr(), self.out_bias, self.negative_slope, a, b, s,
            min(torch.get_num_threads(), C_INT_MAX))
        if status:
            raise RuntimeError(f"the CPU MLP flow kernel failed ({FAILURES.get(status, f'code {status}')}); "
                               "set flow.cpu_kernel=false to run the flow on torch")
        return out.reshape(x.shape)
