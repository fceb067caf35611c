"""Triton kernels for the over-relaxed primal-dual TV iteration of ``fastwnll.tv``.

Both kernels perform the arithmetic of ``fastwnll.tv`` (``primal_dual_inplace``) in float32, in the
same order, so their iterates agree with the torch path up to float32 rounding:

* ``_tv_plane_kernel`` (fused): one program per plane, for planes whose power-of-two padded size is
  at most ``PLANE_MAX_ELEMENTS`` (28x28, 32x32, 64x64, 28x100, ...). The whole state (``z``, the dual
  ``p1``, ``p2``, the data terms) stays on chip for all iterations; the neighbour values of the
  stencil (``p1[i, j-1]``, ``p2[i-1, j]``, ``zb[i, j+1]``, ``zb[i+1, j]``) are ``tl.gather``\\ s along
  an axis of the register tile, so nothing goes to global memory between iterations. Global memory
  is touched twice per plane: one read of ``x`` (and the mask), one write of ``z``.
* ``_tv_tile_step_kernel`` (tiled, large planes such as 224x224): one iteration per launch over
  ``TILE`` x ``TILE`` tiles, the state ping-ponged between two float32 global buffers. The primal step
  at the right and lower neighbours (needed by the forward differences) is recomputed from the
  previous state, so tiles never wait for each other.

Devices: CUDA tensors; CPU tensors only under the Triton interpreter (``TRITON_INTERPRET=1`` set
before this module is imported), which the tests use.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

# Largest padded plane (BLOCK_H * BLOCK_W) that the fused kernel keeps on chip.
PLANE_MAX_ELEMENTS = 4096
# Tile edge of the one-iteration-per-launch path.
TILE = 32
PATHS = ("auto", "plane", "tiled")


@triton.jit
def _project(q1, q2, ISOTROPIC: tl.constexpr):
    """Projection of each (q1, q2) onto the unit disc (isotropic) or the unit box (anisotropic)."""
    if ISOTROPIC:
        scale = tl.rsqrt(tl.maximum(q1 * q1 + q2 * q2, 1.0))
        return q1 * scale, q2 * scale
    else:
        return tl.minimum(tl.maximum(q1, -1.0), 1.0), tl.minimum(tl.maximum(q2, -1.0), 1.0)


@triton.jit
def _relax(p, pt, rho):
    """``p + rho * (pt - p)`` written as torch's ``lerp`` computes it for weights >= 0.5."""
    return pt - (pt - p) * (1.0 - rho)


