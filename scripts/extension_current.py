"""Exit 0 when this checkout's compiled extension is current, so set-up can skip the rebuild.

Current means: ``fastwnll`` imports from this checkout, ``fastwnll._C`` loads, it was built for the
installed torch, its CUDA kernels match ``FASTWNLL_CUDA`` (1: compiled in, 0: left out), and it is
newer than every C++/CUDA source, setup.py and pyproject.toml. Otherwise prints why and exits 1.
"""

import glob
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def stale_reason():
    try:
        import torch

        import fastwnll
        from fastwnll.extension import loader
    except ImportError as error:
        return f"not installed ({error})"
    if os.path.dirname(os.path.dirname(os.path.abspath(fastwnll.__file__))) != ROOT:
        return f"fastwnll is imported from {fastwnll.__file__}, not from this checkout"
    try:
        module = loader.load()
    except ImportError as error:
        return f"the extension does not load ({error})"
    build = loader.build_config()
    if build is None or build["torch"] != torch.__version__:
        return f"built for torch {build and build['torch']}, torch {torch.__version__} is installed"
    flag = os.environ.get("FASTWNLL_CUDA", "auto").strip().lower()
    if (flag in ("1", "on", "true", "yes") and not build["cuda"]) or (
        flag in ("0", "off", "false", "no") and build["cuda"]
    ):
        return f"FASTWNLL_CUDA={flag} but the CUDA kernels were {build['reason']}"
    inputs = [os.path.join(ROOT, name) for name in ("setup.py", "pyproject.toml")]
    inputs += glob.glob(os.path.join(ROOT, "csrc", "**", "*.*"), recursive=True)
    newest = max(inputs, key=os.path.getmtime)
    if os.path.getmtime(newest) > os.path.getmtime(module.__file__):
        return f"{os.path.relpath(newest, ROOT)} changed after the build"
    return None


if __name__ == "__main__":
    reason = stale_reason()
    if reason:
        print(f"fastwnll: building the extension: {reason}")
    sys.exit(1 if reason else 0)
