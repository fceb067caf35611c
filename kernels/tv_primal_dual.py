"""Triton kernels for the over-relaxed primal-dual TV iteration of ``fastwnll.tv.denoise``.

Both kernels perform the arithmetic of ``fastwnll.tv.iteration`` (``InplacePlanes`` and
``duality_gap``) in float32, in the same order, with the per-plane offsets and steps of its
``plane_steps``, so their iterates agree with the torch path up to float32 rounding, and they stop
a plane at the same check (gap ``G <= tol * P`` every ``CHECK_EVERY`` iterations):

* ``_tv_plane_kernel`` (fused): one program per plane, for planes that :func:`plane_fits`. The whole
  state (``z``, the dual ``p1``, ``p2``, the data terms) stays on chip for all iterations; the
  neighbour values of the stencil (``p1[i, j-1]``, ``p2[i-1, j]``, ``zb[i, j+1]``, ``zb[i+1, j]``) are
  ``tl.gather``\\ s along an axis of the register tile, so nothing goes to global memory between
  iterations. The gap checks run in the program too, and a converged plane leaves its loop: no
  host synchronisation. Global memory is touched once per plane to read ``x`` (and the mask, also
  at every check) and once to write ``z``, its iteration count and its last ``(P, G)``.
* ``_tv_tile_step_kernel`` (tiled, larger planes such as 224x224): one iteration per launch over
  ``TILE`` x ``TILE`` tiles, the state ping-ponged between two float32 global buffers. The primal step
  at the right and lower neighbours (needed by the forward differences) is recomputed from the
  previous state, so tiles never wait for each other. Planes whose flag in ``active`` is 0 copy
  their state unchanged. ``_tv_tile_gap_kernel`` writes per-tile partial sums of ``P`` and ``G``;
  the loop of ``fastwnll.tv.iteration.iterate`` reads the stopping flags on the host every
  ``CHECK_EVERY`` iterations.

Devices: CUDA tensors (launched on the tensors' device and its current stream); CPU tensors only
under the Triton interpreter (``TRITON_INTERPRET=1`` set before this module is imported), which
the tests use.
"""

from __future__ import annotations

import contextlib
from typing import Optional

import torch
import triton
import triton.language as tl

from fastwnll.tv.iteration import CHECK_EVERY, LO, RHO, STEP_COLUMNS, iterate, plane_steps

# Largest padded plane (BLOCK_H * BLOCK_W) that the fused kernel keeps on chip, with 8 elements per
# thread: 2048 (32x64, 8 warps) uses 213 registers per thread (sm_90); 64x64 needs 16 warps, which
# caps a thread at 128 registers, and spilled 64-128 bytes per thread with the gap checks. And the
# smallest padded side above one warp's worth of elements: a strip puts the gathers of a row across
# warps; 1 x 2048 spilled 1.5 kB per thread, 2 x 1024 and 4 x 512 used 255 and 241 of the 255
# registers, 8 x 256 the 213 of 32x64 (compiled for sm_90 with Triton 3.8; tests/test_tv.py
# compiles the extreme tiles for sm_80 and sm_90 and checks that nothing spills).
PLANE_MAX_ELEMENTS = 2048
MIN_SIDE = 8
ONE_WARP_ELEMENTS = 256
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
def _load_steps(sp):
    """One plane's row of ``plane_steps``: ``lo, range, tau, a, b, inv, c, lam`` (columns LO ... LAM)."""
    return (
        tl.load(sp),
        tl.load(sp + 1),
        tl.load(sp + 2),
        tl.load(sp + 3),
        tl.load(sp + 4),
        tl.load(sp + 5),
        tl.load(sp + 6),
        tl.load(sp + 7),
    )


@triton.jit
def _gap_terms(x, z, m, g, zr, zd_, rng, lam, HAS_MASK: tl.constexpr, ISOTROPIC: tl.constexpr):
    """Per-pixel primal and (primal - dual) terms of ``duality_gap``: ``g = lam * div proj(p)``,
    ``zr``/``zd_`` = the forward differences of ``z`` along W and H."""
    if ISOTROPIC:
        tv = tl.sqrt(zr * zr + zd_ * zd_)
    else:
        tv = tl.abs(zr) + tl.abs(zd_)
    r = z - x
    if HAS_MASK:
        primal = 0.5 * m * (r * r) + lam * tv
        kept = m > 0
        t = tl.where(kept, x + g / tl.where(kept, m, 1.0), tl.where(g > 0, rng, 0.0))
    else:
        primal = 0.5 * (r * r) + lam * tv
        t = x + g
    zd = tl.minimum(tl.maximum(t, 0.0), rng)
    rd = zd - x
    if HAS_MASK:
        dual = 0.5 * m * (rd * rd) - g * zd
    else:
        dual = 0.5 * (rd * rd) - g * zd
    return primal, primal - dual


