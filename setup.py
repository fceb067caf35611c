"""Build script for the compiled extension ``fastwnll._C``.

Project metadata lives in ``pyproject.toml``; this file only declares the extension, because its
sources depend on the toolchain found at build time.

Environment switches:
  FASTWNLL_CUDA=auto (default) build the CUDA sources when a CUDA toolkit and a CUDA build of torch
                     are both present; =1 forces them (and fails loudly if impossible);
                     =0 builds the CPU code only.
  CUDA_HOME / CUDA_PATH  where the CUDA toolkit is; when neither holds one, torch's guess (from the
                     first ``nvcc`` on PATH) and /usr/local/cuda are tried.
  TORCH_CUDA_ARCH_LIST  CUDA architectures; defaults to "8.0;9.0+PTX" when no GPU is visible (PTX
                     for 9.0 lets newer GPUs run the kernels through the driver's JIT).

The decision (CUDA kernels built or not, and why) is printed, and written to
``fastwnll/_build_config.py`` so that ``fastwnll info`` reports it even when pip hides the build
output.
"""

import glob
import os
import sys

import torch
import torch.utils.cpp_extension as cpp_extension
from setuptools import find_packages, setup
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCH_LIST = "8.0;9.0+PTX"


def is_toolkit(path) -> bool:
    """``path`` holds a CUDA toolkit: the runtime headers and nvcc."""
    return (
        bool(path)
        and os.path.isfile(os.path.join(path, "include", "cuda_runtime.h"))
        and os.path.isfile(os.path.join(path, "bin", "nvcc"))
    )


def find_cuda_home(environ=os.environ, torch_guess=cpp_extension.CUDA_HOME):
    """``(toolkit path or None, places looked at)``: the first of ``$CUDA_HOME``, ``$CUDA_PATH``,
    torch's guess and ``/usr/local/cuda`` that holds a toolkit.

    torch derives its guess from the first ``nvcc`` on PATH; a wrapper script such as
    ``/usr/local/bin/nvcc`` makes it guess ``/usr/local``, which has no CUDA headers.
    """
    candidates = [environ.get("CUDA_HOME"), environ.get("CUDA_PATH"), torch_guess, "/usr/local/cuda"]
    looked = []
    for path in candidates:
        if path and path not in looked:
            looked.append(path)
            if is_toolkit(path):
                return path, looked
    return None, looked


def cuda_decision(flag: str, toolkit, looked, torch_cuda):
    """``(build CUDA?, reason)`` for ``FASTWNLL_CUDA=flag``; raises RuntimeError when ``flag`` forces
    a CUDA build that cannot happen, or is not one of auto/0/1."""
    flag = flag.strip().lower()
    if flag in ("0", "off", "false", "no"):
        return False, "not built: FASTWNLL_CUDA=0"
    if flag not in ("1", "on", "true", "yes", "auto"):
        raise RuntimeError(f"FASTWNLL_CUDA must be auto, 0 or 1, got {flag!r}")
    if torch_cuda is None:
        problem = f"torch {torch.__version__} is a CPU-only build"
    elif toolkit is None:
        problem = f"no CUDA toolkit (include/cuda_runtime.h and bin/nvcc) in {', '.join(looked) or 'any known place'}"
    else:
        return True, f"built with the toolkit in {toolkit} for torch's CUDA {torch_cuda}"
    if flag != "auto":
        raise RuntimeError(f"FASTWNLL_CUDA={flag} but {problem}; set CUDA_HOME to a CUDA toolkit, e.g. /usr/local/cuda")
    return False, f"not built: {problem}"


class BuildRecordingExtension(BuildExtension):
    """torch's BuildExtension that, once the extension is compiled, records how it was built in
    ``fastwnll/_build_config.py`` (in the source tree, git-ignored, and in the build directory, so
    that wheels ship it)."""

    config: dict = {}

    def run(self):
        super().run()
        text = f'"""How the compiled extension was built (written by setup.py)."""\nBUILD = {self.config!r}\n'
        for root in {HERE, os.path.abspath(self.build_lib)}:
            if os.path.isdir(os.path.join(root, "fastwnll")):
                with open(os.path.join(root, "fastwnll", "_build_config.py"), "w") as out:
                    out.write(text)


def extension():
    sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    # at::parallel_for is inline OpenMP code: without -fopenmp it silently runs on one thread. The
    # extension then shares torch's libgomp (same soname, already loaded by libtorch_cpu).
    openmp = [] if sys.platform in ("win32", "darwin") else ["-fopenmp"]
    cxx = ["-O3"] + openmp
    toolkit, looked = find_cuda_home()
    cuda, reason = cuda_decision(os.environ.get("FASTWNLL_CUDA", "auto"), toolkit, looked, torch.version.cuda)
    config = {
        "torch": torch.__version__,
        "cuda": cuda,
        "reason": reason,
        "cuda_home": toolkit if cuda else None,
        "arch_list": None,
    }
    if cuda:
        cpp_extension.CUDA_HOME = toolkit  # torch's own guess may be a wrapper's directory
        os.environ["CUDA_HOME"] = toolkit
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
            os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_ARCH_LIST
        config["arch_list"] = os.environ.get("TORCH_CUDA_ARCH_LIST", "the visible GPUs'")
        ext = CUDAExtension(
            "fastwnll._C",
            sources + sorted(glob.glob("csrc/cuda/*.cu")),
            define_macros=[("FASTWNLL_WITH_CUDA", "1")],
            extra_compile_args={"cxx": cxx, "nvcc": ["-O3"]},
            extra_link_args=openmp,
        )
    else:
        ext = CppExtension("fastwnll._C", sources, extra_compile_args={"cxx": cxx}, extra_link_args=openmp)
    BuildRecordingExtension.config = config
    print(f"fastwnll: CUDA kernels {reason}" + (f" (arch {config['arch_list']})" if cuda else ""), flush=True)
    return ext


if __name__ == "__main__":
    setup(
        packages=find_packages(include=["fastwnll", "fastwnll.*"]) + ["fastwnll.kernels"],
        package_dir={"fastwnll": "fastwnll", "fastwnll.kernels": "kernels"},
        ext_modules=[extension()],
        cmdclass={"build_ext": BuildRecordingExtension.with_options(use_ninja=True)},
    )
