"""``TVM``: total variation minimisation (Guo et al., ICLR 2018) as an ``nn.Module``.

An input-cleaning layer for the front of a model or a step of a data pipeline::

    model = nn.Sequential(TVM(drop_rate=0.5, lam=0.03), classifier)      # on every forward pass
    transform = transforms.Compose([transforms.ToTensor(), TVM(seed=0)])  # per image, [C, H, W]

It applies :func:`fastwnll.tvm` in training and in evaluation mode alike (the defence randomises
every call, at test time too). The random keep-masks come from torch's global generator by default
(``seed=None``), which ``torch.utils.data.DataLoader`` already seeds differently in every worker.
With ``seed=s`` the module owns one ``torch.Generator`` per device, seeded with ``s`` (or, inside a
DataLoader worker, with a seed derived from ``s`` and the worker id, so workers do not repeat each
other's masks); its mask sequence is then reproducible, and :meth:`TVM.reset` restarts it.
"""

from __future__ import annotations

import numbers
import os
from typing import Optional

import torch
from torch import nn

from fastwnll.tv.denoise import DEFAULT_ITERS, DEFAULT_TOL, check_drop_rate, check_lam, check_options, tvm


class TVM(nn.Module):
    """Masked TV reconstruction of every input batch (see :func:`fastwnll.tvm`).

    Args:
        drop_rate: probability of dropping each pixel of each channel, in [0, 1).
        lam: TV weight, > 0 (Guo et al.'s 0.03 for images in [0, 1]).
        iters: iteration budget, >= 1.
        tol: relative duality gap at which a plane stops, or None for exactly ``iters`` iterations
            (see :func:`fastwnll.tvm`).
        isotropic: isotropic (True) or anisotropic (False) TV.
        backward: ``"bpda"`` (default; identity gradient) or ``"unrolled"``.
        backend: ``"auto"`` (default), ``"torch"`` or ``"triton"``.
        seed: None (masks from the global generator) or an int (reproducible masks; see the module
            docstring).

    Shapes: input ``[B, C, H, W]``, ``[B, H, W]`` or one image ``[C, H, W]``, floating point with
    values in [0, 1], CPU or CUDA; output of the same shape, dtype and device.
    """

    def __init__(
        self,
        drop_rate: float = 0.5,
        lam: float = 0.03,
        iters: int = DEFAULT_ITERS,
        *,
        tol: Optional[float] = DEFAULT_TOL,
        isotropic: bool = True,
        backward: str = "bpda",
        backend: str = "auto",
        seed: Optional[int] = None,
    ):
        super().__init__()
        self.drop_rate = check_drop_rate(drop_rate, "TVM drop_rate")
        self.lam = check_lam(lam, "TVM lam")
        self.tol = check_options(iters, tol, isotropic, backward, backend, prefix="TVM ")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
            raise ValueError(f"TVM seed must be None or an int >= 0, got {seed!r}")
        self.seed = None if seed is None else int(seed)
        self.iters = int(iters)
        self.isotropic = isotropic
        self.backward = backward
        self.backend = backend
        self._generators: dict = {}
        self._pid = os.getpid()

    def extra_repr(self) -> str:
        return (
            f"drop_rate={self.drop_rate:g}, lam={self.lam:g}, iters={self.iters}, tol={self.tol}, "
            f"isotropic={self.isotropic}, backward={self.backward!r}, seed={self.seed}"
        )

    def reset(self) -> None:
        """Restart the mask sequence of a seeded module (no effect with ``seed=None``)."""
        self._generators = {}

    def _generator(self, device: torch.device) -> Optional[torch.Generator]:
        if self.seed is None or self.drop_rate == 0:
            return None
        if os.getpid() != self._pid:  # a copy in a new process (DataLoader worker): own sequence
            self._generators, self._pid = {}, os.getpid()
        key = str(device)
        if key not in self._generators:
            worker = torch.utils.data.get_worker_info()
            seed = self.seed if worker is None else hash((self.seed, worker.id)) & (2**63 - 1)
            self._generators[key] = torch.Generator(device=device).manual_seed(seed)
        return self._generators[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        generator = self._generator(x.device) if isinstance(x, torch.Tensor) else None
        return tvm(
            x,
            drop_rate=self.drop_rate,
            lam=self.lam,
            iters=self.iters,
            tol=self.tol,
            isotropic=self.isotropic,
            generator=generator,
            backward=self.backward,
            backend=self.backend,
        )
