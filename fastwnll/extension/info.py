"""What is installed and which backends are live: ``fastwnll.info()`` and ``python -m fastwnll info``."""

from __future__ import annotations

import importlib
import os
import platform

import torch

from fastwnll import __version__
from fastwnll.extension import loader


def _module_version(name: str):
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # an optional dependency may fail in many ways (missing, broken build)
        return None, f"{type(exc).__name__}: {exc}"
    return getattr(module, "__version__", "unknown"), None


def info() -> dict:
    """Versions and live backends, as a dict of plain values (JSON-serialisable).

    Keys: ``fastwnll``, ``python``, ``torch``, ``torch_cuda`` (CUDA version torch was built for),
    ``device`` (name of CUDA device 0, or "cpu"), ``extension`` (compiled ``fastwnll._C`` loads),
    ``extension_error``, ``build`` (how the extension was built: whether its CUDA kernels were
    compiled and why, from ``fastwnll/_build_config.py``, which setup.py writes; None when absent),
    ``built_for_torch`` (the torch version the extension was compiled against), ``cpu_threads``
    (threads the extension's CPU kernels use; equals ``torch.get_num_threads()`` unless it was built
    without OpenMP), ``cuda_kernels`` (compiled in), ``cuda_kernels_live`` (compiled and a GPU present),
    ``faiss``, ``faiss_gpus``,
    ``triton``, ``triton_live`` (kernels can run: a GPU, or ``TRITON_INTERPRET=1``), ``numpy``.
    """
    cuda = torch.cuda.is_available()
    try:
        loader.load()
        ext_error = None
    except ImportError as exc:
        ext_error = str(exc)
    faiss_version, _ = _module_version("faiss")
    faiss_gpus = 0
    if faiss_version is not None:
        import faiss

        faiss_gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    triton_version, _ = _module_version("triton")
    numpy_version, _ = _module_version("numpy")
    cuda_kernels = ext_error is None and loader.cuda_compiled()
    build = loader.build_config()
    return {
        "fastwnll": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "extension": ext_error is None,
        "extension_error": ext_error,
        "build": None if build is None else "CUDA kernels " + build["reason"],
        "built_for_torch": None if build is None else build["torch"],
        "cpu_threads": loader.load().parallel_threads() if ext_error is None else None,
        "cuda_kernels": cuda_kernels,
        "cuda_kernels_live": cuda_kernels and cuda,
        "faiss": faiss_version,
        "faiss_gpus": faiss_gpus,
        "triton": triton_version,
        "triton_live": triton_version is not None and (cuda or os.environ.get("TRITON_INTERPRET") == "1"),
        "numpy": numpy_version,
    }


def print_info() -> None:
    """Print :func:`info` as an aligned table."""
    for key, value in info().items():
        if key == "extension_error" and value is None:
            continue
        print(f"{key:<18} {'-' if value is None else value}")
