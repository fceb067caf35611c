"""Build script for the compiled extension ``fastwnll._C``.

Project metadata lives in ``pyproject.toml``; this file only declares the extension, because its
sources depend on the toolchain found at build time.

Environment switches:
  FASTWNLL_CUDA=auto (default) build the CUDA sources when nvcc (CUDA_HOME) and a CUDA build of
                     torch are both present; =1 forces them (and fails loudly if impossible);
                     =0 builds the CPU code only.
  TORCH_CUDA_ARCH_LIST  CUDA architectures; defaults to "8.0;9.0" when no GPU is visible.
"""
import glob
import os
import sys

import torch
from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension


def cuda_toolkit_found() -> bool:
    """torch guessed a CUDA_HOME that really holds a toolkit (headers and cudart), and torch is a CUDA build.

    torch derives CUDA_HOME from the first ``nvcc`` on PATH; a wrapper script such as
    ``/usr/local/bin/nvcc`` makes it guess ``/usr/local``, which has no CUDA headers.
    """
    if CUDA_HOME is None or torch.version.cuda is None:
        return False
    return os.path.isfile(os.path.join(CUDA_HOME, "include", "cuda_runtime.h"))


def want_cuda() -> bool:
    flag = os.environ.get("FASTWNLL_CUDA", "auto").strip().lower()
    available = cuda_toolkit_found()
    if flag in ("0", "off", "false", "no"):
        return False
    if flag in ("1", "on", "true", "yes"):
        if not available:
            raise RuntimeError(
                "FASTWNLL_CUDA=1 but no CUDA toolkit was found "
                f"(CUDA_HOME={CUDA_HOME!r} without include/cuda_runtime.h, or torch.version.cuda="
                f"{torch.version.cuda!r}); set CUDA_HOME to the toolkit, e.g. /usr/local/cuda"
            )
        return True
    if flag != "auto":
        raise RuntimeError(f"FASTWNLL_CUDA must be auto, 0 or 1, got {flag!r}")
    if not available:
        print(f"fastwnll: no usable CUDA toolkit (CUDA_HOME={CUDA_HOME!r}); building the CPU code only")
    return available


def extension():
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    # at::parallel_for is inline OpenMP code: without -fopenmp it silently runs on one thread. The
    # extension then shares torch's libgomp (same soname, already loaded by libtorch_cpu).
    openmp = [] if sys.platform in ("win32", "darwin") else ["-fopenmp"]
    cxx = ["-O3"] + openmp
    if want_cuda():
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0"
        return CUDAExtension(
            "fastwnll._C",
            sources + sorted(glob.glob("csrc/cuda/*.cu")),
            define_macros=[("FASTWNLL_WITH_CUDA", "1")],
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3"]},
            extra_link_args=openmp,
        )
    return CppExtension("fastwnll._C", sources, extra_compile_args={"cxx": cxx}, extra_link_args=openmp)


setup(
    packages=find_packages(include=["fastwnll", "fastwnll.*"]) + ["fastwnll.kernels"],
    package_dir={"fastwnll": "fastwnll", "fastwnll.kernels": "kernels"},
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
