"""Smoke test of an installed fastwnll (run by scripts/wheel_smoke.sh inside a fresh virtual
environment, from outside the repository): the package comes from that environment, the compiled
extension loads, a WNLL forward and a TV call through the Triton kernels (interpreted on the CPU)
give correct results, and the ``fastwnll`` command works.

Usage: ``TRITON_INTERPRET=1 python smoke_test.py EXPECTED_PREFIX`` (the interpreter switch must be set
before triton is imported).
"""

import os
import subprocess
import sys
import sysconfig

import torch

import fastwnll


def main(prefix: str) -> None:
    location = os.path.realpath(fastwnll.__file__)
    assert location.startswith(os.path.realpath(prefix)), f"fastwnll imported from {location}, not from {prefix}"
    report = fastwnll.info()
    assert report["extension"], report["extension_error"]
    print(f"fastwnll {fastwnll.__version__} from {location}; extension: {report['build']}")

    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0] * 8, [6.0] * 8])
    labels = torch.arange(2).repeat_interleave(40)
    x = centres[labels] + torch.randn(80, 8, generator=gen)
    scores = fastwnll.wnll_interpolate(x[::2], labels[::2], x[1::2], k=10)
    assert torch.allclose(scores.sum(1), torch.ones(40), atol=1e-4), "WNLL rows must be probability vectors"
    assert (scores.argmax(1) == labels[1::2]).all(), "WNLL misclassified two separated clusters"
    print("wnll_interpolate: ok")

    from fastwnll.kernels import tv_primal_dual  # noqa: F401  (the Triton kernels ship inside the package)

    images = torch.rand(2, 3, 16, 16, generator=gen)
    kernel = fastwnll.tv_denoise(images, lam=0.05, iters=20, backend="triton")
    reference = fastwnll.tv_denoise(images, lam=0.05, iters=20, backend="torch")
    assert torch.allclose(kernel, reference, atol=1e-5), "Triton TV kernel disagrees with the torch path"
    print("tv_denoise through fastwnll.kernels: ok")

    command = os.path.join(sysconfig.get_path("scripts"), "fastwnll")
    version = subprocess.run([command, "--version"], capture_output=True, text=True, check=True).stdout
    assert version.strip() == f"fastwnll {fastwnll.__version__}", version
    info = subprocess.run([command, "info"], capture_output=True, text=True, check=True).stdout
    assert "extension          True" in info, info
    print("fastwnll command: ok")


if __name__ == "__main__":
    if os.environ.get("TRITON_INTERPRET") != "1":
        sys.exit("run with TRITON_INTERPRET=1")
    main(sys.argv[1])
