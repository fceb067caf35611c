"""Tests for fastwnll.tv.denoise (tv_denoise, tvm, keep_mask) on its torch path and fastwnll.nn.TVM.

The objective is recomputed in numpy, independently of the library (tests/tv_reference.py);
convergence and stopping are tested in tests/test_tv_convergence.py, the Triton kernels in
tests/test_tv_kernels.py.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import fastwnll
from fastwnll.nn import TVM
from fastwnll.tv import denoise as tvmod
from fastwnll.tv import iteration as tpd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tv_reference import mnist_digits, natural_crops, objective  # noqa: E402

# short iteration counts end far from convergence on purpose here (tests/test_tv_convergence.py tests the warning)
pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore::fastwnll.tv.denoise.TVConvergenceWarning"),
]


@pytest.fixture(scope="module")
def mnist():
    return mnist_digits()


@pytest.fixture(scope="module")
def natural():
    return natural_crops()


# ------------------------------------------------------------------------------------------------
# the minimum


@pytest.mark.parametrize("isotropic", [True, False])
def test_anisotropic_and_isotropic_minimise_their_own_objective(mnist, isotropic):
    x = mnist[:4]
    z = fastwnll.tv_denoise(x, 0.05, iters=3000, tol=None, isotropic=isotropic)
    other = fastwnll.tv_denoise(x, 0.05, iters=3000, tol=None, isotropic=not isotropic)
    assert objective(z, x, 0.05, isotropic=isotropic) < objective(other, x, 0.05, isotropic=isotropic) * (1 - 1e-4)


# ------------------------------------------------------------------------------------------------
# scikit-image: weight w <-> lam = w


def test_skimage_weight_equals_lam_by_objective(mnist, natural):
    from skimage.restoration import denoise_tv_chambolle

    lam = 0.05
    gray = mnist[:2, 0]  # [2, 28, 28]
    rgb = natural[0]  # [3, 32, 32]
    sk_gray = torch.from_numpy(
        np.stack([denoise_tv_chambolle(im.numpy(), weight=lam, eps=1e-12, max_num_iter=3000) for im in gray])
    )
    sk_rgb = torch.from_numpy(
        denoise_tv_chambolle(rgb.permute(1, 2, 0).numpy(), weight=lam, eps=1e-12, max_num_iter=3000, channel_axis=-1)
    ).permute(2, 0, 1)
    for x, sk in ((gray, sk_gray), (rgb[None], sk_rgb[None])):
        ours = fastwnll.tv_denoise(x, lam, iters=3000, tol=None)
        f_ours, f_sk = objective(ours, x, lam), objective(sk, x, lam)
        # both minimise 1/2||z - x||^2 + lam TV(z): same objective (skimage converges more slowly)
        assert -1e-7 * f_ours <= f_sk - f_ours <= 3e-5 * f_ours
        assert (ours - sk).abs().max() < 2e-3
        # a wrong mapping (lam = w/2 or 2w) is clearly worse on skimage's problem
        for wrong in (lam / 2, 2 * lam):
            assert objective(fastwnll.tv_denoise(x, wrong, iters=3000, tol=None), x, lam) > f_ours * (1 + 2e-3)


def test_default_iterations_beat_skimage_defaults(mnist):
    from skimage.restoration import denoise_tv_chambolle

    x = mnist[:16, 0]
    for lam in (0.03, 0.1):
        sk = torch.from_numpy(np.stack([denoise_tv_chambolle(im.numpy(), weight=lam) for im in x]))
        assert objective(fastwnll.tv_denoise(x.float(), lam), x, lam) < objective(sk, x, lam)


# ------------------------------------------------------------------------------------------------
# the mask


@pytest.mark.parametrize("drop_rate", [0.5, 0.3, 0.0])
def test_keep_mask_statistics(drop_rate):
    x = torch.zeros(64, 3, 32, 32)
    mask = tvmod.keep_mask(x, drop_rate, generator=torch.Generator().manual_seed(0))
    assert mask.dtype == torch.bool and mask.shape == x.shape
    n = mask.numel()
    sd = (drop_rate * (1 - drop_rate) / n) ** 0.5
    assert abs(mask.float().mean().item() - (1 - drop_rate)) <= 5 * sd + 1e-12
    if drop_rate > 0:
        # independent per channel entry: channels agree on a fraction p^2 + (1-p)^2 of pixels
        agree = (mask[:, 0] == mask[:, 1]).float().mean().item()
        assert abs(agree - (drop_rate**2 + (1 - drop_rate) ** 2)) < 0.02
        # and per image: row-wise means vary like binomials
        per_image = mask.float().mean(dim=(1, 2, 3))
        assert per_image.std() > 0


def test_tvm_is_reproducible_from_generator(mnist):
    x = mnist[:4].float()
    a = fastwnll.tvm(x, generator=torch.Generator().manual_seed(7), iters=20)
    b = fastwnll.tvm(x, generator=torch.Generator().manual_seed(7), iters=20)
    c = fastwnll.tvm(x, generator=torch.Generator().manual_seed(8), iters=20)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    m = tvmod.keep_mask(x, 0.5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(fastwnll.tvm(x, mask=m, iters=20), a)
    torch.manual_seed(3)
    d = fastwnll.tvm(x, iters=20)
    torch.manual_seed(3)
    assert torch.equal(fastwnll.tvm(x, iters=20), d)
    # drop_rate=0 draws nothing and is tv_denoise
    assert torch.equal(fastwnll.tvm(x, drop_rate=0.0, lam=0.05, iters=20), fastwnll.tv_denoise(x, 0.05, iters=20))


def test_kept_pixels_pulled_to_data_and_dropped_pixels_filled_in():
    # a smooth image: dropped pixels carry garbage, which the reconstruction must ignore
    r = torch.linspace(0, 1, 24, dtype=torch.float64)
    x = (0.25 + 0.5 * torch.outer(r, r) ** 0.5)[None, None].repeat(2, 1, 1, 1)
    mask = tvmod.keep_mask(x, 0.5, generator=torch.Generator().manual_seed(4))
    garbage = torch.where(mask, x, 1.0 - x)
    z = fastwnll.tvm(garbage, mask=mask, lam=0.01, iters=2000, tol=None)
    kept, dropped = mask, ~mask
    assert (z - x)[kept].abs().mean() < 0.01  # kept pixels stay at their values
    assert (z - x)[dropped].abs().mean() < 0.02  # dropped pixels are filled in from neighbours
    assert (garbage - x)[dropped].abs().mean() > 0.2  # ... not from the values they carried
    # the optimum does not depend on the dropped values at all
    z_clean = fastwnll.tvm(x, mask=mask, lam=0.01, iters=2000, tol=None)
    assert (z - z_clean).abs().max() < 1e-3
    # a soft (float) mask weighs the data term: weight 1 everywhere is tv_denoise's problem
    ones = torch.ones_like(x)
    z_ones = fastwnll.tvm(x, mask=ones, lam=0.05, iters=3000, tol=None)
    assert (z_ones - fastwnll.tv_denoise(x, 0.05, iters=3000, tol=None)).abs().max() < 1e-4


def test_mnist_tvm_is_a_sensible_reconstruction(mnist):
    x = mnist[:32].float()
    z = fastwnll.tvm(x, generator=torch.Generator().manual_seed(0))
    assert z.shape == x.shape and z.dtype == x.dtype
    assert z.min() >= -1e-3 and z.max() <= 1 + 1e-3  # TV reconstruction stays in the data range
    # closer to the clean digits than the half-erased input is
    erased = x * tvmod.keep_mask(x, 0.5, generator=torch.Generator().manual_seed(0))
    assert (z - x).pow(2).mean() < 0.5 * (erased - x).pow(2).mean()


# ------------------------------------------------------------------------------------------------
# shapes, dtypes, layout


def test_shapes_and_plane_independence(mnist, natural):
    x = natural[:2].float()
    z = fastwnll.tv_denoise(x, 0.05, iters=30)
    assert z.shape == x.shape
    alone = fastwnll.tv_denoise(x[:, 1], 0.05, iters=30)  # [B, H, W]
    assert (z[:, 1] - alone).abs().max() < 1e-6
    assert (fastwnll.tv_denoise(x[:, :1], 0.05, iters=30)[:, 0] - z[:, 0]).abs().max() < 1e-6
    # non-contiguous input (channels_last, transposed) gives the same planes
    cl = fastwnll.tv_denoise(x.contiguous(memory_format=torch.channels_last), 0.05, iters=30)
    assert (cl - z).abs().max() < 1e-6
    t = fastwnll.tv_denoise(x.transpose(-1, -2), 0.05, iters=30)  # TV is symmetric in x and y
    assert (t.transpose(-1, -2) - z).abs().max() < 1e-5
    # degenerate planes and empty batches
    line = torch.rand(2, 1, 1, 7)
    row = fastwnll.tv_denoise(line, 0.1, iters=50)
    column = fastwnll.tv_denoise(line.transpose(-1, -2), 0.1, iters=50)
    assert (row - column.transpose(-1, -2)).abs().max() < 1e-6
    assert fastwnll.tv_denoise(torch.rand(0, 3, 8, 8), 0.1).shape == (0, 3, 8, 8)
    assert fastwnll.tvm(torch.rand(0, 8, 8)).shape == (0, 8, 8)


@pytest.mark.parametrize("dtype, tol", [(torch.float16, 2e-3), (torch.bfloat16, 1e-2)])
def test_half_inputs_computed_in_float32(natural, dtype, tol):
    x = natural[:2].to(dtype)
    z = fastwnll.tv_denoise(x, 0.05, iters=40)
    assert z.dtype == dtype
    ref = fastwnll.tv_denoise(x.float(), 0.05, iters=40)
    assert (z.float() - ref).abs().max() <= tol
    zm = fastwnll.tvm(x, generator=torch.Generator().manual_seed(0), iters=40)
    assert zm.dtype == dtype


def test_float64_is_computed_in_float64(mnist):
    x = mnist[:2]
    z = fastwnll.tv_denoise(x, 0.05, iters=50, tol=None)
    assert z.dtype == torch.float64
    assert (z - fastwnll.tv_denoise(x.float(), 0.05, iters=50, tol=None).double()).abs().max() < 1e-5


def test_inplace_and_autograd_iterations_agree(natural):
    x = natural[:2].float().reshape(-1, 32, 32)
    mask = (torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) > 0.4).float()
    for m in (None, mask):
        for iso in (True, False):
            steps = tpd.plane_steps(x, 0.05, m is not None)
            a, b = tpd.InplacePlanes(x, m, steps, iso), tpd.AutogradPlanes(x, m, steps, iso)
            a.run(10)
            a.gap()  # the gap's buffers must not disturb the iteration
            a.run(15)
            b.run(25)
            assert (a.output() - b.output()).abs().max() < 1e-5
            assert torch.allclose(a.gap(), b.gap(), rtol=1e-3, atol=1e-4)


def test_cpu_chunks_give_the_same_result(monkeypatch, natural):
    x = natural.float()  # 12 planes of 32x32
    mask = tvmod.keep_mask(x, 0.5, generator=torch.Generator().manual_seed(0))
    whole_z, whole_zi = fastwnll.tv_denoise(x, 0.05, iters=40, return_info=True)
    whole_m, whole_mi = fastwnll.tvm(x, mask=mask, iters=40, return_info=True)
    monkeypatch.setattr(tvmod, "CPU_CHUNK_PIXELS", 5 * 32 * 32)  # chunks of 5, 5 and 2 planes
    z, zi = fastwnll.tv_denoise(x, 0.05, iters=40, return_info=True)
    m, mi = fastwnll.tvm(x, mask=mask, iters=40, return_info=True)
    assert (z - whole_z).abs().max() < 1e-6 and (m - whole_m).abs().max() < 1e-6
    assert torch.equal(zi.iters, whole_zi.iters) and torch.equal(mi.iters, whole_mi.iters)


@pytest.mark.parametrize("lam", [1e-3, 0.03, 1.0, 50.0])
@pytest.mark.parametrize("masked", [False, True])
def test_plane_steps_satisfy_convergence_condition_and_scale(lam, masked):
    x = torch.rand(5, 6, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x[0] = 0.25  # a constant plane: range 0
    steps = tpd.plane_steps(x, lam, masked)
    tau, a, b = steps[:, tpd.TAU], steps[:, tpd.A], steps[:, tpd.B]
    sigma = b / lam
    assert torch.allclose(tau * sigma * 8 * lam**2, torch.ones(5, dtype=torch.float64))
    assert torch.allclose(a, tau * lam)
    assert torch.allclose(steps[:, tpd.INV] + steps[:, tpd.C], torch.ones(5, dtype=torch.float64))
    assert torch.equal(steps[:, tpd.LO], x.flatten(1).amin(1))
    assert torch.equal(steps[:, tpd.RANGE], x.flatten(1).amax(1) - x.flatten(1).amin(1))
    assert bool(((tau >= tpd.TAU_MIN) & (tau <= tpd.TAU_MAX)).all()) and 0 < tpd.RHO < 2
    # the steps depend on lam relative to the range only: scaling x and lam keeps tau
    scaled = tpd.plane_steps(255 * x + 17, 255 * lam, masked)
    assert torch.allclose(scaled[:, tpd.TAU], tau)


# ------------------------------------------------------------------------------------------------
# gradients


def test_bpda_gradient_is_identity():
    x = torch.rand(2, 3, 9, 10, requires_grad=True)
    g = torch.randn(2, 3, 9, 10)
    fastwnll.tvm(x, generator=torch.Generator().manual_seed(0), iters=10).backward(g)
    assert torch.equal(x.grad, g)
    x.grad = None
    fastwnll.tv_denoise(x, 0.1, iters=10).backward(g)
    assert torch.equal(x.grad, g)


def test_unrolled_gradient_matches_finite_differences():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 5, 6, dtype=torch.float64, generator=g).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: fastwnll.tv_denoise(v, 0.1, iters=8, backward="unrolled"), (x,))
    mask = torch.rand(1, 1, 5, 6, dtype=torch.float64, generator=g).clamp(0.1, 0.9).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda v, m: fastwnll.tvm(v, lam=0.1, mask=m, iters=8, isotropic=False, backward="unrolled"), (x, mask)
    )
    # the exact gradient is not the identity, and the unrolled forward is the same map
    out = fastwnll.tv_denoise(x, 0.1, iters=8, backward="unrolled")
    w = torch.randn(x.shape, dtype=torch.float64, generator=g)
    (grad,) = torch.autograd.grad((out * w).sum(), x)
    assert (grad - w).abs().max() > 1e-2
    assert grad.sum().item() == pytest.approx(w.sum().item())  # ROF preserves the mean: sum(z) = sum(x)
    assert (out - fastwnll.tv_denoise(x, 0.1, iters=8)).abs().max() < 1e-12
    # without a graph to build, unrolled runs the in-place path and returns a plain tensor
    with torch.no_grad():
        assert not fastwnll.tv_denoise(x, 0.1, iters=8, backward="unrolled").requires_grad


# ------------------------------------------------------------------------------------------------
# the TVM module


def test_tvm_module_matches_function_and_reprs(mnist):
    x = mnist[:4].float()
    layer = TVM(drop_rate=0.4, lam=0.05, iters=20, seed=3)
    assert repr(layer) == "TVM(drop_rate=0.4, lam=0.05, iters=20, tol=0.001, isotropic=True, backward='bpda', seed=3)"
    first = layer(x)
    expected = fastwnll.tvm(x, drop_rate=0.4, lam=0.05, iters=20, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, expected)
    assert not torch.equal(layer(x), first)  # the mask sequence advances
    layer.reset()
    assert torch.equal(layer(x), first)  # and restarts
    layer.eval()
    layer.reset()
    assert torch.equal(layer(x), first)  # same in evaluation mode
    torch.manual_seed(0)
    unseeded = TVM(iters=20)(x)
    torch.manual_seed(0)
    assert torch.equal(TVM(iters=20)(x), unseeded)  # seed=None uses the global generator
    assert torch.equal(TVM(drop_rate=0.0, lam=0.05, iters=20, seed=1)(x), fastwnll.tv_denoise(x, 0.05, iters=20))


def test_evaluation_defence_is_the_tvm_module(mnist):
    from fastwnll.evaluation import TVMDefense, make_tvm

    x = mnist[:4].float()
    defence = TVMDefense(drop_rate=0.4, lam=0.05, iters=20, seed=3)
    assert isinstance(defence, TVM)  # one implementation: the defence is nn.TVM ...
    expected = fastwnll.tvm(x, drop_rate=0.4, lam=0.05, iters=20, generator=torch.Generator().manual_seed(3))
    first = defence(x.requires_grad_())
    assert torch.equal(first, expected.clamp(0, 1)) and not first.requires_grad  # ... clamped, no gradient
    assert not torch.equal(defence(x), first)  # the seeded mask sequence advances, as before
    assert torch.equal(TVMDefense(drop_rate=0.4, lam=0.05, iters=20, seed=3)(x), first)
    made = make_tvm({"iters": 20, "tol": None}, seed=3)
    assert (made.iters, made.tol, made.seed, made.drop_rate) == (20, None, 3, 0.5)
    with pytest.raises(ValueError, match="unknown TVM settings"):
        make_tvm({"steps": 3})
    with pytest.raises(ValueError, match="TVM drop_rate"):
        TVMDefense(drop_rate=1.0)


def test_tvm_module_in_a_model_passes_gradients():
    torch.manual_seed(0)
    model = nn.Sequential(TVM(iters=15, seed=0), nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    x = torch.rand(5, 3, 8, 8, requires_grad=True)
    model(x).sum().backward()
    w = model[2].weight
    assert torch.allclose(x.grad, w.sum(0).reshape(1, 3, 8, 8).expand(5, 3, 8, 8))  # BPDA: identity through TVM
    unrolled = nn.Sequential(TVM(iters=15, seed=0, backward="unrolled"), nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    x.grad = None
    unrolled(x).sum().backward()
    assert x.grad.abs().sum() > 0 and not torch.allclose(x.grad, w.sum(0).reshape(1, 3, 8, 8).expand(5, 3, 8, 8))


def test_tvm_module_in_a_data_pipeline(mnist):
    transforms = pytest.importorskip("torchvision.transforms")

    images = (mnist[:6, 0].numpy() * 255).astype(np.uint8)  # [6, 28, 28] uint8, like a dataset

    class Digits(torch.utils.data.Dataset):
        def __init__(self, transform):
            self.transform = transform

        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            return self.transform(images[i])

    pipeline = transforms.Compose([transforms.ToTensor(), TVM(iters=20, seed=5)])  # [1, 28, 28] per image
    batches = list(torch.utils.data.DataLoader(Digits(pipeline), batch_size=3))
    assert [tuple(b.shape) for b in batches] == [(3, 1, 28, 28)] * 2
    again = list(
        torch.utils.data.DataLoader(
            Digits(transforms.Compose([transforms.ToTensor(), TVM(iters=20, seed=5)])), batch_size=3
        )
    )
    assert all(torch.equal(a, b) for a, b in zip(batches, again))
    clean = torch.from_numpy(images).float()[:, None] / 255
    assert (torch.cat(batches) - clean).abs().mean() < 0.1


class _ConstantImages(torch.utils.data.Dataset):
    """Four identical [1, 8, 8] images through a seeded TVM (module level, so workers can load it)."""

    def __init__(self):
        self.transform = TVM(iters=5, seed=1)

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return self.transform(torch.linspace(0.2, 0.8, 64).reshape(1, 8, 8))


def test_seeded_tvm_module_in_dataloader_workers():
    def load():
        return torch.cat(list(torch.utils.data.DataLoader(_ConstantImages(), batch_size=1, num_workers=2)))

    first, second = load(), load()
    assert torch.equal(first, second)  # reproducible run to run
    assert not torch.equal(first[0], first[1])  # items 0 and 1 come from different workers: different masks


# ------------------------------------------------------------------------------------------------
# bad input


X = torch.rand(2, 3, 8, 8)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: fastwnll.tv_denoise(X, 0.0), ValueError, "lam must be a finite number > 0"),
        (lambda: fastwnll.tv_denoise(X, -0.1), ValueError, "lam must be a finite number > 0"),
        (lambda: fastwnll.tv_denoise(X, float("nan")), ValueError, "lam must be a finite number > 0"),
        (lambda: fastwnll.tv_denoise(X, "0.1"), TypeError, "lam must be a real number"),
        (lambda: fastwnll.tvm(X, lam=0), ValueError, "lam must be a finite number > 0"),
        (lambda: fastwnll.tvm(X, drop_rate=1.0), ValueError, r"drop_rate must be in \[0, 1\)"),
        (lambda: fastwnll.tvm(X, drop_rate=-0.1), ValueError, r"drop_rate must be in \[0, 1\)"),
        (lambda: fastwnll.tvm(X, drop_rate=True), TypeError, "drop_rate must be a real number"),
        (lambda: fastwnll.tv_denoise(X, 0.1, iters=0), ValueError, "iters must be >= 1"),
        (lambda: fastwnll.tvm(X, iters=-3), ValueError, "iters must be >= 1"),
        (lambda: fastwnll.tv_denoise(X, 0.1, iters=2.5), TypeError, "iters must be an int"),
        (lambda: fastwnll.tv_denoise(X, 0.1, tol=0.0), ValueError, "tol must be None or a finite number > 0"),
        (lambda: fastwnll.tvm(X, tol=-1e-3), ValueError, "tol must be None or a finite number > 0"),
        (lambda: fastwnll.tvm(X, tol=float("nan")), ValueError, "tol must be None or a finite number > 0"),
        (lambda: fastwnll.tv_denoise(X, 0.1, tol="1e-3"), TypeError, "tol must be None or a real number"),
        (lambda: TVM(tol=0), ValueError, "TVM tol must be None or a finite number > 0"),
        (lambda: fastwnll.tv_denoise(X, 0.1, isotropic=1), TypeError, "isotropic must be a bool"),
        (lambda: fastwnll.tv_denoise(X, 0.1, backward="exact"), ValueError, "unknown backward"),
        (lambda: fastwnll.tvm(X, backend="cuda"), ValueError, "unknown backend"),
        (lambda: fastwnll.tv_denoise(X.masked_fill(X > 0.9, float("nan")), 0.1), ValueError, "NaN or Inf"),
        (lambda: fastwnll.tvm(X.masked_fill(X > 0.9, float("inf"))), ValueError, "NaN or Inf"),
        (lambda: fastwnll.tv_denoise(X[0, 0], 0.1), ValueError, r"shape \[B, C, H, W\] or \[B, H, W\]"),
        (lambda: fastwnll.tvm(X[None]), ValueError, r"shape \[B, C, H, W\] or \[B, H, W\]"),
        (lambda: fastwnll.tv_denoise((X * 255).to(torch.uint8), 0.1), TypeError, "floating-point tensor"),
        (lambda: fastwnll.tvm(torch.ones(2, 8, 8, dtype=torch.int64)), TypeError, "floating-point tensor"),
        (lambda: fastwnll.tv_denoise(X.numpy(), 0.1), TypeError, "x must be a torch.Tensor"),
        (lambda: fastwnll.tvm(X * 2), ValueError, r"tvm expects x in \[0, 1\]"),
        (lambda: fastwnll.tvm(X - 0.5), ValueError, r"tvm expects x in \[0, 1\]"),
        (
            lambda: fastwnll.tvm(X, mask=torch.ones(2, 3, 8, 7, dtype=torch.bool)),
            ValueError,
            "mask must have the shape",
        ),
        (lambda: fastwnll.tvm(X, mask=torch.ones(2, 3, 8, 8, dtype=torch.int64)), TypeError, "bool or floating-point"),
        (lambda: fastwnll.tvm(X, mask=torch.full((2, 3, 8, 8), 1.5)), ValueError, r"weights in \[0, 1\]"),
        (lambda: fastwnll.tvm(X, mask=X.numpy()), TypeError, "mask must be a torch.Tensor"),
        (lambda: fastwnll.tvm(X, mask=X > 0.5, generator=torch.Generator()), ValueError, "either mask or generator"),
        (lambda: fastwnll.tvm(X, generator=0), TypeError, "generator must be a torch.Generator"),
        (lambda: tvmod.keep_mask(X, 1.5), ValueError, r"drop_rate must be in \[0, 1\)"),
        (lambda: tvmod.keep_mask([1.0], 0.5), TypeError, "x must be a torch.Tensor"),
        (lambda: TVM(drop_rate=1.0), ValueError, r"drop_rate must be in \[0, 1\)"),
        (lambda: TVM(lam=-1), ValueError, "lam must be a finite number > 0"),
        (lambda: TVM(iters=0), ValueError, "iters must be >= 1"),
        (lambda: TVM(backward="none"), ValueError, "unknown backward"),
        (lambda: TVM(seed=-1), ValueError, "seed must be None or an int"),
        (lambda: TVM(seed=0)(torch.rand(8, 8)), ValueError, r"shape \[B, C, H, W\] or \[B, H, W\]"),
    ],
)
def test_bad_input_is_rejected(call, error, message):
    with pytest.raises(error, match=message):
        call()
