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

import torch
from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension


def want_cuda() -> bool:
    flag = os.environ.get("FASTWNLL_CUDA", "auto").strip().lower()
    available = CUDA_HOME is not None and torch.version.cuda is not None
    if flag in ("0", "off", "false", "no"):
        return False
    if flag in ("1", "on", "true", "yes"):
        if not available:
            raise RuntimeError(
                "FASTWNLL_CUDA=1 but no CUDA toolchain was found "
                f"(CUDA_HOME={CUDA_HOME!r}, torch.version.cuda={torch.version.cuda!r})"
            )
        return True
    if flag != "auto":
        raise RuntimeError(f"FASTWNLL_CUDA must be auto, 0 or 1, got {flag!r}")
    return available


def extension():
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    cxx = ["-O3"]
    if want_cuda():
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0"
        return CUDAExtension(
            "fastwnll._C",
            sources + sorted(glob.glob("csrc/cuda/*.cu")),
            define_macros=[("FASTWNLL_WITH_CUDA", "1")],
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3"]},
        )
    return CppExtension("fastwnll._C", sources, extra_compile_args={"cxx": cxx})


setup(
    packages=find_packages(include=["fastwnll", "fastwnll.*"]) + ["fastwnll.kernels"],
    package_dir={"fastwnll": "fastwnll", "fastwnll.kernels": "kernels"},
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
