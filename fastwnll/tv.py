"""Total-variation proximal iterations: ROF denoising (:func:`tv_denoise`) and TVM (:func:`tvm`).

Both solve, independently for every 2-D plane (each channel of each image) of a batch ``x``,

    z* = argmin_z  1/2 * sum M * (z - x)^2  +  lam * TV(z)

with ``M = 1`` (``tv_denoise``, the TV proximal operator) or a keep-mask ``M`` (``tvm``, the masked
reconstruction of Guo et al., ICLR 2018). ``TV`` is isotropic, ``sum sqrt(dx^2 + dy^2)``, or
anisotropic, ``sum |dx| + |dy|``, with forward differences and a Neumann boundary (the difference
leaving the image is 0).

Algorithm: over-relaxed primal-dual Chambolle-Pock (Condat 2013, Chambolle & Pock 2016) with a fixed
iteration count, on ``min_z G(z) + F(K z)`` with ``G`` the data term, ``K = lam * grad`` and ``F``
the sum of pixel norms, whose conjugate is the indicator of the unit disc (isotropic) or box
(anisotropic). One iteration, from ``z = x`` and duals ``p = (p1, p2) = 0``::

    zt = (z + a*div(p)) * inv + data      # prox of the data term: inv = 1/(1 + tau*M),
                                          #   data = tau*M*x*inv, a = tau*lam
    d  = zt - z
    pt = proj(p + b * grad(zt + d))       # b = sigma*lam; zt + d = 2*zt - z
    p  = p + rho*(pt - p);  z = z + rho*d # over-relaxation, rho = 1.8

The primal step is ``tau = a / lam`` with ``a`` = 0.01 (no mask) or 0.015 (mask), the dual step
``sigma = 1 / (8 * a * lam)``, so ``tau * sigma * ||K||^2 <= tau * sigma * 8 * lam^2 = 1`` (the
convergence condition, ``||grad||^2 <= 8``). ``a`` and ``rho`` were tuned on real MNIST digits and
32x32 natural image crops: after the default 100 iterations (float32) the relative objective gap
to the converged minimum was 1e-4 to 3.3e-4 without a mask and at most 7e-4 with drop rate 0.5,
for ``lam`` 0.03 and 0.1 (after 10 iterations: 7e-3 to 0.2); tests/test_tv.py checks bounds of
5e-4 and 1e-3 against a converged float64 reference.

Relation to scikit-image: ``skimage.restoration.denoise_tv_chambolle(image, weight=w)`` runs
Chambolle's (2004) projection algorithm on ``min_u ||u - f||^2 / (2*w) + TV(u)`` with the same
discretisation (forward differences, Neumann boundary, isotropic), i.e. on this problem with
**``lam = w``**, for a 2-D image, or per channel with ``channel_axis`` set (with ``channel_axis=None``
a 3-D array is one volume with a 3-D TV, which is a different problem). tests/test_tv.py verifies
the mapping by objective values.

Backends (``backend=``): ``"triton"`` runs the kernels of ``fastwnll.kernels.tv_primal_dual`` (all
iterations of a plane in one program for planes up to 64x64, one launch per iteration over 32x32
tiles for larger ones) on CUDA tensors of dtype float16/bfloat16/float32 (CPU tensors only under
``TRITON_INTERPRET=1``); ``"torch"`` runs the vectorised torch iteration below on any device;
``"auto"`` (default) picks triton for such CUDA tensors when triton is installed and torch otherwise.
Both perform the same arithmetic in the same order (they agree to float32 rounding, about 1e-6;
tested). Computation is in float32 (float64 for float64 input on the torch path); the result has
the input's dtype. On CPU the torch path runs the batch in cache-sized chunks of planes.

Gradients: ``backward="bpda"`` (default) passes the incoming gradient through unchanged (the
identity, the standard BPDA choice for attacking an input transformation);
``backward="unrolled"`` differentiates exactly through all iterations of the torch path (on CUDA
too, where it replaces the kernel); autograd then keeps four plane-sized tensors per iteration
(100 iterations on a 512x3x32x32 float32 batch: about 2.5 GB).
"""
from __future__ import annotations

import importlib.util
import math
import numbers
import os
from typing import Optional

import torch
import torch.nn.functional as F

