"""Native kernels the length-adaptive forward can use, compiled on first use.

Three, built into one module:

- a float32 GEMM for few rows (``small_gemm.cpp``): at batch 1 the layers that have dropped most
  tokens multiply a handful of rows by full-size weights, and on this class of CPU the BLAS path
  runs those calls at a fraction of its large-GEMM speed; and its bf16 twin
  (``small_gemm_bf16.cpp``, CPUs with AVX512-BF16): weights packed once in bf16, float32 sums;
  and the int8 one (``small_gemm_int8.cpp``, AVX512-VNNI): weights per output channel, each input
  row quantized at the call, int32 sums;
- the attention of a dropping layer in one call (``drop_attention.cpp``): significance, the kept
  slots and only the kept rows' context, where torch needs a dozen ops and as many passes over
  the (heads, n, n) probabilities;
- the selection of a dropping layer under the look-ahead probes (``probe_select.cpp``): the
  probe's GELU and output map, the start/end softmaxes and the top slots, where torch needs about
  ten dispatches per layer, each slower than its arithmetic.

They are what kept FLOPs savings from turning into latency. They are optional: without AVX-512,
a C++ compiler or ninja, or with ``DYNLEN_KERNELS=off``, the forward uses torch's own ops and
says so once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from types import ModuleType

import torch

SOURCES = tuple(
    Path(__file__).with_name(name)
    for name in (
        "small_gemm.cpp",
        "small_gemm_bf16.cpp",
        "small_gemm_int8.cpp",
        "drop_attention.cpp",
        "probe_select.cpp",
        "bindings.cpp",
    )
)
HEADERS = (Path(__file__).with_name("common.h"),)
SWITCH = "DYNLEN_KERNELS"


def _module_name() -> str:
    """The built module's name, with a digest of the sources: two checkouts (or versions) of dynlen on
    one machine each get their own build in torch's shared extension cache instead of replacing each
    other's, and a module built from other sources is never loaded."""
    digest = hashlib.sha256()
    for path in SOURCES + HEADERS:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return f"dynlen_kernels_{digest.hexdigest()[:12]}"


NAME = _module_name()


def unavailable_reason() -> str | None:
    """Why the kernel cannot be used on this machine, or None when it can."""
    if os.environ.get(SWITCH, "").lower() in {"0", "off", "no", "false"}:
        return f"disabled by {SWITCH}={os.environ[SWITCH]}"
    capability = torch.backends.cpu.get_cpu_capability()
    if capability != "AVX512":
        return f"needs an AVX-512 CPU (torch reports {capability})"
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return f"no C++ compiler {compiler!r} on PATH (install g++ or set CXX)"
    try:
        from torch.utils.cpp_extension import verify_ninja_availability

        verify_ninja_availability()
    except RuntimeError:
        return "ninja is not installed (pip install ninja)"
    return None


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX), as torch's CPU probe reports it."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def build_directory() -> Path:
    """Where torch's extension cache builds (and keeps) this version's module."""
    from torch.utils.cpp_extension import _get_build_directory

    return Path(_get_build_directory(NAME, verbose=False))


@contextmanager
def build_lock(directory: Path) -> Iterator[None]:
    """One build at a time per machine, under a lock the OS releases when its holder dies.

    torch's own build lock is a plain file that every later process waits on forever once a build
    is killed (Ctrl-C during the first run, a killed test): held by nobody while this lock is ours,
    so it is removed here.
    """
    try:
        import fcntl
    except ImportError:  # no POSIX locks: torch's own file lock alone
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "dynlen-build.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            (directory / "lock").unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def needs_compiling() -> bool:
    """Whether loading will compile: no built module in torch's extension cache, or one older than a source."""
    built = build_directory() / f"{NAME}.so"
    if not built.is_file():
        return True
    return built.stat().st_mtime < max(path.stat().st_mtime for path in SOURCES + HEADERS)


@contextmanager
def elapsed_bar(description: str) -> Iterator[None]:
    """A ticking elapsed-time line on stderr for a step whose length cannot be known in advance."""
    from tqdm import tqdm

    done = threading.Event()
    bar = tqdm(desc=description, bar_format="{desc}: {elapsed}", file=sys.stderr)

    def tick() -> None:
        while not done.wait(1.0):
            bar.refresh()

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        bar.close()


@cache
def native_kernels() -> ModuleType | None:
    """The compiled kernels module (built once per machine, then cached by torch), or None."""
    reason = unavailable_reason()
    if reason is None:
        try:
            from torch.utils.cpp_extension import load

            # -fopenmp: at::parallel_for is an OpenMP pragma in torch's headers; without it the
            # kernel would silently run on one thread whatever torch.set_num_threads says.
            options = dict(
                name=NAME,
                sources=[str(path) for path in SOURCES],
                extra_cflags=["-O3", "-mavx512f", "-mfma", "-fopenmp"],
                verbose=False,
            )
            with build_lock(build_directory()):
                if not needs_compiling():
                    return load(**options)
                with elapsed_bar("compiling the native kernels (once per machine, about a minute)"):
                    return load(**options)
        except Exception as exc:  # a failed build must not stop inference: torch's GEMM still works
            reason = f"build failed: {str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__}"
    print(f"note: native kernels off ({reason}); using torch's own ops", file=sys.stderr)
    return None
