"""The CPU kernel's loading and calling are safe: no library is loaded that this user did not build
(a planted one in a folder or file others can write is never opened), a library built for another
instruction set is not reused, a library without the kernel's symbols is rebuilt, no temporary
build folder is left behind, a thread that cannot be created costs speed and not the process, and
a sanitizer build (AddressSanitizer + UndefinedBehaviorSanitizer) runs the shape set clean."""

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

from fdrl import native
from fdrl.flow import FlowOptions, flow, frozen, ratio_potential
from fdrl.nets import MLP
from fdrl.objectives import get_objective

pytestmark = pytest.mark.skipif(native.library() is None, reason="no C++ compiler builds the kernel here")

KERNEL = FlowOptions(cpu_kernel=True)
SRC = str(Path(native.__file__).parents[2])


def _compile(source: str, target: Path, language: str = "c", extra: tuple[str, ...] = ()) -> Path:
    src = target.with_suffix(f".{language}")
    src.write_text(textwrap.dedent(source))
    subprocess.run([native._compiler(), "-x", language, "-shared", "-fPIC", *extra, str(src), "-o", str(target)],
                   check=True, capture_output=True, timeout=120)
    return target


def _flows_right() -> None:
    """A kernel flow equals the plain path's (a planted library returning unmoved particles would not)."""
    torch.manual_seed(0)
    net = MLP((2,), width=16, depth=2)
    x0 = torch.randn(8, 2)
    results = []
    for options in (KERNEL, FlowOptions()):
        with frozen(net):
            results.append(flow(x0, ratio_potential(net, get_objective("lr-kl")), 10, 0.1, 0.01,
                                torch.Generator().manual_seed(1), options=options))
    assert float((results[1] - x0).abs().max()) > 0.02
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=1e-5)


def _plant(folder: Path, marker: Path) -> Path:
    """A library under the name library() looks for, whose constructor writes ``marker`` and
    whose 'kernel' leaves the particles where they are."""
    folder.mkdir(parents=True, exist_ok=True)
    return _compile(f"""
        #include <stdio.h>
        __attribute__((constructor)) static void planted(void) {{
          FILE* f = fopen("{marker}", "w"); if (f) fclose(f);
        }}
        int fdrl_vector_bytes(void) {{ return 16; }}
        int fdrl_mlp_flow(void) {{ return 0; }}
    """, folder / native.library_name(native._compiler()))


@pytest.mark.parametrize("writable", ["cache root", "kernels folder", "library file"])
def test_a_planted_library_where_others_can_write_is_never_loaded(fresh_library, tmp_path, writable):
    marker = tmp_path / "planted-ran"
    planted = _plant(fresh_library, marker)
    target = {"cache root": fresh_library.parent, "kernels folder": fresh_library, "library file": planted}[writable]
    target.chmod(0o777 if target.is_dir() else 0o775)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert native.library() is not None
        _flows_right()
    assert not marker.exists()
    private_folder = writable == "library file"  # the file alone: rebuilt in place, no warning
    assert any("not private" in str(w.message) for w in caught) != private_folder


def test_the_cache_folders_are_created_private(fresh_library):
    assert native.library() is not None
    for folder in (fresh_library.parent, fresh_library):
        assert folder.stat().st_mode & 0o777 == 0o700
    (built,) = fresh_library.glob("mlp_flow-*.so")
    assert not built.stat().st_mode & 0o022


def test_a_library_built_for_another_instruction_set_is_not_reused(fresh_library, monkeypatch):
    """The cache key includes the instruction set the compiler targets: another one (as a shared
    home seen from another CPU) builds its own library instead of loading this one."""
    real = native.target_signature
    monkeypatch.setattr(native, "target_signature", lambda compiler, march="native": real(compiler) + "\n#define A")
    assert native.library() is not None
    (first,) = fresh_library.glob("mlp_flow-*.so")
    native.library.cache_clear()
    monkeypatch.setattr(native, "target_signature", lambda compiler, march="native": real(compiler) + "\n#define B")
    assert native.library() is not None
    assert len(list(fresh_library.glob("mlp_flow-*.so"))) == 2
    assert first.exists()
    _flows_right()


