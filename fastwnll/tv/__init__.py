"""Total variation minimization of images: ROF denoising (:func:`tv_denoise`) and Guo et al.'s masked
reconstruction (:func:`tvm`, :func:`keep_mask`).

- :mod:`~fastwnll.tv.denoise`: the public functions, argument checks and the choice of backend;
- :mod:`~fastwnll.tv.iteration`: the primal-dual iteration in plain torch (the CPU path, and the
  reference of the Triton kernels in ``fastwnll.kernels.tv_primal_dual``).
"""

from fastwnll.tv.denoise import TVConvergenceWarning, TVInfo, keep_mask, tv_denoise, tvm

__all__ = ["TVConvergenceWarning", "TVInfo", "keep_mask", "tv_denoise", "tvm"]