BACKWARDS = ("bpda", "unrolled")
BACKENDS = ("auto", "torch", "triton")
# Over-relaxation factor of the primal-dual iteration (converges for 0 < rho < 2).
RHO = 1.8
# tau * lam, the primal step relative to the TV weight, without and with a data mask.
STEP_DENOISE = 0.01
STEP_MASKED = 0.015
DEFAULT_ITERS = 100
# On CPU the in-place path runs on chunks of about this many pixels, so that its ~10 buffers stay in
# the cache: 1.6x (1024x1x28x28), 2.1x (512x3x32x32), 2.7x (32x3x224x224) faster than one pass over
# the whole batch, 1 thread of a 2-core EPYC.
CPU_CHUNK_PIXELS = 1 << 18
_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


# ------------------------------------------------------------------------------------------------
# validation


def _check_image(x) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor (float16, bfloat16, float32 or float64), got {x.dtype}")
    if x.dim() not in (3, 4):
        raise ValueError(f"x must have shape [B, C, H, W] or [B, H, W], got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or Inf values")


def _check_lam(lam) -> float:
    if isinstance(lam, bool) or not isinstance(lam, numbers.Real):
        raise TypeError(f"lam must be a real number, got {type(lam).__name__}")
    lam = float(lam)
    if not (math.isfinite(lam) and lam > 0):
        raise ValueError(f"lam must be a finite number > 0, got {lam}")
    return lam


def _check_options(iters, isotropic, backward, backend) -> None:
    if isinstance(iters, bool) or not isinstance(iters, numbers.Integral):
        raise TypeError(f"iters must be an int, got {type(iters).__name__}")
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    if not isinstance(isotropic, bool):
        raise TypeError(f"isotropic must be a bool, got {type(isotropic).__name__}")
    if backward not in BACKWARDS:
        raise ValueError(f"unknown backward {backward!r}; choose one of {BACKWARDS}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")


def _check_drop_rate(drop_rate) -> float:
    if isinstance(drop_rate, bool) or not isinstance(drop_rate, numbers.Real):
        raise TypeError(f"drop_rate must be a real number, got {type(drop_rate).__name__}")
    drop_rate = float(drop_rate)
    if not 0.0 <= drop_rate < 1.0:
        raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
    return drop_rate


def _check_mask(mask, x: torch.Tensor) -> None:
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool and not mask.is_floating_point():
        raise TypeError(f"mask must be a bool or floating-point tensor, got {mask.dtype}")
    if mask.shape != x.shape:
        raise ValueError(f"mask must have the shape of x {tuple(x.shape)}, got {tuple(mask.shape)}")
    if mask.device != x.device:
        raise ValueError(f"mask is on {mask.device} but x is on {x.device}")
    if mask.is_floating_point() and not bool(((mask >= 0) & (mask <= 1)).all()):
        raise ValueError("a floating-point mask must hold weights in [0, 1] (no NaN)")


def _check_generator(generator, x: torch.Tensor) -> None:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if generator.device.type != x.device.type:
        raise ValueError(f"generator is on {generator.device} but x is on {x.device}")


# ------------------------------------------------------------------------------------------------
# the iteration (torch path)


def step_constants(lam: float, masked: bool) -> dict:
    """Scalars of one primal-dual iteration, shared by the torch path and the Triton kernels.

    ``tau`` (primal step), ``a = tau*lam`` (weight of ``div p`` in the primal step),
    ``b = sigma*lam = 1/(8a)`` (weight of ``grad`` in the dual step), ``inv = 1/(1+tau)`` and
    ``c = tau/(1+tau)`` (the unmasked data prox ``(v + tau*x)/(1+tau) = v*inv + x*c``) and ``rho``
    (over-relaxation), as Python floats.
    """
    a = STEP_MASKED if masked else STEP_DENOISE
    tau = a / lam
    return {"tau": tau, "a": a, "b": 1.0 / (8.0 * a), "inv": 1.0 / (1.0 + tau), "c": tau / (1.0 + tau),
            "rho": RHO}


def _data_terms(x: torch.Tensor, mask: Optional[torch.Tensor], consts: dict):
    """``(inv, data)`` of the primal step: scalar and ``x*c`` without a mask, per pixel with one."""
    if mask is None:
        return consts["inv"], x * consts["c"]
    tm = consts["tau"] * mask
    inv = 1.0 / (1.0 + tm)
    return inv, tm * x * inv


def _grad(z: torch.Tensor):
    """Forward differences of ``z`` [..., H, W] along W and H, 0 at the last column/row."""
    gx = F.pad(z[..., :, 1:] - z[..., :, :-1], (0, 1))
    gy = F.pad(z[..., 1:, :] - z[..., :-1, :], (0, 0, 0, 1))
    return gx, gy