def test_a_loadable_library_without_the_kernel_is_rebuilt(fresh_library):
    fresh_library.mkdir(parents=True, mode=0o700)
    fresh_library.parent.chmod(0o700)
    _compile("int something_else(void) { return 1; }", fresh_library / native.library_name(native._compiler()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert native.library() is not None
    _flows_right()


@pytest.mark.parametrize("compiler_works", [True, False])
def test_no_temporary_build_folder_is_left_behind(fresh_library, monkeypatch, tmp_path, compiler_works):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setenv("FDRL_CACHE_DIR", str(tmp_path / "shared"))
    (tmp_path / "shared").mkdir(mode=0o777)
    (tmp_path / "shared").chmod(0o777)  # not private: built in a temporary folder
    if not compiler_works:
        fake = tmp_path / "broken-c++"
        fake.write_text("#!/bin/sh\n[ \"$1\" = --version ] && exit 0\ncase \"$*\" in *-dM*) exit 0;; esac\n"
                        "echo 'error: no' >&2\nexit 1\n")
        fake.chmod(0o755)
        monkeypatch.setenv("CXX", str(fake))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert (native.library() is not None) == compiler_works
    assert list(scratch.glob("fdrl-kernels-*")) == []


SHIM = """
    #define _GNU_SOURCE
    #include <dlfcn.h>
    #include <errno.h>
    #include <pthread.h>
    static int fail;
    void fdrl_test_fail_threads(int on) { fail = on; }
    int pthread_create(pthread_t* t, const pthread_attr_t* a, void* (*f)(void*), void* arg) {
      static int (*real)(pthread_t*, const pthread_attr_t*, void* (*)(void*), void*);
      if (fail) return EAGAIN;
      if (!real) *(void**)&real = dlsym(RTLD_NEXT, "pthread_create");
      return real(t, a, f, arg);
    }
"""

THREADS_FAIL = """
import ctypes, sys, torch
from fdrl.flow import FlowOptions, flow, frozen, ratio_potential
from fdrl.nets import MLP
from fdrl.objectives import get_objective
torch.manual_seed(0)
net = MLP((8,), width=32, depth=2)
x0 = torch.randn(301, 8)
def run(threads):
    torch.set_num_threads(threads)
    with frozen(net):
        return flow(x0, ratio_potential(net, get_objective("lr-js")), 5, 0.1, 0.01,
                    torch.Generator().manual_seed(1), options=FlowOptions(cpu_kernel=True))
expected = run(1)
ctypes.CDLL(sys.argv[1]).fdrl_test_fail_threads(1)  # from here on no thread can be created
got = run(4)
assert torch.equal(got, expected), "rows of the failed threads differ"
print("survived")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD interposition")
def test_a_thread_that_cannot_be_created_runs_its_rows_inline(tmp_path):
    """pthread_create failing (EAGAIN, as under a process limit) while the kernel starts its
    threads: the flow finishes with the same bits on the calling thread, no abort."""
    shim = _compile(SHIM, tmp_path / "fail_threads.so", extra=("-ldl",))
    env = {**os.environ, "LD_PRELOAD": str(shim), "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", THREADS_FAIL, str(shim)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "survived" in done.stdout


SANITIZED = """
import ctypes, json, sys, torch
from fdrl import native
lib = native.build_private("native", ("-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                                      "-fno-omit-frame-pointer", "-g", "-O1"))
native.library = lambda: lib
from fdrl.flow import FlowOptions, flow, frozen, ratio_potential
from fdrl.nets import MLP
from fdrl.objectives import OBJECTIVES, get_objective
if sys.argv[1] == "overflow":  # the control: 5 x 2 particles into a 3-input MLP, past the checks
    net = MLP((3,), width=16, depth=2)
    packed = native.PackedMLP(*net.weights_and_biases(), net.negative_slope)
    x = torch.randn(5, 2)
    lib.fdrl_mlp_flow(x.data_ptr(), 5, 3, 1, None, 0.1, 0.0, packed.layers, packed.width, *packed._arrays,
                      packed.out_weight.data_ptr(), packed.out_bias, 0.2, 1.0, 0.0, 0.0, 1)
    sys.exit(0)
torch.manual_seed(0)
for shape, width, depth, batch in json.loads(sys.argv[1]):
    net = MLP(tuple(shape), width=width, depth=depth)
    x0 = torch.randn(batch, *shape)
    x0[batch // 2].view(-1)[0] = float("nan")
    for objective in OBJECTIVES:
        for threads, noise in ((1, 0.01), (3, 0.0)):
            torch.set_num_threads(threads)
            with frozen(net):
                runs = [flow(x0, ratio_potential(net, get_objective(objective)), 7, 0.05, noise,
                             torch.Generator().manual_seed(1), options=options, trajectory=[], record_every=3)
                        for options in (FlowOptions(cpu_kernel=True), FlowOptions())]
            torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=1e-5, equal_nan=True)
print("clean")
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD of the sanitizer runtime")
def test_a_sanitizer_build_runs_the_shape_set_clean():
    """The kernel built with AddressSanitizer + UndefinedBehaviorSanitizer (any report aborts),
    run in a Python process with the ASan runtime preloaded, over the correctness tests' shapes
    (NaN row, noise or none, 1 or 3 threads, every pairing): no report, the plain path's particles.
    A control call past the input checks (too few features) must be reported, so the sanitizer is
    known to be live."""
    from test_native_flow import ODD_SHAPES, SHAPES

    asan = subprocess.run([native._compiler(), "-print-file-name=libasan.so"], capture_output=True, text=True,
                          check=True).stdout.strip()
    if not os.path.isabs(asan):
        pytest.skip("the compiler has no AddressSanitizer runtime")
    env = {**os.environ, "LD_PRELOAD": asan, "ASAN_OPTIONS": "detect_leaks=0", "PYTHONPATH": SRC,
           "OMP_NUM_THREADS": "1"}

    def run(arg: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", SANITIZED, arg], env=env, capture_output=True, text=True,
                              timeout=600)

    control = run("overflow")
    assert control.returncode != 0 and "heap-buffer-overflow" in control.stderr
    done = run(json.dumps(SHAPES + ODD_SHAPES))
    assert done.returncode == 0 and "clean" in done.stdout, done.stderr[-3000:]