@triton.jit
def _tv_plane_kernel(
    x_ptr,
    w_ptr,
    steps_ptr,
    out_ptr,
    iters_ptr,
    pg_ptr,
    budget_ptr,
    H,
    W,
    every,
    tol,
    rho,
    HAS_MASK: tl.constexpr,
    ISOTROPIC: tl.constexpr,
    NSTEPS: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    plane = tl.program_id(0).to(tl.int64)
    rows = tl.arange(0, BLOCK_H)[:, None]
    cols = tl.arange(0, BLOCK_W)[None, :]
    inside = (rows < H) & (cols < W)
    offs = rows * W + cols  # int32 offsets in the plane (fewer registers than int64)
    x_ptr += plane * H * W
    w_ptr += plane * H * W
    out_ptr += plane * H * W
    lo, rng, tau, a, b, inv, c, lam = _load_steps(steps_ptr + plane * NSTEPS)
    iters = tl.load(budget_ptr + plane)
    x = tl.where(inside, tl.load(x_ptr + offs, mask=inside, other=0.0).to(tl.float32) - lo, 0.0)
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
    k = 0
    running = 1
    while (k < iters) & (running != 0):
        dv = (p1 + p2) - tl.where(has_left, tl.gather(p1, left, 1), 0.0)
        dv = dv - tl.where(has_up, tl.gather(p2, up, 0), 0.0)
        if HAS_MASK:
            zt = (a * dv + z) * inv_m + data
        else:
            zt = (a * dv + z) * inv + data
        d = zt - z
        zb = zt + d
        q1 = b * tl.where(has_right, tl.gather(zb, right, 1) - zb, 0.0) + p1
        q2 = b * tl.where(has_down, tl.gather(zb, down, 0) - zb, 0.0) + p2
        pt1, pt2 = _project(q1, q2, ISOTROPIC)
        p1 = _relax(p1, pt1, rho)
        p2 = _relax(p2, pt2, rho)
        z = z + rho * d
        k += 1
        if (k % every == 0) | (k == iters):
            if HAS_MASK:
                m = tl.load(w_ptr + offs, mask=inside, other=0).to(tl.float32)
            else:
                m = 1.0
            zr = tl.where(has_right, tl.gather(z, right, 1) - z, 0.0)
            zd_ = tl.where(has_down, tl.gather(z, down, 0) - z, 0.0)
            g1, g2 = _project(p1, p2, ISOTROPIC)
            g = (g1 + g2) - tl.where(has_left, tl.gather(g1, left, 1), 0.0)
            g = lam * (g - tl.where(has_up, tl.gather(g2, up, 0), 0.0))
            primal, gap = _gap_terms(x, z, m, g, zr, zd_, rng, lam, HAS_MASK, ISOTROPIC)
            P = tl.sum(tl.sum(tl.where(inside, primal, 0.0), 1), 0)
            G = tl.sum(tl.sum(tl.where(inside, gap, 0.0), 1), 0)
            tl.store(pg_ptr + 2 * plane, P)
            tl.store(pg_ptr + 2 * plane + 1, G)
            if G <= tol * P:
                running = 0
    tl.store(out_ptr + offs, (z + lo).to(out_ptr.dtype.element_ty), mask=inside)
    tl.store(iters_ptr + plane, k)


@triton.jit
def _primal_at(x_ptr, w_ptr, z_ptr, p1_ptr, p2_ptr, base, r, c, H, W, lo, tau, a, inv, cx, HAS_MASK: tl.constexpr):
    """Primal step ``zt`` and current ``z``, ``p1``, ``p2`` at pixels (r, c) of one plane (0 outside)."""
    inside = (r < H) & (c < W)
    off = base + r * W + c
    p1 = tl.load(p1_ptr + off, mask=inside, other=0.0)
    p2 = tl.load(p2_ptr + off, mask=inside, other=0.0)
    p1l = tl.load(p1_ptr + off - 1, mask=inside & (c > 0), other=0.0)
    p2u = tl.load(p2_ptr + off - W, mask=inside & (r > 0), other=0.0)
    z = tl.load(z_ptr + off, mask=inside, other=0.0)
    x = tl.load(x_ptr + off, mask=inside, other=0.0).to(tl.float32) - lo
    dv = (p1 + p2) - p1l - p2u
    if HAS_MASK:
        tm = tau * tl.load(w_ptr + off, mask=inside, other=0).to(tl.float32)
        inv_m = 1.0 / (1.0 + tm)
        zt = (a * dv + z) * inv_m + tm * x * inv_m
    else:
        zt = (a * dv + z) * inv + x * cx
    return zt, z, p1, p2


@triton.jit
def _tile_coords(pid, H, W, tiles_h, tiles_w, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """Plane, row and column indices of program ``pid``'s tile, and the plane's offset in the batch."""
    per_plane = tiles_h * tiles_w
    plane = pid // per_plane
    tile = pid % per_plane
    r = (tile // tiles_w) * BLOCK_H + tl.arange(0, BLOCK_H)[:, None]
    c = (tile % tiles_w) * BLOCK_W + tl.arange(0, BLOCK_W)[None, :]
    return plane, r, c, plane.to(tl.int64) * H * W


@triton.jit
def _tv_tile_step_kernel(
    x_ptr,
    w_ptr,
    steps_ptr,
    active_ptr,
    z_ptr,
    p1_ptr,
    p2_ptr,
    z_out,
    p1_out,
    p2_out,
    H,
    W,
    tiles_h,
    tiles_w,
    rho,
    HAS_MASK: tl.constexpr,
    ISOTROPIC: tl.constexpr,
    NSTEPS: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    plane, r, c, base = _tile_coords(tl.program_id(0), H, W, tiles_h, tiles_w, BLOCK_H, BLOCK_W)
    lo, _, tau, a, b, inv, cx, _ = _load_steps(steps_ptr + plane.to(tl.int64) * NSTEPS)
    active = tl.load(active_ptr + plane) != 0
    zt, z, p1, p2 = _primal_at(x_ptr, w_ptr, z_ptr, p1_ptr, p2_ptr, base, r, c, H, W, lo, tau, a, inv, cx, HAS_MASK)
    zt_r, z_r, _, _ = _primal_at(
        x_ptr, w_ptr, z_ptr, p1_ptr, p2_ptr, base, r, c + 1, H, W, lo, tau, a, inv, cx, HAS_MASK
    )
    zt_d, z_d, _, _ = _primal_at(
        x_ptr, w_ptr, z_ptr, p1_ptr, p2_ptr, base, r + 1, c, H, W, lo, tau, a, inv, cx, HAS_MASK
    )
    d = zt - z
    zb = zt + d
    q1 = b * tl.where(c < W - 1, (zt_r + (zt_r - z_r)) - zb, 0.0) + p1
    q2 = b * tl.where(r < H - 1, (zt_d + (zt_d - z_d)) - zb, 0.0) + p2
    pt1, pt2 = _project(q1, q2, ISOTROPIC)
    inside = (r < H) & (c < W)
    off = base + r * W + c
    tl.store(z_out + off, tl.where(active, z + rho * d, z), mask=inside)
    tl.store(p1_out + off, tl.where(active, _relax(p1, pt1, rho), p1), mask=inside)
    tl.store(p2_out + off, tl.where(active, _relax(p2, pt2, rho), p2), mask=inside)


@triton.jit
def _projected_at(p1_ptr, p2_ptr, off, ok, ISOTROPIC: tl.constexpr):
    """The dual iterate at ``off`` projected onto the unit disc/box (0 where not ``ok``)."""
    p1 = tl.load(p1_ptr + off, mask=ok, other=0.0)
    p2 = tl.load(p2_ptr + off, mask=ok, other=0.0)
    return _project(p1, p2, ISOTROPIC)


@triton.jit
def _tv_tile_gap_kernel(
    x_ptr,
    w_ptr,
    steps_ptr,
    z_ptr,
    p1_ptr,
    p2_ptr,
    out_ptr,
    H,
    W,
    tiles_h,
    tiles_w,
    HAS_MASK: tl.constexpr,
    ISOTROPIC: tl.constexpr,
    NSTEPS: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    plane, r, c, base = _tile_coords(tl.program_id(0), H, W, tiles_h, tiles_w, BLOCK_H, BLOCK_W)
    lo, rng, _, _, _, _, _, lam = _load_steps(steps_ptr + plane.to(tl.int64) * NSTEPS)
    inside = (r < H) & (c < W)
    off = base + r * W + c
    x = tl.load(x_ptr + off, mask=inside, other=0.0).to(tl.float32) - lo
    z = tl.load(z_ptr + off, mask=inside, other=0.0)
    z_r = tl.load(z_ptr + off + 1, mask=inside & (c < W - 1), other=0.0)
    z_d = tl.load(z_ptr + off + W, mask=inside & (r < H - 1), other=0.0)
    g1, g2 = _projected_at(p1_ptr, p2_ptr, off, inside, ISOTROPIC)
    g1l, _ = _projected_at(p1_ptr, p2_ptr, off - 1, inside & (c > 0), ISOTROPIC)
    _, g2u = _projected_at(p1_ptr, p2_ptr, off - W, inside & (r > 0), ISOTROPIC)
    g = lam * (((g1 + g2) - g1l) - g2u)
    if HAS_MASK:
        m = tl.load(w_ptr + off, mask=inside, other=0).to(tl.float32)
    else:
        m = 1.0
    zr = tl.where(c < W - 1, z_r - z, 0.0)
    zd_ = tl.where(r < H - 1, z_d - z, 0.0)
    primal, gap = _gap_terms(x, z, m, g, zr, zd_, rng, lam, HAS_MASK, ISOTROPIC)
    out_ptr += 2 * tl.program_id(0)
    tl.store(out_ptr, tl.sum(tl.sum(tl.where(inside, primal, 0.0), 1), 0))
    tl.store(out_ptr + 1, tl.sum(tl.sum(tl.where(inside, gap, 0.0), 1), 0))


def plane_fits(h: int, w: int) -> bool:
    """Whether an ``h`` x ``w`` plane runs in the fused kernel: its power-of-two padded tile has at most
    ``PLANE_MAX_ELEMENTS`` elements and both padded sides are at least ``MIN_SIDE``, or the whole
    tile fits one warp (``ONE_WARP_ELEMENTS``). A pure function of the shape (no GPU needed)."""
    bh, bw = triton.next_power_of_2(h), triton.next_power_of_2(w)
    return bh * bw <= PLANE_MAX_ELEMENTS and (min(bh, bw) >= MIN_SIDE or bh * bw <= ONE_WARP_ELEMENTS)


def device_guard(t: torch.Tensor):
    """Context that makes ``t``'s CUDA device current (so kernels launch there, on its current
    stream); a no-op for CPU tensors (the interpreter)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


class _TiledPlanes:
    """Iteration state of the tiled path for ``iterate``: full-batch buffers, a flag per plane."""

    def __init__(self, planes, weights, steps, isotropic):
        n, self.h, self.w = planes.shape
        self.planes, self.weights, self.steps, self.isotropic = planes, weights, steps, isotropic
        self.state = [
            (planes.to(torch.float32) - steps[:, LO, None, None]).contiguous(),
            torch.zeros_like(planes, dtype=torch.float32),
            torch.zeros_like(planes, dtype=torch.float32),
        ]
        self.spare = [torch.empty_like(s) for s in self.state]
        self.rows = torch.arange(n, device=planes.device)
        self.active = torch.ones(n, dtype=torch.int32, device=planes.device)
        self.tiles_h, self.tiles_w = triton.cdiv(self.h, TILE), triton.cdiv(self.w, TILE)
        self.grid = (n * self.tiles_h * self.tiles_w,)
        self.consts = dict(
            HAS_MASK=weights is not None,
            ISOTROPIC=isotropic,
            NSTEPS=STEP_COLUMNS,
            BLOCK_H=TILE,
            BLOCK_W=TILE,
            num_warps=4,
        )

    def _w(self):
        return self.weights if self.weights is not None else self.planes  # never read without a mask

    def run(self, iters: int) -> None:
        with device_guard(self.planes):
            for _ in range(iters):
                _tv_tile_step_kernel[self.grid](
                    self.planes,
                    self._w(),
                    self.steps,
                    self.active,
                    *self.state,
                    *self.spare,
                    self.h,
                    self.w,
                    self.tiles_h,
                    self.tiles_w,
                    RHO,
                    **self.consts,
                )
                self.state, self.spare = self.spare, self.state

    def gap(self) -> torch.Tensor:
        sums = torch.empty(self.grid[0], 2, dtype=torch.float32, device=self.planes.device)
        with device_guard(self.planes):
            _tv_tile_gap_kernel[self.grid](
                self.planes,
                self._w(),
                self.steps,
                *self.state,
                sums,
                self.h,
                self.w,
                self.tiles_h,
                self.tiles_w,
                **self.consts,
            )
        return sums.view(-1, self.tiles_h * self.tiles_w, 2).sum(1)[self.rows]

    def output(self) -> torch.Tensor:
        return self.state[0][self.rows] + self.steps[self.rows, LO, None, None]

    def keep(self, rows: torch.Tensor) -> None:
        self.rows = self.rows[rows]
        self.active.zero_()
        self.active[self.rows] = 1


def tv_primal_dual(
    planes: torch.Tensor,
    weights: Optional[torch.Tensor],
    lam,
    iters: int,
    tol: Optional[float],
    isotropic: bool,
    path: str = "auto",
    skip: Optional[torch.Tensor] = None,
):
    """Run at most ``iters`` primal-dual TV iterations on every plane with the Triton kernels.

    Args:
        planes: [N, H, W] float16/bfloat16/float32 tensor (CUDA, or CPU under the interpreter).
        weights: data weights ``M`` [N, H, W] (bool or floating point, same device) or None for M = 1.
        lam: TV weight, > 0: a number, or one per plane ([N] tensor on the planes' device).
        iters: iteration budget (>= 1).
        tol: relative duality gap at which a plane stops (checked every ``CHECK_EVERY`` iterations),
            or None (exactly ``iters`` iterations).
        isotropic: isotropic (True) or anisotropic (False) TV.
        path: ``"plane"`` (fused; needs :func:`plane_fits`), ``"tiled"`` (one launch per iteration)
            or ``"auto"`` (fused when the plane fits).
        skip: bool [N] (planes' device) or None: planes that do not iterate (solved already); they
            come back unchanged, with 0 iterations and ``P = G = 0``. The fused kernel reads it on
            the device (no host synchronisation); the tiled path selects the other planes.

    Returns:
        ``(z, iters, pg)``: ``z`` [N, H, W] in ``planes``' dtype, on its device, computed in float32;
        the iterations run per plane [N] int32; ``P`` and ``G`` [N, 2] float32 at the last check.
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
        raise ValueError(
            f"a {h}x{w} plane does not fit the fused kernel (padded size above "
            f"{PLANE_MAX_ELEMENTS} elements or a side below {MIN_SIDE}); use path='tiled'"
        )
    planes = planes.contiguous()
    weights = None if weights is None else weights.contiguous()
    if path == "tiled" and skip is not None:
        return _tiled_except(planes, weights, lam, iters, tol, isotropic, skip)
    with device_guard(planes):
        steps = plane_steps(planes.to(torch.float32), lam, weights is not None).contiguous()
    if path == "tiled":
        z, its, pg = iterate(_TiledPlanes(planes, weights, steps, isotropic), iters, tol)
        return z.to(planes.dtype), its, pg
    block_h, block_w = triton.next_power_of_2(h), triton.next_power_of_2(w)
    out = torch.empty_like(planes)
    its = torch.empty(n, dtype=torch.int32, device=planes.device)
    pg = torch.zeros(n, 2, dtype=torch.float32, device=planes.device)  # skipped planes: 0, 0
    every = CHECK_EVERY if tol is not None else iters
    budget = torch.full((n,), iters, dtype=torch.int32, device=planes.device)
    if skip is not None:
        budget.masked_fill_(skip, 0)
    with device_guard(planes):
        _tv_plane_kernel[(n,)](
            planes,
            weights if weights is not None else planes,
            steps,
            out,
            its,
            pg,
            budget,
            h,
            w,
            every,
            0.0 if tol is None else tol,
            RHO,
            HAS_MASK=weights is not None,
            ISOTROPIC=isotropic,
            NSTEPS=STEP_COLUMNS,
            BLOCK_H=block_h,
            BLOCK_W=block_w,
            num_warps=max(1, block_h * block_w // ONE_WARP_ELEMENTS),
        )
    return out, its, pg


def _tiled_except(planes, weights, lam, iters, tol, isotropic, skip):
    """The tiled path on the planes not in ``skip`` (selected on the host); the others unchanged."""
    out = planes.clone()
    its = torch.zeros(planes.shape[0], dtype=torch.int32, device=planes.device)
    pg = torch.zeros(planes.shape[0], 2, dtype=torch.float32, device=planes.device)
    rows = (~skip).nonzero().squeeze(1)
    if rows.numel():
        lam = lam[rows] if isinstance(lam, torch.Tensor) and lam.dim() else lam
        z, its[rows], pg[rows] = tv_primal_dual(
            planes[rows], None if weights is None else weights[rows], lam, iters, tol, isotropic, "tiled"
        )
        out[rows] = z
    return out, its, pg