def _div(p1: torch.Tensor, p2: torch.Tensor) -> torch.Tensor:
    """Discrete divergence, the negative adjoint of :func:`_grad` for duals that vanish on the last
    column (``p1``) and row (``p2``), as the iterates always do."""
    return (p1 + p2) - F.pad(p1[..., :, :-1], (1, 0)) - F.pad(p2[..., :-1, :], (0, 0, 1, 0))


def primal_dual_autograd(x: torch.Tensor, mask: Optional[torch.Tensor], consts: dict, iters: int,
                         isotropic: bool) -> torch.Tensor:
    """The iteration on planes ``x`` [..., H, W] with out-of-place ops, differentiable by autograd
    with respect to ``x`` (and a floating-point ``mask``).

    Args:
        x: [..., H, W] float32/float64 tensor, any device.
        mask: data weights of ``x``'s shape and dtype, or None for M = 1.
        consts, iters, isotropic: see :func:`step_constants`, :func:`tv_denoise`.

    Returns:
        ``z``, like ``x``.
    """
    a, b, rho = consts["a"], consts["b"], consts["rho"]
    inv, data = _data_terms(x, mask, consts)
    z = x
    p1 = torch.zeros_like(x)
    p2 = torch.zeros_like(x)
    for _ in range(iters):
        zt = (z + a * _div(p1, p2)) * inv + data
        d = zt - z
        gx, gy = _grad(zt + d)
        q1 = p1 + b * gx
        q2 = p2 + b * gy
        if isotropic:
            scale = torch.rsqrt(torch.clamp_min(q1 * q1 + q2 * q2, 1.0))
            pt1, pt2 = q1 * scale, q2 * scale
        else:
            pt1, pt2 = q1.clamp(-1.0, 1.0), q2.clamp(-1.0, 1.0)
        p1 = torch.lerp(p1, pt1, rho)
        p2 = torch.lerp(p2, pt2, rho)
        z = z + rho * d
    return z


@torch.no_grad()
def primal_dual_inplace(x: torch.Tensor, mask: Optional[torch.Tensor], consts: dict, iters: int,
                        isotropic: bool) -> torch.Tensor:
    """The same iteration as :func:`primal_dual_autograd` with preallocated buffers and in-place
    ops (about 20 elementwise passes per iteration, no allocation); not differentiable.

    Args:
        x: [..., H, W] float32/float64 tensor, any device.
        mask: data weights of ``x``'s shape and dtype, or None for M = 1.
        consts, iters, isotropic: see :func:`step_constants`, :func:`tv_denoise`.

    Returns:
        ``z``, a new tensor like ``x``.
    """
    a, b, rho = consts["a"], consts["b"], consts["rho"]
    inv, data = _data_terms(x, mask, consts)
    z = x.clone()
    # q1 (q2) is never written in its last column (row): the duals stay 0 there, as _div assumes.
    p1, p2, q1, q2 = (torch.zeros_like(x) for _ in range(4))
    dv, d, zb, scale = (torch.empty_like(x) for _ in range(4))
    p1_in, p2_in = p1[..., :, :-1], p2[..., :-1, :]
    q1_in, q2_in = q1[..., :, :-1], q2[..., :-1, :]
    for _ in range(iters):
        torch.add(p1, p2, out=dv)                             # div p
        dv[..., :, 1:].sub_(p1_in)
        dv[..., 1:, :].sub_(p2_in)
        torch.add(z, dv, alpha=a, out=zb)                     # zt, kept in zb for now
        zb.mul_(inv).add_(data)
        torch.sub(zb, z, out=d)
        zb.add_(d)                                            # zb = zt + d = 2*zt - z
        torch.sub(zb[..., :, 1:], zb[..., :, :-1], out=q1_in)
        torch.add(p1_in, q1_in, alpha=b, out=q1_in)           # q1 = p1 + b * dx(zb)
        torch.sub(zb[..., 1:, :], zb[..., :-1, :], out=q2_in)
        torch.add(p2_in, q2_in, alpha=b, out=q2_in)
        if isotropic:
            torch.mul(q1, q1, out=scale)
            scale.addcmul_(q2, q2).clamp_min_(1.0).rsqrt_()
            q1.mul_(scale)
            q2.mul_(scale)
        else:
            q1.clamp_(-1.0, 1.0)
            q2.clamp_(-1.0, 1.0)
        p1.lerp_(q1, rho)
        p2.lerp_(q2, rho)
        z.add_(d, alpha=rho)
    return z


