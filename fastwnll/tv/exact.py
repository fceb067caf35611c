"""Unit scaling of TV planes and the two closed-form solutions of the TV problem, with certificates.

The problem of :mod:`fastwnll.tv.denoise`, per plane ``x`` [H, W] with data weights ``m`` (1 without
a mask), ``P(z) = 1/2 sum m (z - x)^2 + lam TV(z)``, is equivariant under ``x -> s x + t``,
``lam -> s lam``: its solution becomes ``s z* + t``. :func:`unit_planes` uses that to solve every
plane at unit scale: shifted by its minimum ``lo`` and divided by the power of two ``s`` just below
its range ``R`` (``s <= R < 2 s``), so that the iteration, its duality gap (sums of squares) and its
steps see numbers of order 1 whatever the scale of the images (1e-35 or 1e30 in float32), as the
WNLL weights do (``fastwnll.wnll.weights.unit_scale``). Dividing by a power of two is exact, so
planes scaled by a power of two give the same bits (until they leave the dtype's normal range);
the per-plane weight is ``lam / s``.

Two solutions are known in closed form, and they are where the iteration's own certificate fails
(its duality gap cannot be resolved in the working precision there):

- **the constant** ``c`` (the weighted mean ``sum m x / sum m``; the mean without weights) is the
  solution once ``lam`` exceeds the plane's dual norm: ``z = c`` is optimal exactly when some dual
  field ``q`` with ``|q| <= 1`` everywhere has ``-lam div q = m (x - c)``. One such field is built
  explicitly by cumulative sums (:func:`constant_field`: along each row for the row's deviations
  from its mean, then down the columns for the row means), so the constant comes with its own
  certificate whenever that field is feasible (``lam`` of the order of the plane's range times its
  side and beyond);
- **the data** ``x`` itself is the solution as ``lam -> 0`` without dropped pixels: ``z* - x`` is
  ``lam div q*``, at most ``4 lam`` per pixel, and the gap of ``x`` with the field
  ``grad x / |grad x|`` is of order ``lam^2``, i.e. relative ``O(lam)``.

:func:`closed_forms` evaluates both with the duality gap of the iteration (a certified bound in any
case: the fields are projected onto the unit discs or boxes first) in float64, so that the gap is
resolved far below the working precision.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from fastwnll.tv.iteration import duality_gap


class UnitPlanes(NamedTuple):
    """Planes at unit scale (see the module docstring).

    Attributes:
        x: ``(planes - lo) / scale`` [N, H, W], the planes' compute dtype: values in ``[0, R / scale]``.
        lo: the planes' minima [N] (compute dtype).
        scale: the powers of two [N] (compute dtype), ``scale <= R < 2 scale`` within the dtype's
            normal range (1 for a constant plane).
        lam: ``lam / scale`` [N], float64, clamped to ``lam_range(dtype)``.
        subnormal: bool [N], planes whose range lies below the dtype's normal range (their values
            carry fewer significant bits than normal numbers do).
    """

    x: torch.Tensor
    lo: torch.Tensor
    scale: torch.Tensor
    lam: torch.Tensor
    subnormal: torch.Tensor


def lam_range(dtype: torch.dtype) -> tuple[float, float]:
    """The range ``[eps^2, 1 / eps^2]`` (``eps`` of ``dtype``) a per-plane ``lam`` is clamped to at unit
    scale. Below it the solution is the data to within ``4 eps^2``, far below the dtype's resolution
    of values of order 1; above it, it is the constant (the plane's dual norm is at most ``4 (H + W)``
    at unit scale). In between, the iteration's steps and gap stay finite in ``dtype``."""
    eps = torch.finfo(dtype).eps
    return eps * eps, 1.0 / (eps * eps)


def unit_planes(x: torch.Tensor, lam: float) -> UnitPlanes:
    """``x`` [N, H, W] (float32 or float64, finite; differentiable) at unit scale, with ``lam``."""
    info = torch.finfo(x.dtype)
    flat = x.flatten(1)
    lo = flat.amin(1)
    rng = (flat.amax(1) - lo).detach()
    _, exponent = torch.frexp(rng)
    scale = torch.ldexp(torch.ones_like(rng), exponent - 1).clamp(info.tiny, 1.0 / info.tiny)
    scale = torch.where(rng > 0, scale, torch.ones_like(scale))
    low, high = lam_range(x.dtype)
    lams = (lam / scale.double()).clamp(low, high)
    units = (x - lo[:, None, None]) / scale[:, None, None]
    return UnitPlanes(units, lo, scale, lams, (rng > 0) & (rng < info.tiny))


