"""Total-variation proximal iterations: ROF denoising (:func:`tv_denoise`) and TVM (:func:`tvm`).

Both solve, independently for every 2-D plane (each channel of each image) of a batch ``x``,

    z* = argmin_z  P(z),   P(z) = 1/2 * sum M * (z - x)^2  +  lam * TV(z)

with ``M = 1`` (``tv_denoise``, the TV proximal operator) or a keep-mask ``M`` (``tvm``, the masked
reconstruction of Guo et al., ICLR 2018). ``TV`` is isotropic, ``sum sqrt(dx^2 + dy^2)``, or
anisotropic, ``sum |dx| + |dy|``, with forward differences and a Neumann boundary (the difference
leaving the image is 0).

Scale: ``lam`` is in the units of the image values; what matters is ``lam`` relative to the
image's range. The problem is scale-equivariant, ``tv_denoise(s*x, s*lam) = s*tv_denoise(x, lam)``,
and so is the computation: every plane is solved at unit scale (shifted by its minimum and divided
by the power of two just below its range, with ``lam`` divided alike; ``fastwnll.tv.exact``), so
Guo et al.'s ``lam = 0.03`` for images in [0, 1] is ``lam = 0.03 * 255`` for images in [0, 255],
with the same iteration count and result, and images of any magnitude the dtype holds as normal
numbers (1e-35 to 1e38 in float32) give the result of unit-scale images (bit for bit for a
power-of-two scale). Planes whose range lies below the dtype's normal range (subnormal numbers)
are computed too, with a ``RuntimeWarning``: their values carry fewer significant bits.

Exact solutions: where ``lam`` exceeds the plane's dual norm (about its range times its side) the
minimiser is the constant (weighted) mean, and as ``lam -> 0`` it tends to the data itself
(within ``4 lam`` per pixel). Both are evaluated with a dual certificate of their own before
iterating (``fastwnll.tv.exact``, on the planes where cheap tests say they may apply: none in a
typical call); a plane whose closed form is certified to ``tol`` is returned without iterating
(``iters`` 0), and the final gap of every plane is that of the best of its candidates. So the
iteration's own gap, which cannot be resolved in the working precision at those extremes, never
reports a false non-convergence there.

Algorithm: over-relaxed primal-dual Chambolle-Pock (Condat 2013, Chambolle & Pock 2016) on
``min_z G(z) + F(K z)`` with ``G`` the data term, ``K = lam * grad`` and ``F`` the sum of pixel norms,
whose conjugate is the indicator of the unit disc (isotropic) or box (anisotropic). One iteration,
from ``z = x`` and duals ``p = (p1, p2) = 0``::

    zt = (z + a*div(p)) * inv + data      # prox of the data term: inv = 1/(1 + tau*M),
                                          #   data = tau*M*x*inv, a = tau*lam
    d  = zt - z
    pt = proj(p + b * grad(zt + d))       # b = sigma*lam = 1/(8a); zt + d = 2*zt - z
    p  = p + rho*(pt - p);  z = z + rho*d # over-relaxation, rho = 1.8

with per-plane steps that depend on ``lam`` relative to the plane's range only
(``fastwnll.tv.iteration``, which also holds the torch iteration).

Stopping: ``iters`` is the iteration budget. With ``tol`` (default ``DEFAULT_TOL``), the duality gap
``G`` of every plane is evaluated every ``CHECK_EVERY`` (10) iterations, and a plane stops at the first
check where ``G <= tol * P(z)`` (or before the first iteration, when a closed form is
certified). ``G`` is a certified bound: ``(P(z) - min P) / P(z) <= G / P(z)``
(the relative objective error of the result is at most the reported gap). With ``tol=None`` exactly
``iters`` iterations run. Either way the gap after the last iteration is evaluated, returned with
``return_info=True`` (:class:`TVInfo`), and a :class:`TVConvergenceWarning` is issued when some plane
ends its budget with a relative gap above ``max(10 * tol, WARN_GAP)`` (``WARN_GAP`` = 1e-2; this
check reads one flag on the host at the end of each call). A gap evaluation costs about one to two
iterations on the CPU torch path (benchmarks/README.md); in the fused kernel it is four gathers and
two plane reductions every 10 iterations (not yet timed on a GPU). In float32 the gap is accurate
to about 1e-6 relative, so tolerances below about 1e-5 are not reached reliably.

Iterations to the default tolerance (float32; benchmarks/README.md): on real MNIST digits with
``lam`` = 0.03 / 0.1 / 0.3 / 1 (images in [0, 1]) the planes stop after 40 / 50 / 60-90 / 200-280
iterations without a mask and after 130-230 with drop rate 0.5. On 32x32 natural-image crops most
planes stop after 40-60 (no mask) and 100-200 (drop rate 0.5) iterations at ``lam`` = 0.03, but a
low-contrast plane (``lam`` large relative to its own range) takes up to several hundred: the
relative gap of a nearly flat plane closes slowly, which the report and the warning make visible.

Relation to scikit-image: ``skimage.restoration.denoise_tv_chambolle(image, weight=w)`` runs
Chambolle's (2004) projection algorithm on ``min_u ||u - f||^2 / (2*w) + TV(u)`` with the same
discretisation (forward differences, Neumann boundary, isotropic), i.e. on this problem with
**``lam = w``**, for a 2-D image, or per channel with ``channel_axis`` set (with ``channel_axis=None``
a 3-D array is one volume with a 3-D TV, which is a different problem). tests/test_tv.py verifies
the mapping by objective values.

Backends (``backend=``): ``"triton"`` runs the kernels of ``fastwnll.kernels.tv_primal_dual`` (all
iterations and gap checks of a plane in one program for planes that fit on chip, the stopping flag
on the device, no host synchronisation; one launch per iteration over 32x32 tiles for larger planes,
with a host read of the stopping flags every ``CHECK_EVERY`` iterations) on CUDA tensors of dtype
float16/bfloat16/float32 (CPU tensors only under ``TRITON_INTERPRET=1``); ``"torch"`` runs the
vectorised torch iteration on any device (a host read every ``CHECK_EVERY`` iterations with a
tolerance); ``"auto"`` (default) picks triton for such CUDA tensors when triton is installed and
torch otherwise. Both perform the same arithmetic in the same order (they agree to float32
rounding, about 1e-6, and stop at the same iteration; tested). Computation is in float32 (float64
for float64 input on the torch path); the result has the input's dtype. On CPU the torch path runs
the batch in cache-sized chunks of planes.

Gradients: ``backward="bpda"`` (default) passes the incoming gradient through unchanged (the
identity, the standard BPDA choice for attacking an input transformation);
``backward="unrolled"`` differentiates exactly through all iterations that ran on the torch path
(on CUDA too, where it replaces the kernel; the stopping iteration is piecewise constant and
carries no gradient). Autograd then saves ``UNROLLED_TENSORS_PER_ITER`` (8) plane-sized tensors per
iteration: 1.3 GB for 100 iterations on a 128x3x32x32 float32 batch, and the forward's temporaries
come on top (the process grew by 3.6 GB on the CPU, measured), so a 512-image batch needs four
times as much: use the unrolled gradient on small batches or few iterations.
"""

