"""Loading of the compiled extension ``fastwnll._C`` (which registers ``torch.ops.fastwnll``) and what is
known of how it was built."""

from __future__ import annotations

import functools

REBUILD_HINT = (
    "Rebuild it against the installed torch with "
    "`pip install --no-build-isolation -e .` from the fastwnll source tree "
    "(an 'undefined symbol' error means torch was upgraded after the build)."
)


@functools.lru_cache(maxsize=None)
def load():
    """Import ``fastwnll._C`` once and return it; raise ImportError with a rebuild hint if missing.

    Also imports :mod:`fastwnll.extension.fake_kernels`, which registers the ops' fake kernels."""
    import torch  # noqa: F401  (loads libtorch/libc10, which _C links against)

    try:
        from fastwnll import _C  # noqa: F401  (import registers the ops)
    except ImportError as exc:  # pragma: no cover - exercised only on broken installs
        raise ImportError(f"fastwnll's compiled extension could not be loaded: {exc}. {REBUILD_HINT}") from exc
    import fastwnll.extension.fake_kernels  # noqa: F401

    return _C


def available() -> bool:
    """True when the compiled extension loads."""
    try:
        load()
    except ImportError:
        return False
    return True


def build_config() -> dict | None:
    """How the extension was built, as setup.py recorded it (keys ``torch``, ``cuda``, ``reason``,
    ``cuda_home``, ``arch_list``), or None for an install without the record."""
    try:
        from fastwnll._build_config import BUILD
    except ImportError:
        return None
    return dict(BUILD)


def cuda_compiled() -> bool:
    """True when the extension was built with its CUDA kernels."""
    return available() and bool(load().cuda_compiled())
