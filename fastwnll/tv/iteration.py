"""The primal-dual TV iteration of :mod:`fastwnll.tv.denoise` in plain torch, its duality gap, and the loop
that stops planes once their gap is below the tolerance.

Every function here works on a stack of planes ``x`` [N, H, W] (float32 or float64, any device) with
optional data weights ``m`` (same shape and dtype, values in [0, 1]) and solves, per plane,

    z* = argmin_z  P(z),   P(z) = 1/2 * sum m * (z - x)^2  +  lam * TV(z).

Coordinates: every plane is shifted by its minimum ``lo`` before iterating (``x - lo`` lies in
[0, R], ``R`` = the plane's range); the iteration is translation-equivariant, so this changes
rounding only (it keeps float32 accurate for images with a large common offset), and it gives the
box [0, R] that contains the minimiser (clipping to the data range lowers both terms of ``P``).
``fastwnll.tv.denoise`` brings every plane to unit scale before (``fastwnll.tv.exact.unit_planes``),
so ``lam`` is a per-plane weight here (column ``LAM`` of the step table).

Step sizes (per plane, :func:`plane_steps`): the primal step ``tau`` is dimensionless and depends
on ``lam`` only through ``lam / R``, so the iterates are scale-equivariant: scaling ``x`` and ``lam``
by ``s`` scales every iterate by ``s``, and [0, 255] images with ``lam * 255`` take exactly as many
iterations as [0, 1] images with ``lam``. Without a mask ``tau = TAU_DENOISE``; with one
``tau = clamp(TAU_MASKED * R / lam, TAU_MIN, TAU_MAX)``. ``a = tau * lam`` and ``b = 1 / (8 a)``
satisfy the convergence condition ``tau * sigma * ||lam grad||^2 <= 1`` (``sigma = b / lam``,
``||grad||^2 <= 8``). The constants come from a grid search (``tau`` from 0.03 to 10, 30 to 100
iterations, float64, objective gap to a converged reference) on real MNIST digits and 28x28 crops
of natural photographs for ``lam / R`` from 0.003 to 3: without a mask ``tau`` 0.05-0.1 was best
at every ratio; with a drop rate of 0.5 the best ``tau`` fell like ``1 / (lam / R)`` (about 2 at
0.01, 0.5-1 at 0.03, 0.3 at 0.1) down to 0.1 from 0.3 on. The former rule, ``tau = 0.01 / lam``
whatever the image range, left an 18 % gap after 100 iterations on [0, 255] crops with
``lam = 0.03 * 255`` and 6 % at ``lam = 1`` on [0, 1] crops.

Duality gap (:func:`duality_gap`): for the dual variable ``q = proj(p)`` (the iterate projected
onto the unit discs or boxes, so it is feasible) and ``g = lam * div q``, the dual value

    D(q) = sum_i min_{0 <= t <= R} [1/2 * m_i * (t - x_i)^2 - g_i * t]

is a lower bound of ``min P`` (weak duality on the box, where the minimiser lies), finite also for
pixels with weight 0. ``G = P(z) - D(q) >= P(z) - min P >= 0``: the relative gap ``G / P(z)`` bounds
the relative objective error of ``z`` from above, and tends to 0 as the iteration converges.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

# Over-relaxation factor (the iteration converges for 0 < rho < 2).
RHO = 1.8
# Primal step without a mask; with a mask, TAU_MASKED * range / lam clamped to [TAU_MIN, TAU_MAX].
TAU_DENOISE = 0.1
TAU_MASKED = 0.015
TAU_MIN = 0.1
TAU_MAX = 10.0
# With a tolerance, the duality gap of every plane still iterating is evaluated every CHECK_EVERY
# iterations (and after the last one); without one, after the last iteration only.
CHECK_EVERY = 10
# Columns of the per-plane step table of plane_steps().
LO, RANGE, TAU, A, B, INV, C, LAM = range(8)
STEP_COLUMNS = 8


def plane_steps(x: torch.Tensor, lam, masked: bool) -> torch.Tensor:
    """Per-plane offsets and step sizes, shared by the torch iteration and the Triton kernels.

    Args:
        x: planes [N, H, W], float32 or float64 (differentiable: the unrolled backward sees the
            dependence of the steps on ``x``).
        lam: TV weight, > 0: a number, or one per plane ([N] tensor).
        masked: whether the data term has weights (the step rule differs).

    Returns:
        [N, STEP_COLUMNS] tensor of ``x``'s dtype and device; columns ``LO`` (plane minimum),
        ``RANGE`` (maximum - minimum), ``TAU`` (primal step), ``A = tau * lam``, ``B = 1 / (8 a)``,
        ``INV = 1 / (1 + tau)``, ``C = tau / (1 + tau)`` (the unmasked data prox
        ``(v + tau*x) / (1 + tau) = v*inv + x*c``) and ``LAM`` (the plane's ``lam``).
    """
    flat = x.flatten(1)
    lo = flat.amin(1)
    rng = flat.amax(1) - lo
    lam = torch.as_tensor(lam, dtype=x.dtype, device=x.device).expand_as(lo)
    if masked:
        tau = (rng * (TAU_MASKED / lam)).clamp(TAU_MIN, TAU_MAX)
    else:
        tau = torch.full_like(lo, TAU_DENOISE)
    a = tau * lam
    return torch.stack([lo, rng, tau, a, 1.0 / (8.0 * a), 1.0 / (1.0 + tau), tau / (1.0 + tau), lam], 1)


def _col(steps: torch.Tensor, j: int) -> torch.Tensor:
    return steps[:, j, None, None]


def _grad(z: torch.Tensor):
    """Forward differences of ``z`` [..., H, W] along W and H, 0 at the last column/row."""
    gx = F.pad(z[..., :, 1:] - z[..., :, :-1], (0, 1))
    gy = F.pad(z[..., 1:, :] - z[..., :-1, :], (0, 0, 0, 1))
    return gx, gy


def _div(p1: torch.Tensor, p2: torch.Tensor) -> torch.Tensor:
    """Discrete divergence, the negative adjoint of :func:`_grad` for duals that vanish on the last
    column (``p1``) and row (``p2``), as the iterates always do."""
    return (p1 + p2) - F.pad(p1[..., :, :-1], (1, 0)) - F.pad(p2[..., :-1, :], (0, 0, 1, 0))


def _project(q1: torch.Tensor, q2: torch.Tensor, isotropic: bool):
    """Projection of each (q1, q2) onto the unit disc (isotropic) or the unit box (anisotropic)."""
    if isotropic:
        scale = torch.rsqrt(torch.clamp_min(q1 * q1 + q2 * q2, 1.0))
        return q1 * scale, q2 * scale
    return q1.clamp(-1.0, 1.0), q2.clamp(-1.0, 1.0)


@torch.no_grad()
def duality_gap(
    z: torch.Tensor,
    p1: torch.Tensor,
    p2: torch.Tensor,
    x: torch.Tensor,
    m: Optional[torch.Tensor],
    rng: torch.Tensor,
    lam: torch.Tensor,
    isotropic: bool,
    work: Optional[list] = None,
) -> torch.Tensor:
    """Objective and duality gap of every plane (see the module docstring), with five plane-sized
    buffers and in-place ops (it runs every CHECK_EVERY iterations).

    Args:
        z, p1, p2: primal and dual iterates [n, H, W], in shifted coordinates (not modified).
        x: shifted data [n, H, W]; m: data weights [n, H, W] or None (weight 1).
        rng: plane ranges [n, 1, 1] (the box [0, R] of the dual).
        lam: the planes' TV weights [n, 1, 1].
        work: five tensors like ``z`` to use as the buffers, or None to allocate them.

    Returns:
        [n, 2] tensor of ``x``'s dtype: ``P(z)`` and ``G = P(z) - D(proj p) >= 0`` (up to rounding).
    """
    scale, q1, q2, g, primal = work if work is not None else [torch.empty_like(z) for _ in range(5)]
    if isotropic:
        torch.mul(p1, p1, out=scale).addcmul_(p2, p2).clamp_min_(1.0).rsqrt_()
        torch.mul(p1, scale, out=q1)
        torch.mul(p2, scale, out=q2)
    else:
        torch.clamp(p1, -1.0, 1.0, out=q1)
        torch.clamp(p2, -1.0, 1.0, out=q2)
    torch.add(q1, q2, out=g)  # g = lam * div q
    g[..., :, 1:].sub_(q1[..., :, :-1])
    g[..., 1:, :].sub_(q2[..., :-1, :])
    g.mul_(lam)
    # TV(z) into q1, with q2 as the second difference
    torch.sub(z[..., :, 1:], z[..., :, :-1], out=q1[..., :, :-1])
    q1[..., :, -1] = 0.0
    torch.sub(z[..., 1:, :], z[..., :-1, :], out=q2[..., :-1, :])
    q2[..., -1, :] = 0.0
    if isotropic:
        q1.mul_(q1).addcmul_(q2, q2).sqrt_()
    else:
        q1.abs_().add_(q2.abs_())
    torch.sub(z, x, out=primal)  # 1/2 m (z - x)^2 + lam * tv
    primal.mul_(primal).mul_(0.5)
    if m is not None:
        primal.mul_(m)
    primal.addcmul_(q1, lam)
    # the dual's minimiser zd = clip(x + g/m, 0, R), in q2; where m = 0, g/m = +-inf picks the end of
    # the box that g favours, and 0/0 (any point is a minimiser) is replaced by 0
    if m is None:
        torch.add(x, g, out=q2)
    else:
        torch.div(g, m, out=q2).add_(x).nan_to_num_(nan=0.0)
    torch.minimum(q2.clamp_min_(0.0), rng, out=q2)
    dual = torch.sub(q2, x, out=scale)  # 1/2 m (zd - x)^2 - g zd
    dual.mul_(dual).mul_(0.5)
    if m is not None:
        dual.mul_(m)
    dual.addcmul_(g, q2, value=-1.0)
    return torch.stack([primal.sum((-2, -1)), primal.sub_(dual).sum((-2, -1))], 1)


class _Planes:
    """State of the iteration on the planes still iterating; ``run``, ``gap``, ``z``, ``keep``."""

    def __init__(self, x: torch.Tensor, m: Optional[torch.Tensor], steps: torch.Tensor, isotropic: bool):
        self.steps, self.isotropic = steps, isotropic
        self.x = x - _col(steps, LO)
        self.m = m
        if m is None:
            self.inv, self.data = _col(steps, INV), self.x * _col(steps, C)
        else:
            tm = _col(steps, TAU) * m
            self.inv = 1.0 / (1.0 + tm)
            self.data = tm * self.x * self.inv
        self.z = self.x.clone()
        self.p1 = torch.zeros_like(self.x)
        self.p2 = torch.zeros_like(self.x)

    def gap(self) -> torch.Tensor:
        return duality_gap(
            self.z, self.p1, self.p2, self.x, self.m, _col(self.steps, RANGE), _col(self.steps, LAM), self.isotropic
        )

    def output(self) -> torch.Tensor:
        return self.z + _col(self.steps, LO)

    def keep(self, rows: torch.Tensor) -> None:
        for name in ("steps", "x", "m", "data", "z", "p1", "p2"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value[rows])
        self.inv = _col(self.steps, INV) if self.m is None else self.inv[rows]


class AutogradPlanes(_Planes):
    """The iteration with out-of-place ops, differentiable by autograd with respect to ``x`` and a
    floating-point ``m`` (``backward="unrolled"``)."""

    def run(self, iters: int) -> None:
        a, b = _col(self.steps, A), _col(self.steps, B)
        z, p1, p2 = self.z, self.p1, self.p2
        for _ in range(iters):
            zt = (z + a * _div(p1, p2)) * self.inv + self.data
            d = zt - z
            gx, gy = _grad(zt + d)
            pt1, pt2 = _project(p1 + b * gx, p2 + b * gy, self.isotropic)
            p1 = torch.lerp(p1, pt1, RHO)
            p2 = torch.lerp(p2, pt2, RHO)
            z = z + RHO * d
        self.z, self.p1, self.p2 = z, p1, p2


class InplacePlanes(_Planes):
    """The same iteration with preallocated buffers and in-place ops (about 20 elementwise passes
    per iteration, no allocation); not differentiable."""

    buffers = None

    def keep(self, rows: torch.Tensor) -> None:
        super().keep(rows)
        self.buffers = None

    def gap(self) -> torch.Tensor:
        if self.buffers is None:
            self.run(0)
        return duality_gap(
            self.z,
            self.p1,
            self.p2,
            self.x,
            self.m,
            _col(self.steps, RANGE),
            _col(self.steps, LAM),
            self.isotropic,
            self.buffers[2:],
        )

    @torch.no_grad()
    def run(self, iters: int) -> None:
        a, b = _col(self.steps, A), _col(self.steps, B)
        z, p1, p2, inv, data = self.z, self.p1, self.p2, self.inv, self.data
        if self.buffers is None:  # kept from call to call: fresh large buffers cost page faults
            # q1 (q2) is never written in its last column (row): the duals stay 0 there, as _div assumes.
            # the last five are also the gap's buffers (the iteration needs none of them between steps)
            self.buffers = [torch.zeros_like(z), torch.zeros_like(z)] + [torch.empty_like(z) for _ in range(5)]
        q1, q2, dv, d, zb, scale, _ = self.buffers
        p1_in, p2_in = p1[..., :, :-1], p2[..., :-1, :]
        q1_in, q2_in = q1[..., :, :-1], q2[..., :-1, :]
        for _ in range(iters):
            torch.add(p1, p2, out=dv)  # div p
            dv[..., :, 1:].sub_(p1_in)
            dv[..., 1:, :].sub_(p2_in)
            torch.mul(dv, a, out=zb)  # zt, kept in zb for now
            zb.add_(z).mul_(inv).add_(data)
            torch.sub(zb, z, out=d)
            zb.add_(d)  # zb = zt + d = 2*zt - z
            torch.sub(zb[..., :, 1:], zb[..., :, :-1], out=q1_in)
            q1_in.mul_(b).add_(p1_in)  # q1 = p1 + b * dx(zb)
            torch.sub(zb[..., 1:, :], zb[..., :-1, :], out=q2_in)
            q2_in.mul_(b).add_(p2_in)
            if self.isotropic:
                torch.mul(q1, q1, out=scale)
                scale.addcmul_(q2, q2).clamp_min_(1.0).rsqrt_()
                q1.mul_(scale)
                q2.mul_(scale)
            else:
                q1.clamp_(-1.0, 1.0)
                q2.clamp_(-1.0, 1.0)
            p1.lerp_(q1, RHO)
            p2.lerp_(q2, RHO)
            z.add_(d, alpha=RHO)


def iterate(planes, iters: int, tol: Optional[float]):
    """Run ``planes`` (an iteration state: ``run(k)``, ``gap()``, ``output()``, ``keep(rows)``) for at
    most ``iters`` iterations; with ``tol``, a plane stops at the first check (every
    ``CHECK_EVERY`` iterations) where its gap ``G <= tol * P``.

    Returns:
        ``(z, iters, pg)``: ``z`` [N, H, W] (unshifted), iterations run [N] int32, and ``P``, ``G``
        [N, 2] at the last check of each plane (``iters`` of a plane is where it stopped).
    """
    every = CHECK_EVERY if tol is not None else iters
    rows = None  # original indices of the planes still iterating
    done_rows, done_z, done_pg, done_k = [], [], [], []
    k = 0
    while True:
        step = min(every, iters - k)
        planes.run(step)
        k += step
        pg = planes.gap()
        if k >= iters:
            done = None
        else:
            done = pg[:, 1] <= tol * pg[:, 0]
            if not bool(done.any()):
                continue
            if bool(done.all()):
                done = None
        z = planes.output()
        n = z.shape[0]
        index = torch.arange(n, device=z.device) if rows is None else rows
        if done is None:
            done_rows.append(index), done_z.append(z), done_pg.append(pg)
            done_k.append(torch.full((n,), k, dtype=torch.int32, device=z.device))
            break
        done_rows.append(index[done]), done_z.append(z[done]), done_pg.append(pg[done])
        done_k.append(torch.full((int(done.sum()),), k, dtype=torch.int32, device=z.device))
        rows = index[~done]
        planes.keep(~done)
    if len(done_z) == 1:
        return done_z[0], done_k[0], done_pg[0]
    order = torch.argsort(torch.cat(done_rows))
    return torch.cat(done_z)[order], torch.cat(done_k)[order], torch.cat(done_pg)[order]