from __future__ import annotations

import importlib.util
import math
import numbers
import os
import warnings
from typing import NamedTuple, Optional

import torch

from fastwnll.tv.exact import closed_form_planes, closed_forms, constant_of, unit_planes
from fastwnll.tv.iteration import AutogradPlanes, InplacePlanes, iterate, plane_steps

BACKWARDS = ("bpda", "unrolled")
BACKENDS = ("auto", "torch", "triton")
DEFAULT_ITERS = 500
DEFAULT_TOL = 1e-3
# A plane that ends its budget with a relative gap above max(10 * tol, WARN_GAP) is reported.
WARN_GAP = 1e-2
# Plane-sized tensors that autograd saves per iteration with backward="unrolled" (tested).
UNROLLED_TENSORS_PER_ITER = 8
# On CPU the in-place path runs on chunks of about this many pixels, so that its ~10 buffers stay in
# the cache: 1.6x (1024x1x28x28), 2.1x (512x3x32x32), 2.7x (32x3x224x224) faster than one pass over
# the whole batch, 1 thread of a 2-core EPYC.
CPU_CHUNK_PIXELS = 1 << 18
_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


class TVInfo(NamedTuple):
    """Convergence report of one call (``return_info=True``), one entry per plane.

    Attributes:
        iters: iterations run, int32 tensor of shape ``x.shape[:-2]`` (``[B, C]`` or ``[B]``), on
            ``x``'s device.
        gap: relative duality gap ``G / P(z)`` of the returned planes (0 where ``G <= 0``), float32,
            same shape: an upper bound of ``(P(z) - min P) / P(z)``.
        converged: bool tensor ``gap <= tol``, same shape, or None when ``tol`` is None.
    """

    iters: torch.Tensor
    gap: torch.Tensor
    converged: Optional[torch.Tensor]