# ------------------------------------------------------------------------------------------------
# dispatch and differentiation


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def _use_kernel(x: torch.Tensor, backend: str, backward: str) -> bool:
    """Whether the Triton kernels run this call; raises when ``backend="triton"`` cannot."""
    if backend == "torch":
        return False
    has_triton = importlib.util.find_spec("triton") is not None
    if backend == "auto":
        return x.is_cuda and x.dtype in _KERNEL_DTYPES and has_triton and backward == "bpda"
    if not has_triton:
        raise RuntimeError("backend='triton' needs the triton package, which is not installed")
    if backward != "bpda":
        raise ValueError("backward='unrolled' differentiates the torch path; use backend='torch' or 'auto'")
    if x.dtype not in _KERNEL_DTYPES:
        raise ValueError(f"the Triton kernels take float16, bfloat16 or float32, got {x.dtype}; use backend='torch'")
    if not x.is_cuda and not _interpreting():
        raise ValueError(f"backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1), got a tensor on {x.device}")
    return True


class _IdentityBackward(torch.autograd.Function):
    """``solve(x)`` forward, identity gradient with respect to ``x`` backward (BPDA)."""

    @staticmethod
    def forward(ctx, x, solve):
        return solve(x)

    @staticmethod
    def backward(ctx, grad_out):
        return grad_out, None