def constant_field(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A dual field ``(q1, q2)`` [N, H, W] with ``-div q = f`` for ``f`` [N, H, W] whose planes sum to
    0 (``div`` as in ``fastwnll.tv.iteration``: backward differences, ``q1`` zero on the last column,
    ``q2`` on the last row): ``q1`` the cumulative sums along each row of ``f`` minus the row's mean,
    ``q2`` those down the columns of the row means."""
    row_mean = f.mean(-1, keepdim=True)
    q1 = -(f - row_mean).cumsum(-1)
    q2 = -row_mean.cumsum(-2).expand_as(f).clone()
    q1[..., -1] = 0.0
    q2[..., -1, :] = 0.0
    return q1, q2


def constant_of(x: torch.Tensor, m: Optional[torch.Tensor]) -> torch.Tensor:
    """The constant solution [N]: ``sum m x / sum m`` per plane of ``x`` [N, H, W] (the plain mean
    where ``m`` is None or a plane has no weight: any constant is optimal there)."""
    mean = x.mean((-2, -1))
    if m is None:
        return mean
    weight = m.sum((-2, -1))
    return torch.where(weight > 0, (m * x).sum((-2, -1)) / weight.clamp_min(torch.finfo(x.dtype).tiny), mean)


def closed_form_planes(x: torch.Tensor, m: Optional[torch.Tensor], lam: torch.Tensor, bound: float) -> torch.Tensor:
    """Bool [N]: the planes of ``x`` [N, H, W] at unit scale (weights ``m`` or None, per-plane ``lam``
    [N] float64) where a closed form may be the solution, by two cheap tests (two passes over the
    planes): the constant needs ``|m (x - c)| <= 4 lam`` at every pixel (``-lam div q`` is at most
    ``4 lam`` for a field in the unit discs or boxes); the data is certified to a relative gap of at
    most ``bound`` when every weight is positive and ``8 H W lam / min m <= bound`` (its gap is at most
    ``lam sum |div q|^2 / (2 min m TV(x))`` relative, ``|div q| <= 4``, ``TV(x) >= 1`` at unit scale).
    Elsewhere the iteration is the only candidate: a typical call evaluates no closed form."""
    deviation = x - constant_of(x, m)[:, None, None]
    if m is not None:
        deviation = m * deviation
    constant = deviation.abs().amax((-2, -1)).double() <= 4 * lam * (1 + 1e-6)
    least = torch.ones_like(lam) if m is None else m.amin((-2, -1)).double()
    data = (least > 0) & (8 * x.shape[-2] * x.shape[-1] * lam <= bound * least)
    return constant | data


def closed_forms(
    x: torch.Tensor, m: Optional[torch.Tensor], lam: torch.Tensor, isotropic: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The constant and the data as solutions of the planes ``x`` [N, H, W] at unit scale (weights
    ``m`` or None, per-plane ``lam`` [N] float64), evaluated in float64.

    Returns:
        ``(c, pd)``: the constants [N] float64 and ``pd`` [N, 2, 2] float64, ``pd[:, j]`` the objective
        ``P`` and the dual value ``D`` (a certified lower bound of ``min P``) of candidate ``j``
        (0: the constant with :func:`constant_field`, 1: the data with the normalized gradient).
    """
    x = x.detach().double()
    m = None if m is None else m.detach().double()
    lam3 = lam[:, None, None]
    rng = x.amax((-2, -1), keepdim=True)
    c = constant_of(x, m)
    deviation = x - c[:, None, None]
    q1, q2 = constant_field((deviation if m is None else m * deviation) / lam3)
    constant = duality_gap(c[:, None, None].expand_as(x).contiguous(), q1, q2, x, m, rng, lam3, isotropic)
    gx = torch.zeros_like(x)
    gy = torch.zeros_like(x)
    gx[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    gy[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    if isotropic:
        norm = torch.sqrt(gx * gx + gy * gy)
        norm = torch.where(norm > 0, norm, torch.ones_like(norm))
        gx, gy = gx / norm, gy / norm
    else:
        gx, gy = gx.sign(), gy.sign()
    data = duality_gap(x, gx, gy, x, m, rng, lam3, isotropic)
    pd = torch.stack([constant, data], 1)  # [N, 2, (P, G)]
    pd[..., 1] = pd[..., 0] - pd[..., 1]  # G -> D
    return c, pd