class TVConvergenceWarning(UserWarning):
    """Some plane ended its iteration budget far from convergence."""


# ------------------------------------------------------------------------------------------------
# validation (public: fastwnll.nn.TVM uses the same checks)


def check_image(x) -> None:
    """Raise unless ``x`` is a finite floating-point tensor of shape [B, C, H, W] or [B, H, W]."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor (float16, bfloat16, float32 or float64), got {x.dtype}")
    if x.dim() not in (3, 4):
        raise ValueError(f"x must have shape [B, C, H, W] or [B, H, W], got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or Inf values")


def check_lam(lam, name: str = "lam") -> float:
    """``lam`` as a float; raises unless it is a finite real number > 0 (``name`` in the message)."""
    if isinstance(lam, bool) or not isinstance(lam, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(lam).__name__}")
    lam = float(lam)
    if not (math.isfinite(lam) and lam > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {lam}")
    return lam


def check_drop_rate(drop_rate, name: str = "drop_rate") -> float:
    """``drop_rate`` as a float; raises unless it is a real number in [0, 1)."""
    if isinstance(drop_rate, bool) or not isinstance(drop_rate, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(drop_rate).__name__}")
    drop_rate = float(drop_rate)
    if not 0.0 <= drop_rate < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {drop_rate}")
    return drop_rate


def check_options(iters, tol, isotropic, backward, backend, prefix: str = "") -> Optional[float]:
    """Validate the iteration options shared by :func:`tv_denoise`, :func:`tvm` and ``nn.TVM``;
    returns ``tol`` as a float (or None). ``prefix`` starts every message (e.g. ``"TVM "``)."""
    if isinstance(iters, bool) or not isinstance(iters, numbers.Integral):
        raise TypeError(f"{prefix}iters must be an int, got {type(iters).__name__}")
    if iters < 1:
        raise ValueError(f"{prefix}iters must be >= 1, got {iters}")
    if tol is not None:
        if isinstance(tol, bool) or not isinstance(tol, numbers.Real):
            raise TypeError(f"{prefix}tol must be None or a real number, got {type(tol).__name__}")
        tol = float(tol)
        if not (math.isfinite(tol) and tol > 0):
            raise ValueError(f"{prefix}tol must be None or a finite number > 0, got {tol}")
    if not isinstance(isotropic, bool):
        raise TypeError(f"{prefix}isotropic must be a bool, got {type(isotropic).__name__}")
    if backward not in BACKWARDS:
        raise ValueError(f"{prefix}unknown backward {backward!r}; choose one of {BACKWARDS}")
    if backend not in BACKENDS:
        raise ValueError(f"{prefix}unknown backend {backend!r}; choose one of {BACKENDS}")
    return tol


def check_generator(generator, x: torch.Tensor) -> None:
    """Raise unless ``generator`` is a ``torch.Generator`` on ``x``'s device type."""
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if generator.device.type != x.device.type:
        raise ValueError(f"generator is on {generator.device} but x is on {x.device}")


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