def _solve_planes(planes: torch.Tensor, weights: Optional[torch.Tensor], lam: float, iters: int,
                  isotropic: bool, use_kernel: bool, differentiable: bool) -> torch.Tensor:
    """Solve for ``planes`` [N, H, W] (any float dtype) with data weights ``weights`` (bool or float,
    [N, H, W]) or None; returns [N, H, W] in the input dtype."""
    consts = step_constants(lam, weights is not None)
    if use_kernel:
        from fastwnll.kernels.tv_primal_dual import tv_primal_dual

        return tv_primal_dual(planes, weights, consts, iters, isotropic)
    compute = torch.float64 if planes.dtype == torch.float64 else torch.float32
    x = planes.to(compute)
    w = None if weights is None else weights.to(compute)
    if differentiable:
        return primal_dual_autograd(x, w, consts, iters, isotropic).to(planes.dtype)
    n, h, wd = x.shape
    step = n if x.is_cuda else max(1, CPU_CHUNK_PIXELS // (h * wd))
    out = torch.empty_like(planes)
    for s in range(0, n, step):
        chunk = None if w is None else w[s:s + step]
        out[s:s + step] = primal_dual_inplace(x[s:s + step], chunk, consts, iters, isotropic)
    return out


def _run(x: torch.Tensor, mask: Optional[torch.Tensor], lam: float, iters: int, isotropic: bool,
         backward: str, backend: str) -> torch.Tensor:
    use_kernel = _use_kernel(x, backend, backward)
    if x.numel() == 0:
        return x.clone()
    H, W = x.shape[-2:]
    weights = None if mask is None else mask.reshape(-1, H, W)
    if backward == "unrolled" and torch.is_grad_enabled() and (
            x.requires_grad or (weights is not None and weights.requires_grad)):
        return _solve_planes(x.reshape(-1, H, W), weights, lam, iters, isotropic, False, True).reshape(x.shape)

    def solve(inp: torch.Tensor) -> torch.Tensor:
        w = None if weights is None else weights.detach()
        planes = inp.detach().reshape(-1, H, W)
        return _solve_planes(planes, w, lam, iters, isotropic, use_kernel, False).reshape(x.shape)

    out: torch.Tensor = _IdentityBackward.apply(x, solve)
    return out


# ------------------------------------------------------------------------------------------------
# public API


def tv_denoise(x: torch.Tensor, lam: float, *, iters: int = DEFAULT_ITERS, isotropic: bool = True,
               backward: str = "bpda", backend: str = "auto") -> torch.Tensor:
    """TV proximal operator (ROF denoising) of every plane of a batch.

    Returns ``argmin_z 1/2 ||z - x||^2 + lam * TV(z)`` for each channel of each image, computed
    with ``iters`` primal-dual iterations (see the module docstring).

    Args:
        x: [B, C, H, W] or [B, H, W] floating-point tensor (float16, bfloat16, float32, float64),
            CPU or CUDA, finite. A single image [C, H, W] may be passed as it is (its channels are
            independent planes either way).
        lam: TV weight, > 0; equals ``weight`` of ``skimage.restoration.denoise_tv_chambolle``.
        iters: number of iterations (>= 1).
        isotropic: isotropic TV (``sqrt(dx^2 + dy^2)``) if True, anisotropic (``|dx| + |dy|``) if False.
        backward: ``"bpda"`` (default; identity gradient) or ``"unrolled"`` (exact gradient through
            the iterations of the torch path).
        backend: ``"auto"`` (default), ``"torch"`` or ``"triton"``; see the module docstring.

    Returns:
        ``z``, same shape, dtype and device as ``x``.
    """
    _check_image(x)
    lam = _check_lam(lam)
    _check_options(iters, isotropic, backward, backend)
    return _run(x, None, lam, int(iters), isotropic, backward, backend)


def tvm(x: torch.Tensor, *, drop_rate: float = 0.5, lam: float = 0.03, iters: int = DEFAULT_ITERS,
        isotropic: bool = True, generator: Optional[torch.Generator] = None,
        mask: Optional[torch.Tensor] = None, backward: str = "bpda", backend: str = "auto") -> torch.Tensor:
    """Total variation minimisation (Guo et al., ICLR 2018): masked TV reconstruction of a batch.

    Returns ``argmin_z 1/2 sum M (z - x)^2 + lam * TV(z)`` for each channel of each image, where the
    keep-mask ``M`` keeps each entry of ``x`` (each pixel of each channel) independently with
    probability ``1 - drop_rate``; dropped entries are filled in by the TV term. With
    ``drop_rate=0`` and no mask this is :func:`tv_denoise` (no random numbers are drawn).

    Args:
        x: [B, C, H, W] or [B, H, W] floating-point tensor with values in [0, 1], CPU or CUDA (a
            single image [C, H, W] may be passed as it is).
        drop_rate: probability of dropping an entry, in [0, 1); not used when ``mask`` is given.
        lam: TV weight, > 0 (Guo et al.'s default 0.03).
        iters: number of iterations (>= 1).
        isotropic: isotropic (True) or anisotropic (False) TV.
        generator: ``torch.Generator`` on ``x``'s device type that draws the mask (reproducible
            masks); the global generator when None. Not allowed together with ``mask``.
        mask: optional data weights of ``x``'s shape and device: bool (True = kept) or floating
            point in [0, 1].
        backward: ``"bpda"`` (default; identity gradient) or ``"unrolled"`` (exact gradient through
            the iterations for the drawn mask).
        backend: ``"auto"`` (default), ``"torch"`` or ``"triton"``; see the module docstring.

    Returns:
        ``z``, same shape, dtype and device as ``x``.
    """
    _check_image(x)
    if x.numel():
        lo, hi = torch.aminmax(x.detach())
        if lo < 0 or hi > 1:
            raise ValueError(f"tvm expects x in [0, 1], got values in [{float(lo):.4g}, {float(hi):.4g}]")
    drop_rate = _check_drop_rate(drop_rate)
    lam = _check_lam(lam)
    _check_options(iters, isotropic, backward, backend)
    if generator is not None:
        _check_generator(generator, x)
    if mask is not None:
        if generator is not None:
            raise ValueError("pass either mask or generator, not both")
        _check_mask(mask, x)
    elif drop_rate > 0:
        mask = _draw_mask(x, drop_rate, generator)
    return _run(x, mask, lam, int(iters), isotropic, backward, backend)


def _draw_mask(x: torch.Tensor, drop_rate: float, generator: Optional[torch.Generator]) -> torch.Tensor:
    return torch.rand(x.shape, generator=generator, device=x.device) >= drop_rate


def keep_mask(x: torch.Tensor, drop_rate: float = 0.5, *,
              generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """The random keep-mask :func:`tvm` draws: bool, ``x``'s shape and device, each entry True
    (kept) independently with probability ``1 - drop_rate``.

    ``tvm(x, drop_rate=p, generator=g)`` equals ``tvm(x, mask=keep_mask(x, p, generator=g2))`` when
    ``g2`` is in ``g``'s state (for ``0 < p < 1``), so masks can be drawn, inspected and reused.

    Args:
        x: tensor whose shape and device the mask takes (any dtype).
        drop_rate: probability of dropping an entry, in [0, 1).
        generator: ``torch.Generator`` on ``x``'s device type, or None for the global generator.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    drop_rate = _check_drop_rate(drop_rate)
    if generator is not None:
        _check_generator(generator, x)
    return _draw_mask(x, drop_rate, generator)


__all__ = ["keep_mask", "tv_denoise", "tvm"]
