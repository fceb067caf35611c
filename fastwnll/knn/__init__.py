"""Stage 1 of the pipeline: k-nearest-neighbour search.

- :mod:`~fastwnll.knn.search`: :func:`knn_search` and :func:`knn_graph`, exact by default, with the
  backend choice and the certification that keeps the result exact in floating point;
- :mod:`~fastwnll.knn.tiled`: the torch path (tiled top-k of distances, exact re-scoring, any device);
- :mod:`~fastwnll.knn.faiss_index`: faiss's flat index (CPU or GPU);
- :mod:`~fastwnll.knn.approximate`: faiss HNSW / IVF-Flat, on request (:class:`ApproximateKNN`).

The C++ kernels are ``torch.ops.fastwnll.knn_candidates`` / ``knn_refine`` (``csrc/cpu/knn_cpu.cpp``).
"""

from fastwnll.knn.approximate import APPROXIMATE_METHODS, ApproximateKNN
from fastwnll.knn.search import BACKENDS, check_backend, exact_backend, knn_graph, knn_search

__all__ = [
    "APPROXIMATE_METHODS",
    "ApproximateKNN",
    "BACKENDS",
    "check_backend",
    "exact_backend",
    "knn_graph",
    "knn_search",
]