def _solve_planes(
    planes: torch.Tensor,
    weights: Optional[torch.Tensor],
    lam: float,
    iters: int,
    tol: Optional[float],
    isotropic: bool,
    use_kernel: bool,
    differentiable: bool,
):
    """Solve for ``planes`` [N, H, W] (any float dtype) with data weights ``weights`` (bool or float,
    [N, H, W]) or None, each plane at unit scale (``fastwnll.tv.exact.unit_planes``), a closed-form
    solution taken where it is certified (``fastwnll.tv.exact``; such planes do not iterate when
    ``tol`` is given). Returns ``z`` [N, H, W] in the input dtype, iterations [N] int32 and ``(P, G)``
    [N, 2] of the unit-scaled problem (``G / P`` is the relative gap; see :func:`_best`)."""
    compute = torch.float64 if planes.dtype == torch.float64 else torch.float32
    unit = unit_planes(planes.to(compute), lam)
    w = None if weights is None else weights.to(compute)
    with torch.no_grad():
        rows = closed_form_planes(unit.x, w, unit.lam, WARN_GAP if tol is None else tol).nonzero().squeeze(1)
    skip = closed = None
    if rows.numel():  # one host synchronisation
        constant, closed = closed_forms(unit.x[rows], None if w is None else w[rows], unit.lam[rows], isotropic)
        if tol is not None and not differentiable:  # certified: no iteration
            p, d = closed[..., 0], closed[..., 1]
            skip = torch.zeros(planes.shape[0], dtype=torch.bool, device=planes.device)
            skip[rows] = ((p - d) <= tol * p).any(1)
    lams = unit.lam.to(compute)
    z, its, pg = _iterate_planes(unit.x, w, lams, iters, tol, isotropic, use_kernel, differentiable, skip)
    out = z.to(compute) * unit.scale[:, None, None] + unit.lo[:, None, None]
    if closed is not None:
        choice, best = _best(pg[rows], closed, None if skip is None else skip[rows])
        pg = pg.double().index_put((rows,), best)
        if differentiable:  # the constant as a function of the planes, for autograd
            constant = constant_of(unit.x[rows], None if w is None else w[rows])
        level = constant.to(compute) * unit.scale[rows] + unit.lo[rows]
        level = level[:, None, None].expand(-1, *out.shape[1:])
        chosen = torch.where(choice[:, None, None] == 1, level, out[rows])
        chosen = torch.where(choice[:, None, None] == 2, planes[rows].to(compute), chosen)
        out = out.index_put((rows,), chosen)
    if bool(unit.subnormal.any()):
        warnings.warn(
            f"{int(unit.subnormal.sum())} of {planes.shape[0]} planes have a range below the normal range of "
            f"{compute} ({torch.finfo(compute).tiny:.3g}): their values, and the result, carry fewer significant "
            "bits than normal numbers",
            RuntimeWarning,
            stacklevel=5,
        )
    return out.to(planes.dtype), its, pg


def _best(pg: torch.Tensor, closed: torch.Tensor, skip: Optional[torch.Tensor]):
    """Per plane, the best of the iterate (``pg``: its ``P``, ``G`` [N, 2]) and the closed forms
    (``closed`` [N, 2, (P, D)]): returns the choice [N] (0 the iterate, 1 the constant, 2 the data:
    the smallest objective) and ``(P, G)`` [N, 2] float64 with ``P`` that objective and ``G = P -
    max D`` (every ``D`` is a lower bound of the optimum, so ``G`` bounds the error of the choice).
    Skipped planes (not iterated) have no iterate; a NaN objective or bound is never chosen."""
    p_it, g_it = pg[:, 0].double(), pg[:, 1].double()
    d_it = p_it - g_it
    if skip is not None:
        p_it = p_it.masked_fill(skip, float("inf"))
        d_it = d_it.masked_fill(skip, float("-inf"))
    p = torch.cat([p_it[:, None], closed[..., 0]], 1).nan_to_num(nan=float("inf"))
    d = torch.cat([d_it[:, None], closed[..., 1]], 1).nan_to_num(nan=float("-inf"))
    best, choice = p.min(1)
    return choice, torch.stack([best, best - d.amax(1)], 1)


