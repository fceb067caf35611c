"""kNN candidates from faiss's flat (exact, float32) index, and the faiss plumbing the approximate
indexes (:mod:`fastwnll.knn.approximate`) share: on the CPU, or on the GPU for CUDA tensors when
faiss was built with GPUs.

GPU indexes live on the tensors' device, use one cached ``StandardGpuResources`` per device and the
current torch stream (through ``faiss.contrib.torch_utils``); CUDA tensors never go through the host.
"""

from __future__ import annotations

import functools

import torch

# faiss's GPU k-selection handles at most this many neighbours per query.
GPU_MAX_K = 2048


def load_faiss():
    """The faiss module, or None when it is not installed."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def has_gpu(faiss) -> bool:
    """True when ``faiss`` was built with GPU support and sees at least one GPU."""
    return faiss is not None and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


@functools.lru_cache(maxsize=None)
def gpu_resources(device_index: int):
    """The ``faiss.StandardGpuResources`` of one CUDA device, created once (they own cuBLAS handles,
    streams and a temporary-memory pool, which are costly to set up)."""
    import faiss
    import faiss.contrib.torch_utils  # noqa: F401  (lets faiss indexes take torch CUDA tensors)

    return faiss.StandardGpuResources()


def gpu_config(cls, device: torch.device):
    """A faiss GPU index config placing the index on ``device``."""
    config = cls()
    config.device = device.index
    return config


def as_float32(x: torch.Tensor) -> torch.Tensor:
    return x.detach().to(torch.float32).contiguous()


def search_index(index, query: torch.Tensor, kc: int) -> torch.Tensor:
    """ids [nq, kc] int64 of ``index.search`` on ``query``'s device (-1 where the index found fewer)."""
    if query.is_cuda:
        with torch.cuda.device(query.device):  # torch_utils runs faiss on the current device's torch stream
            _, ids = index.search(query, kc)
        return ids.to(torch.int64)
    _, ids = index.search(query.numpy(), kc)
    return torch.from_numpy(ids).to(torch.int64)


def add_points(index, base: torch.Tensor, train: bool = False) -> None:
    if base.is_cuda:
        with torch.cuda.device(base.device):
            if train:
                index.train(base)
            index.add(base)
        return
    if train:
        index.train(base.numpy())
    index.add(base.numpy())


def flat_candidates(query: torch.Tensor, base: torch.Tensor, kc: int) -> torch.Tensor:
    """Indices ``[nq, kc]`` int64 (on the input device) of the ``kc`` smallest float32 squared
    distances from faiss's exact flat L2 index (``GpuIndexFlatL2`` on the tensors' device for CUDA
    tensors when faiss has GPUs, else ``IndexFlatL2`` on the CPU, CUDA tensors copied)."""
    faiss = load_faiss()
    q = as_float32(query)
    b = q if base is query else as_float32(base)
    d = q.shape[1]
    if q.is_cuda and has_gpu(faiss):
        if kc > GPU_MAX_K:
            raise ValueError(
                f"faiss on the GPU finds at most {GPU_MAX_K} neighbours per query, {kc} were "
                "needed; use backend='torch'"
            )
        index = faiss.GpuIndexFlatL2(gpu_resources(q.device.index), d, gpu_config(faiss.GpuIndexFlatConfig, q.device))
        add_points(index, b)
        return search_index(index, q, kc)
    index = faiss.IndexFlatL2(d)
    add_points(index, b.cpu())
    return search_index(index, q.cpu(), kc).to(query.device)