@triton.jit
def _tv_plane_kernel(x_ptr, w_ptr, out_ptr, H, W, iters, tau, a, b, inv, c, rho,
                     HAS_MASK: tl.constexpr, ISOTROPIC: tl.constexpr,
                     BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    plane = tl.program_id(0).to(tl.int64)
    rows = tl.arange(0, BLOCK_H)[:, None]
    cols = tl.arange(0, BLOCK_W)[None, :]
    inside = (rows < H) & (cols < W)
    offs = plane * H * W + rows * W + cols
    x = tl.load(x_ptr + offs, mask=inside, other=0.0).to(tl.float32)
    if HAS_MASK:
        tm = tau * tl.load(w_ptr + offs, mask=inside, other=0).to(tl.float32)
        inv_m = 1.0 / (1.0 + tm)
        data = tm * x * inv_m
    else:
        data = x * c
    # gather indices of the neighbours (clamped; the clamped lanes are replaced by 0 below)
    left = tl.maximum(cols - 1, 0) + rows * 0
    right = tl.minimum(cols + 1, BLOCK_W - 1) + rows * 0
    up = tl.maximum(rows - 1, 0) + cols * 0
    down = tl.minimum(rows + 1, BLOCK_H - 1) + cols * 0
    has_left = cols > 0
    has_right = cols < W - 1
    has_up = rows > 0
    has_down = rows < H - 1
    # Padding lanes (row >= H or col >= W) keep z = p = 0: their data term and differences are 0.
    z = x
    p1 = tl.zeros([BLOCK_H, BLOCK_W], dtype=tl.float32)
    p2 = tl.zeros([BLOCK_H, BLOCK_W], dtype=tl.float32)
    for _ in range(iters):
        dv = (p1 + p2) - tl.where(has_left, tl.gather(p1, left, 1), 0.0)
        dv = dv - tl.where(has_up, tl.gather(p2, up, 0), 0.0)
        if HAS_MASK:
            zt = (z + a * dv) * inv_m + data
        else:
            zt = (z + a * dv) * inv + data
        d = zt - z
        zb = zt + d
        q1 = p1 + b * tl.where(has_right, tl.gather(zb, right, 1) - zb, 0.0)
        q2 = p2 + b * tl.where(has_down, tl.gather(zb, down, 0) - zb, 0.0)
        pt1, pt2 = _project(q1, q2, ISOTROPIC)
        p1 = _relax(p1, pt1, rho)
        p2 = _relax(p2, pt2, rho)
        z = z + rho * d
    tl.store(out_ptr + offs, z.to(out_ptr.dtype.element_ty), mask=inside)


@triton.jit
def _primal_at(x_ptr, w_ptr, z_ptr, p1_ptr, p2_ptr, base, r, c, H, W, tau, a, inv, cx,
               HAS_MASK: tl.constexpr):
    """Primal step ``zt`` and current ``z``, ``p1``, ``p2`` at pixels (r, c) of one plane (0 outside)."""
    inside = (r < H) & (c < W)
    off = base + r * W + c
    p1 = tl.load(p1_ptr + off, mask=inside, other=0.0)
    p2 = tl.load(p2_ptr + off, mask=inside, other=0.0)
    p1l = tl.load(p1_ptr + off - 1, mask=inside & (c > 0), other=0.0)
    p2u = tl.load(p2_ptr + off - W, mask=inside & (r > 0), other=0.0)
    z = tl.load(z_ptr + off, mask=inside, other=0.0)
    x = tl.load(x_ptr + off, mask=inside, other=0.0).to(tl.float32)
    dv = (p1 + p2) - p1l - p2u
    if HAS_MASK:
        tm = tau * tl.load(w_ptr + off, mask=inside, other=0).to(tl.float32)
        inv_m = 1.0 / (1.0 + tm)
        zt = (z + a * dv) * inv_m + tm * x * inv_m
    else:
        zt = (z + a * dv) * inv + x * cx
    return zt, z, p1, p2


@triton.jit
def _tv_tile_step_kernel(x_ptr, w_ptr, z_ptr, p1_ptr, p2_ptr, z_out, p1_out, p2_out,
                         H, W, tiles_h, tiles_w, tau, a, b, inv, cx, rho,
                         HAS_MASK: tl.constexpr, ISOTROPIC: tl.constexpr,
                         BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    pid = tl.program_id(0)
    per_plane = tiles_h * tiles_w
    plane = pid // per_plane
    tile = pid % per_plane
    r = (tile // tiles_w) * BLOCK_H + tl.arange(0, BLOCK_H)[:, None]
    c = (tile % tiles_w) * BLOCK_W + tl.arange(0, BLOCK_W)[None, :]
    base = plane.to(tl.int64) * H * W
    zt, z, p1, p2 = _primal_at(x_ptr, w_ptr, z_ptr, p1_ptr, p2_ptr, base, r, c, H, W,
                               tau, a, inv, cx, HAS_MASK)
    zt_r, z_r, _, _ = _primal_at(x_ptr, w_ptr, z_ptr, p1_ptr, p2_ptr, base, r, c + 1, H, W,
                                 tau, a, inv, cx, HAS_MASK)
    zt_d, z_d, _, _ = _primal_at(x_ptr, w_ptr, z_ptr, p1_ptr, p2_ptr, base, r + 1, c, H, W,
                                 tau, a, inv, cx, HAS_MASK)
    d = zt - z
    zb = zt + d
    q1 = p1 + b * tl.where(c < W - 1, (zt_r + (zt_r - z_r)) - zb, 0.0)
    q2 = p2 + b * tl.where(r < H - 1, (zt_d + (zt_d - z_d)) - zb, 0.0)
    pt1, pt2 = _project(q1, q2, ISOTROPIC)
    inside = (r < H) & (c < W)
    off = base + r * W + c
    tl.store(z_out + off, z + rho * d, mask=inside)
    tl.store(p1_out + off, _relax(p1, pt1, rho), mask=inside)
    tl.store(p2_out + off, _relax(p2, pt2, rho), mask=inside)


def plane_fits(h: int, w: int) -> bool:
    """Whether an ``h`` x ``w`` plane fits the fused kernel (padded size <= PLANE_MAX_ELEMENTS)."""
    return triton.next_power_of_2(h) * triton.next_power_of_2(w) <= PLANE_MAX_ELEMENTS


def tv_primal_dual(planes: torch.Tensor, weights: Optional[torch.Tensor], consts: dict, iters: int,
                   isotropic: bool, path: str = "auto") -> torch.Tensor:
    """Run ``iters`` primal-dual TV iterations on every plane with the Triton kernels.

    Args:
        planes: [N, H, W] float16/bfloat16/float32 tensor (CUDA, or CPU under the interpreter).
        weights: data weights ``M`` [N, H, W] (bool or floating point, same device) or None for M = 1.
        consts: the step scalars of ``fastwnll.tv.step_constants``.
        iters: number of iterations (>= 1).
        isotropic: isotropic (True) or anisotropic (False) TV.
        path: ``"plane"`` (fused; needs :func:`plane_fits`), ``"tiled"`` (one launch per iteration)
            or ``"auto"`` (fused when the plane fits).

    Returns:
        ``z`` [N, H, W] in ``planes``' dtype, on its device; computed in float32.
    """
    if path not in PATHS:
        raise ValueError(f"unknown path {path!r}; choose one of {PATHS}")
    if planes.dim() != 3:
        raise ValueError(f"planes must have shape [N, H, W], got {tuple(planes.shape)}")
    if weights is not None and weights.shape != planes.shape:
        raise ValueError(f"weights must have shape {tuple(planes.shape)}, got {tuple(weights.shape)}")
    n, h, w = planes.shape
    if path == "auto":
        path = "plane" if plane_fits(h, w) else "tiled"
    if path == "plane" and not plane_fits(h, w):
        raise ValueError(f"a {h}x{w} plane does not fit the fused kernel "
                         f"(padded size above {PLANE_MAX_ELEMENTS} elements); use path='tiled'")
    planes = planes.contiguous()
    has_mask = weights is not None
    w_arg = weights.contiguous() if has_mask else planes  # never read without a mask
    scalars = (consts["tau"], consts["a"], consts["b"], consts["inv"], consts["c"], consts["rho"])
    if path == "plane":
        block_h, block_w = triton.next_power_of_2(h), triton.next_power_of_2(w)
        out = torch.empty_like(planes)
        _tv_plane_kernel[(n,)](planes, w_arg, out, h, w, iters, *scalars,
                               HAS_MASK=has_mask, ISOTROPIC=isotropic, BLOCK_H=block_h,
                               BLOCK_W=block_w, num_warps=max(1, min(16, block_h * block_w // 256)))
        return out
    state = [planes.to(torch.float32, copy=True), torch.zeros_like(planes, dtype=torch.float32),
             torch.zeros_like(planes, dtype=torch.float32)]
    spare = [torch.empty_like(s) for s in state]
    tiles_h, tiles_w = triton.cdiv(h, TILE), triton.cdiv(w, TILE)
    grid = (n * tiles_h * tiles_w,)
    for _ in range(iters):
        _tv_tile_step_kernel[grid](planes, w_arg, *state, *spare, h, w, tiles_h, tiles_w, *scalars,
                                   HAS_MASK=has_mask, ISOTROPIC=isotropic,
                                   BLOCK_H=TILE, BLOCK_W=TILE, num_warps=4)
        state, spare = spare, state
    return state[0].to(planes.dtype)