def _iterate_planes(
    planes: torch.Tensor,
    weights: Optional[torch.Tensor],
    lam,
    iters: int,
    tol: Optional[float],
    isotropic: bool,
    use_kernel: bool,
    differentiable: bool,
    skip: Optional[torch.Tensor] = None,
):
    """The iteration on ``planes`` [N, H, W] (any float dtype) with data weights ``weights`` (bool or
    float, [N, H, W]) or None and ``lam`` (a number or one per plane, [N]). Returns ``z`` [N, H, W]
    in the input dtype, iterations [N] int32 and ``(P, G)`` [N, 2] (see
    ``fastwnll.tv.iteration.iterate``). Planes in ``skip`` (bool [N], not with ``differentiable``)
    do not iterate: they come back unchanged with 0 iterations and ``P = G = 0``."""
    if use_kernel:
        from fastwnll.kernels.tv_primal_dual import tv_primal_dual

        return tv_primal_dual(planes, weights, lam, iters, tol, isotropic, skip=skip)
    compute = torch.float64 if planes.dtype == torch.float64 else torch.float32
    x = planes.to(compute)
    w = None if weights is None else weights.to(compute)
    lam = torch.as_tensor(lam, dtype=compute, device=x.device).expand(x.shape[0])
    if differentiable:
        z, its, pg = iterate(AutogradPlanes(x, w, plane_steps(x, lam, w is not None), isotropic), iters, tol)
        return z.to(planes.dtype), its, pg
    n, h, wd = x.shape
    step = n if x.is_cuda else max(1, CPU_CHUNK_PIXELS // (h * wd))
    if skip is None:
        out = torch.empty_like(planes)
        its = torch.empty(n, dtype=torch.int32, device=x.device)
        pg = torch.empty(n, 2, dtype=compute, device=x.device)
        for s in range(0, n, step):
            xs = x[s : s + step]
            ws = None if w is None else w[s : s + step]
            state = InplacePlanes(xs, ws, plane_steps(xs, lam[s : s + step], ws is not None), isotropic)
            out[s : s + step], its[s : s + step], pg[s : s + step] = iterate(state, iters, tol)
        return out, its, pg
    out, its = planes.clone(), torch.zeros(n, dtype=torch.int32, device=x.device)
    pg = torch.zeros(n, 2, dtype=compute, device=x.device)
    rows = (~skip).nonzero().squeeze(1)
    for s in range(0, rows.shape[0], step):
        chunk = rows[s : s + step]
        xs = x[chunk]
        ws = None if w is None else w[chunk]
        state = InplacePlanes(xs, ws, plane_steps(xs, lam[chunk], ws is not None), isotropic)
        z, its[chunk], pg[chunk] = iterate(state, iters, tol)
        out[chunk] = z.to(out.dtype)
    return out, its, pg


def _report(name: str, its: torch.Tensor, pg: torch.Tensor, shape, iters: int, tol: Optional[float]) -> TVInfo:
    """The :class:`TVInfo` of a call (``shape`` = the planes' leading shape); warns about planes
    that end the budget far from convergence."""
    p, g = pg[:, 0].float(), pg[:, 1].float()
    gap = torch.where(g > 0, g / p, torch.zeros_like(g))
    gap = torch.where(torch.isnan(p) | torch.isnan(g), torch.full_like(g, float("nan")), gap)
    bound = WARN_GAP if tol is None else max(10 * tol, WARN_GAP)
    far = ~(gap <= bound)  # NaN included
    if bool(far.any()):
        warnings.warn(
            f"{name}: {int(far.sum())} of {far.numel()} planes ended the {iters}-iteration budget with a "
            f"relative duality gap above {bound:g} (largest {float(gap.max()):.3g}); raise iters "
            f"(lam relative to the image range is what makes it hard: see fastwnll.tv.denoise)",
            TVConvergenceWarning,
            stacklevel=4,
        )
    return TVInfo(its.reshape(shape), gap.reshape(shape), None if tol is None else (gap <= tol).reshape(shape))


def _run(
    name: str,
    x: torch.Tensor,
    mask: Optional[torch.Tensor],
    lam: float,
    iters: int,
    tol: Optional[float],
    isotropic: bool,
    backward: str,
    backend: str,
    return_info: bool,
):
    use_kernel = _use_kernel(x, backend, backward)
    lead = x.shape[:-2]
    if x.numel() == 0:
        z = x.clone()
        empty = torch.zeros(lead, dtype=torch.int32, device=x.device)
        info = TVInfo(empty, empty.float(), None if tol is None else empty.bool())
        return (z, info) if return_info else z
    H, W = x.shape[-2:]
    weights = None if mask is None else mask.reshape(-1, H, W)
    if (
        backward == "unrolled"
        and torch.is_grad_enabled()
        and (x.requires_grad or (weights is not None and weights.requires_grad))
    ):
        z, its, pg = _solve_planes(x.reshape(-1, H, W), weights, lam, iters, tol, isotropic, False, True)
        z = z.reshape(x.shape)
    else:
        result = {}

        def solve(inp: torch.Tensor) -> torch.Tensor:
            w = None if weights is None else weights.detach()
            planes, result["its"], result["pg"] = _solve_planes(
                inp.detach().reshape(-1, H, W), w, lam, iters, tol, isotropic, use_kernel, False
            )
            return planes.reshape(x.shape)

        z = _IdentityBackward.apply(x, solve)
        its, pg = result["its"], result["pg"]
    info = _report(name, its, pg, lead, iters, tol)
    return (z, info) if return_info else z


# ------------------------------------------------------------------------------------------------
# public API


def tv_denoise(
    x: torch.Tensor,
    lam: float,
    *,
    iters: int = DEFAULT_ITERS,
    tol: Optional[float] = DEFAULT_TOL,
    isotropic: bool = True,
    backward: str = "bpda",
    backend: str = "auto",
    return_info: bool = False,
):
    """TV proximal operator (ROF denoising) of every plane of a batch.

    Returns ``argmin_z 1/2 ||z - x||^2 + lam * TV(z)`` for each channel of each image, computed
    with at most ``iters`` primal-dual iterations (see the module docstring).

    Args:
        x: [B, C, H, W] or [B, H, W] floating-point tensor (float16, bfloat16, float32, float64),
            CPU or CUDA, finite. A single image [C, H, W] may be passed as it is (its channels are
            independent planes either way).
        lam: TV weight, > 0, in the units of ``x`` (0.03 for images in [0, 1] is 0.03 * 255 for
            images in [0, 255]); equals ``weight`` of ``skimage.restoration.denoise_tv_chambolle``.
        iters: iteration budget (>= 1).
        tol: a plane stops once its relative duality gap is at most ``tol`` (checked every 10
            iterations); None runs exactly ``iters`` iterations.
        isotropic: isotropic TV (``sqrt(dx^2 + dy^2)``) if True, anisotropic (``|dx| + |dy|``) if False.
        backward: ``"bpda"`` (default; identity gradient) or ``"unrolled"`` (exact gradient through
            the iterations of the torch path).
        backend: ``"auto"`` (default), ``"torch"`` or ``"triton"``; see the module docstring.
        return_info: also return a :class:`TVInfo` (iterations and final gap of every plane).

    Returns:
        ``z``, same shape, dtype and device as ``x``; ``(z, info)`` with ``return_info=True``.
        Warns (:class:`TVConvergenceWarning`) when a plane ends the budget far from convergence.
    """
    check_image(x)
    lam = check_lam(lam)
    tol = check_options(iters, tol, isotropic, backward, backend)
    return _run("tv_denoise", x, None, lam, int(iters), tol, isotropic, backward, backend, return_info)


def tvm(
    x: torch.Tensor,
    *,
    drop_rate: float = 0.5,
    lam: float = 0.03,
    iters: int = DEFAULT_ITERS,
    tol: Optional[float] = DEFAULT_TOL,
    isotropic: bool = True,
    generator: Optional[torch.Generator] = None,
    mask: Optional[torch.Tensor] = None,
    backward: str = "bpda",
    backend: str = "auto",
    return_info: bool = False,
):
    """Total variation minimisation (Guo et al., ICLR 2018): masked TV reconstruction of a batch.

    Returns ``argmin_z 1/2 sum M (z - x)^2 + lam * TV(z)`` for each channel of each image, where the
    keep-mask ``M`` keeps each entry of ``x`` (each pixel of each channel) independently with
    probability ``1 - drop_rate``; dropped entries are filled in by the TV term. With
    ``drop_rate=0`` and no mask this is :func:`tv_denoise` (no random numbers are drawn).

    Args:
        x: [B, C, H, W] or [B, H, W] floating-point tensor with values in [0, 1], CPU or CUDA (a
            single image [C, H, W] may be passed as it is).
        drop_rate: probability of dropping an entry, in [0, 1); not used when ``mask`` is given.
        lam: TV weight, > 0, relative to the [0, 1] range (Guo et al.'s default 0.03).
        iters: iteration budget (>= 1).
        tol: relative duality gap at which a plane stops (checked every 10 iterations); None runs
            exactly ``iters`` iterations.
        isotropic: isotropic (True) or anisotropic (False) TV.
        generator: ``torch.Generator`` on ``x``'s device type that draws the mask (reproducible
            masks); the global generator when None. Not allowed together with ``mask``.
        mask: optional data weights of ``x``'s shape and device: bool (True = kept) or floating
            point in [0, 1].
        backward: ``"bpda"`` (default; identity gradient) or ``"unrolled"`` (exact gradient through
            the iterations for the drawn mask).
        backend: ``"auto"`` (default), ``"torch"`` or ``"triton"``; see the module docstring.
        return_info: also return a :class:`TVInfo` (iterations and final gap of every plane).

    Returns:
        ``z``, same shape, dtype and device as ``x``; ``(z, info)`` with ``return_info=True``.
        Warns (:class:`TVConvergenceWarning`) when a plane ends the budget far from convergence.
    """
    check_image(x)
    if x.numel():
        lo, hi = torch.aminmax(x.detach())
        if lo < 0 or hi > 1:
            raise ValueError(f"tvm expects x in [0, 1], got values in [{float(lo):.4g}, {float(hi):.4g}]")
    drop_rate = check_drop_rate(drop_rate)
    lam = check_lam(lam)
    tol = check_options(iters, tol, isotropic, backward, backend)
    if generator is not None:
        check_generator(generator, x)
    if mask is not None:
        if generator is not None:
            raise ValueError("pass either mask or generator, not both")
        _check_mask(mask, x)
    elif drop_rate > 0:
        mask = _draw_mask(x, drop_rate, generator)
    return _run("tvm", x, mask, lam, int(iters), tol, isotropic, backward, backend, return_info)


def _draw_mask(x: torch.Tensor, drop_rate: float, generator: Optional[torch.Generator]) -> torch.Tensor:
    return torch.rand(x.shape, generator=generator, device=x.device) >= drop_rate


def keep_mask(x: torch.Tensor, drop_rate: float = 0.5, *, generator: Optional[torch.Generator] = None) -> torch.Tensor:
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
    drop_rate = check_drop_rate(drop_rate)
    if generator is not None:
        check_generator(generator, x)
    return _draw_mask(x, drop_rate, generator)


__all__ = ["TVConvergenceWarning", "TVInfo", "keep_mask", "tv_denoise", "tvm"]
