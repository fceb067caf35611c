"""Convergence of fastwnll.tv.denoise: the duality-gap stopping rule, the scale-aware steps, the convergence
report and the warning, against converged float64 references (objective recomputed in numpy) and
scikit-image's ``denoise_tv_chambolle`` (``lam = weight``)."""

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import fastwnll
from fastwnll.tv import denoise as tvmod
from fastwnll.tv import iteration as tpd
from fastwnll.tv.denoise import TVConvergenceWarning

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tv_reference import mnist_digits, natural_crops, objective  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def images():
    """8 real MNIST digits [8, 1, 28, 28] and 2 natural RGB crops cut to [6, 1, 28, 28], float64."""
    natural = natural_crops()[:2, :, :28, :28].reshape(6, 1, 28, 28)
    return {"mnist": mnist_digits(8), "natural": natural}


def reference(x, lam, mask=None, isotropic=True, iters=4000):
    """Converged float64 minimiser (``iters`` iterations; the last half change the objective by < 5e-6)."""
    solve = (
        (lambda k: fastwnll.tv_denoise(x, lam, iters=k, tol=None, isotropic=isotropic))
        if mask is None
        else (lambda k: fastwnll.tvm(x, lam=lam, mask=mask, iters=k, tol=None, isotropic=isotropic))
    )
    ref = solve(iters)
    f_ref, f_less = (objective(z, x, lam, mask, isotropic, per_plane=True) for z in (ref, solve(iters // 2)))
    assert ((f_less - f_ref) <= 5e-6 * f_ref).all()
    return ref, f_ref


def true_gap(z, x, lam, f_ref, mask=None, isotropic=True):
    """Relative objective error of ``z`` per plane, against the converged reference."""
    f = objective(z, x, lam, mask, isotropic, per_plane=True)
    return (f - f_ref) / f


@pytest.mark.parametrize("data", ["mnist", "natural"])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("lam", [0.03, 0.1])
def test_defaults_reach_the_tolerance_against_a_converged_reference(images, data, masked, lam):
    x = images[data]
    mask = tvmod.keep_mask(x, 0.5, generator=torch.Generator().manual_seed(1)) if masked else None
    m = None if mask is None else mask.double()
    _, f_ref = reference(x, lam, m)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TVConvergenceWarning)
        z, info = (
            fastwnll.tvm(x.float(), lam=lam, mask=mask, return_info=True)
            if masked
            else fastwnll.tv_denoise(x.float(), lam, return_info=True)
        )
    assert z.dtype == torch.float32
    gap = true_gap(z, x, lam, f_ref, m)
    assert bool(info.converged.all()) and float(info.gap.max()) <= tvmod.DEFAULT_TOL
    # the reported gap bounds the true relative error (float32 rounding: 2e-6)
    assert (gap <= info.gap.numpy().reshape(gap.shape) + 2e-6).all()
    assert gap.max() <= tvmod.DEFAULT_TOL
    assert (info.iters % tpd.CHECK_EVERY == 0).all() and int(info.iters.max()) < tvmod.DEFAULT_ITERS


def test_images_in_0_255_with_proportional_lam_converge_like_0_1(images):
    x = images["mnist"]
    _, f_ref = reference(255 * x, 0.05 * 255)
    z255, info255 = fastwnll.tv_denoise(255 * x.float(), 0.05 * 255, return_info=True)
    z1, info1 = fastwnll.tv_denoise(x.float(), 0.05, return_info=True)
    assert torch.equal(info255.iters, info1.iters)  # the same iterations ...
    assert (z255 / 255 - z1).abs().max() < 1e-5  # ... and the same result
    assert true_gap(z255, 255 * x, 0.05 * 255, f_ref).max() <= tvmod.DEFAULT_TOL
    # with a fixed budget of 100 iterations (the old default) the gap is now small at any scale
    _, f_ref = reference(255 * x, 0.03 * 255)
    z = fastwnll.tv_denoise(255 * x.float(), 0.03 * 255, iters=100, tol=None)
    assert true_gap(z, 255 * x, 0.03 * 255, f_ref).max() <= 1e-4


def test_lam_1_on_images_in_0_1_converges_within_the_default_budget(images):
    x = images["mnist"]
    _, f_ref = reference(x, 1.0, iters=16000)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TVConvergenceWarning)
        z, info = fastwnll.tv_denoise(x.float(), 1.0, return_info=True)
    assert bool(info.converged.all())
    assert true_gap(z, x, 1.0, f_ref).max() <= tvmod.DEFAULT_TOL


def test_skimage_at_0_255_with_weight_equal_to_lam(images):
    from skimage.restoration import denoise_tv_chambolle

    x = 255 * images["mnist"][:4, 0]
    lam = 0.05 * 255
    sk = torch.from_numpy(
        np.stack([denoise_tv_chambolle(im.numpy(), weight=lam, eps=1e-12, max_num_iter=4000) for im in x])
    )
    f_sk = objective(sk, x, lam, per_plane=True)
    z, info = fastwnll.tv_denoise(x.float(), lam, return_info=True)
    f = objective(z, x, lam, per_plane=True)
    # skimage (converged tightly) is within the tolerance of ours, and ours within the tolerance of it
    assert ((f - f_sk) / f <= info.gap.numpy().reshape(f.shape) + 2e-6).all()
    assert (f_sk <= f * (1 + 1e-6)).all() and ((f - f_sk) / f <= tvmod.DEFAULT_TOL).all()
    # and with skimage's defaults at this scale, ours is better
    sk_default = np.stack([denoise_tv_chambolle(im.numpy(), weight=lam) for im in x])
    assert objective(z, x, lam) < objective(sk_default, x, lam)


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("isotropic", [True, False])
def test_reported_gap_bounds_the_true_error_at_any_iteration(images, masked, isotropic):
    x = images["natural"][:3]
    mask = tvmod.keep_mask(x, 0.3, generator=torch.Generator().manual_seed(3)).double() if masked else None
    _, f_ref = reference(x, 0.1, mask, isotropic)
    for iters in (1, 5, 20, 60):
        for dtype in (torch.float64, torch.float32):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", TVConvergenceWarning)
                z, info = (
                    fastwnll.tvm(
                        x.to(dtype), lam=0.1, mask=mask, iters=iters, tol=None, isotropic=isotropic, return_info=True
                    )
                    if masked
                    else fastwnll.tv_denoise(
                        x.to(dtype), 0.1, iters=iters, tol=None, isotropic=isotropic, return_info=True
                    )
                )
            assert info.converged is None and (info.iters == iters).all()
            gap = true_gap(z, x, 0.1, f_ref, mask, isotropic)
            assert (gap >= -5e-6).all()
            assert (gap <= info.gap.numpy().reshape(gap.shape) + (1e-12 if dtype == torch.float64 else 2e-6)).all()


def test_warning_when_the_budget_ends_far_from_convergence(images):
    x = images["mnist"].float()
    with pytest.warns(TVConvergenceWarning, match=r"8 of 8 planes ended the 10-iteration budget"):
        _, info = fastwnll.tv_denoise(x, 0.1, iters=10, return_info=True)
    assert not bool(info.converged.any()) and float(info.gap.min()) > 1e-2
    with pytest.warns(TVConvergenceWarning, match="tvm"):
        fastwnll.tvm(x, iters=20, tol=None, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", TVConvergenceWarning)
        # close enough: a budget that ends below max(10 * tol, 1e-2) is reported in the info only
        _, info = fastwnll.tv_denoise(x, 0.1, iters=30, tol=1e-4, return_info=True)
        assert not bool(info.converged.any()) and 1e-4 < float(info.gap.max()) <= 1e-2
        fastwnll.tv_denoise(x, 0.1)


def test_planes_stop_independently(images):
    x = images["natural"][:4].float()
    x[1] = 0.5  # a constant plane is its own solution (certified before any iteration)
    z, info = fastwnll.tv_denoise(x, 0.1, tol=1e-4, return_info=True)
    its = info.iters.flatten()
    assert int(its[1]) == 0 and len(set(its.tolist())) > 2
    for i in range(4):  # each plane as if it were alone
        alone, alone_info = fastwnll.tv_denoise(x[i : i + 1], 0.1, tol=1e-4, return_info=True)
        assert torch.equal(alone_info.iters.flatten(), its[i : i + 1])
        assert (alone - z[i : i + 1]).abs().max() < 1e-6
    # tol=None runs the whole budget
    _, info = fastwnll.tv_denoise(x, 0.1, iters=37, tol=None, return_info=True)
    assert (info.iters == 37).all()


def test_constant_planes_and_large_offsets():
    flat = torch.full((2, 1, 9, 9), 0.7)
    z, info = fastwnll.tvm(flat, return_info=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(z, flat) and (info.gap == 0).all() and (info.iters == 0).all()
    # a large common offset: float32 stays accurate (planes are shifted by their minimum)
    x = torch.rand(3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    ref = fastwnll.tv_denoise(x, 0.1, iters=200, tol=None)
    shifted = fastwnll.tv_denoise((x + 1000).float(), 0.1, iters=200, tol=None)
    assert (shifted.double() - 1000 - ref).abs().max() < 2e-4  # float32 spacing at 1000 is 6e-5


def test_unrolled_gradient_through_stopped_planes():
    g = torch.Generator().manual_seed(5)
    x = torch.rand(2, 6, 7, dtype=torch.float64, generator=g)
    x[1] = x[1] * 0.3  # a lower-contrast plane: more iterations
    x.requires_grad_()

    def f(v):
        z, info = fastwnll.tv_denoise(v, 0.1, iters=50, tol=1e-3, backward="unrolled", return_info=True)
        assert info.iters.tolist() == [30, 50]  # the planes stop at different checks
        return z

    assert torch.autograd.gradcheck(f, (x,))


def test_unrolled_memory_per_iteration():
    # autograd keeps UNROLLED_TENSORS_PER_ITER plane-sized tensors per iteration (module docstring)
    x = torch.rand(2, 3, 16, 16, requires_grad=True)

    def saved_bytes(iters):
        seen, total = set(), [0]

        def pack(t):
            if t.numel() > 1 and t.data_ptr() not in seen:
                seen.add(t.data_ptr())
                total[0] += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), warnings.catch_warnings():
            warnings.simplefilter("ignore", TVConvergenceWarning)
            fastwnll.tv_denoise(x, 0.03, iters=iters, tol=None, backward="unrolled")
        return total[0]

    per_iter = (saved_bytes(30) - saved_bytes(10)) / 20 / (x.numel() * x.element_size())
    assert per_iter == tvmod.UNROLLED_TENSORS_PER_ITER


# ------------------------------------------------------------------------------------------------
# scale equivariance and the exact solutions at the extremes of lam


def _skimage(x, lam):
    """scikit-image's Chambolle minimiser (weight = lam) per plane of x [N, 1, H, W] float64, converged."""
    from skimage.restoration import denoise_tv_chambolle

    planes = [
        denoise_tv_chambolle(p.numpy(), weight=lam, eps=1e-12, max_num_iter=20000) for p in x.reshape(-1, *x.shape[-2:])
    ]
    return torch.from_numpy(np.stack(planes)).reshape(x.shape)


@pytest.fixture(scope="module")
def small():
    """3 planes of 12x12: two random ones of different contrast and a digit cut."""
    g = torch.Generator().manual_seed(7)
    x = torch.rand(3, 1, 12, 12, generator=g, dtype=torch.float64)
    x[1] = 0.2 + 0.1 * x[1]
    x[2, 0] = mnist_digits(1)[0, 0, 8:20, 8:20]
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scale_equivariant_down_to_the_normal_range_against_scikit_image(small, dtype):
    """tv_denoise(s x, s lam) / s is the minimiser for scales s from 1e-35 to 1e30 (float32; float64
    down to 1e-300), its reported gap bounds its objective error, and a power-of-two scale changes
    no bit. Before unit scaling, float32 underflowed (converged=True with 30x the error) below ~1e-22
    and returned NaN below ~1e-38."""
    lam = 0.1
    ref = _skimage(small, lam)
    f_ref = objective(ref, small, lam, per_plane=True)
    base = fastwnll.tv_denoise(small.to(dtype), lam)
    scales = [1e-35, 1e-30, 1e-22, 1e-12, 3.7, 1e12, 1e30]
    if dtype == torch.float64:
        scales += [1e-300, 1e-200, 1e200, 1e300]
    for s in scales:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no warning of any kind
            z, info = fastwnll.tv_denoise((small * s).to(dtype), lam * s, return_info=True)
        z = z.double() / s
        assert torch.isfinite(z).all() and info.converged.all(), s
        error = ((objective(z, small, lam, per_plane=True) - f_ref) / f_ref).flatten()
        assert (error <= info.gap.flatten().double().numpy() + 1e-5).all() and (error <= 2e-3).all(), s
        assert (z - ref).abs().max() < 0.02, s
    for k in (-100, -60, -1, 20, 90):
        scaled = fastwnll.tv_denoise((small * 2.0**k).to(dtype), lam * 2.0**k)
        assert torch.equal(scaled, base * 2.0**k), k


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("isotropic", [True, False])
def test_scaled_masked_and_anisotropic_problems_match_the_unit_scale_minimiser(small, masked, isotropic):
    """TVM (images in [0, 1]: scales up to 1) and anisotropic TV at tiny and huge scales, float32,
    against a converged float64 minimiser of the unscaled problem."""
    mask = (torch.rand(small.shape, generator=torch.Generator().manual_seed(8)) > 0.4) if masked else None
    lam = 0.05
    ref, f_ref = reference(small, lam, mask, isotropic, iters=3000)
    for s in (1e-36, 1e-30, 1e-9, 0.5) + (() if masked else (1e25, 1e36)):
        x = (small * s).float()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            if masked:
                z, info = fastwnll.tvm(x, lam=lam * s, mask=mask, isotropic=isotropic, return_info=True)
            else:
                z, info = fastwnll.tv_denoise(x, lam * s, isotropic=isotropic, return_info=True)
        z = z.double() / s
        error = true_gap(z, small, lam, f_ref, mask, isotropic).flatten()
        assert torch.isfinite(z).all() and info.converged.all(), s
        assert (error <= info.gap.flatten().double().numpy() + 1e-5).all() and (error <= 2e-3).all(), s


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("tol", [1e-3, None])
def test_lam_beyond_the_total_variation_gives_the_mean_without_a_warning(small, dtype, tol):
    """Above the plane's dual norm the minimiser is the constant mean (the masked mean with a mask);
    it is returned, certified, with no false warning of non-convergence, for any lam up to 1e300."""
    x = small.to(dtype)
    mask = torch.rand(x.shape, generator=torch.Generator().manual_seed(9)) > 0.5
    for lam in (30.0, 1e3, 1e5, 1e10, 1e30, 1e300):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            z, info = fastwnll.tv_denoise(x, lam, iters=60, tol=tol, return_info=True)
            zm, infom = fastwnll.tvm(x, lam=lam, mask=mask, iters=60, tol=tol, return_info=True)
        mean = small.mean((-2, -1), keepdim=True).expand_as(small)
        masked_mean = ((small * mask).sum((-2, -1), keepdim=True) / mask.sum((-2, -1), keepdim=True)).expand_as(small)
        atol = 1e-6 if dtype == torch.float32 else 1e-14
        torch.testing.assert_close(z.double(), mean, rtol=0, atol=atol)
        torch.testing.assert_close(zm.double(), masked_mean, rtol=0, atol=atol)
        assert (info.gap <= 1e-6).all() and (infom.gap <= 1e-6).all()
        if tol is not None:
            assert info.converged.all() and (info.iters == 0).all() and infom.converged.all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("tol", [1e-3, None])
def test_vanishing_lam_gives_the_data_without_a_warning(small, dtype, tol):
    """As lam -> 0 the minimiser tends to the data (within 4 lam per pixel): the data is returned with a
    certified gap of order lam, and no false warning (float32 used to warn at lam <= 1e-12)."""
    x = small.to(dtype)
    for lam in (1e-6, 1e-9, 1e-12, 1e-14, 1e-20, 1e-200):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            z, info = fastwnll.tv_denoise(x, lam, iters=60, tol=tol, return_info=True)
        assert (z - x).abs().max() <= 4 * lam + 1e-6, lam
        assert (info.gap <= 1e-3).all() and (tol is None or info.converged.all()), lam
        if tol is not None and lam <= 1e-9:  # certified before any iteration: the data itself
            assert torch.equal(z, x) and (info.iters == 0).all() and (info.gap <= 1e-5).all()


def test_planes_below_the_normal_range_warn_and_stay_finite(small):
    """float32 planes of range ~1e-40 (subnormal numbers): computed at unit scale, finite, as close to
    the minimiser as their few significant bits allow, with a warning that says so."""
    s = 1e-40
    with pytest.warns(RuntimeWarning, match="below the normal range of torch.float32"):
        z = fastwnll.tv_denoise((small * s).float(), 0.1 * s)
    assert torch.isfinite(z).all()
    assert ((z.double() / s) - _skimage(small, 0.1)).abs().max() < 0.05
