"""The compiled-op plumbing: loading the extension ``fastwnll._C`` (which registers
``torch.ops.fastwnll``) and its fake kernels, the working precision of the numerics, and what is
installed and live (``fastwnll.info()``).

Everything else in fastwnll reaches the compiled ops through :func:`load`.
"""

from fastwnll.extension.loader import REBUILD_HINT, available, build_config, cuda_compiled, load

__all__ = ["REBUILD_HINT", "available", "build_config", "cuda_compiled", "load"]
