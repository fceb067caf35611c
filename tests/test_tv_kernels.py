"""Tests for the Triton TV kernels (fastwnll.kernels.tv_primal_dual), skipped where triton is not
installed (it is a dependency on Linux only). The kernels run under the Triton interpreter in a
subprocess (tests/tv_triton_interpret.py) and are compared with the torch path; they are also
compiled for sm_80 and sm_90 (no GPU needed) and checked for spills; on a GPU they run for real.
"""

import contextlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton", reason="the Triton kernels need the triton package (a dependency on Linux)")

import fastwnll
from fastwnll.kernels import tv_primal_dual as kernels  # compiled-mode kernels (no TRITON_INTERPRET here)
from fastwnll.tv import denoise as tvmod
from fastwnll.tv import iteration as tpd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tv_triton_interpret import CASES, make_inputs  # noqa: E402

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")


# short iteration counts end far from convergence on purpose here (tests/test_tv_convergence.py tests the warning)
pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore::fastwnll.tv.denoise.TVConvergenceWarning"),
]


# ------------------------------------------------------------------------------------------------
# Triton kernels: interpreter on CPU tensors, and compilation for real GPUs


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory):
    out = tmp_path_factory.mktemp("tv_triton") / "out.pt"
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    script = Path(__file__).resolve().parent / "tv_triton_interpret.py"
    proc = subprocess.run([sys.executable, str(script), str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return torch.load(out)


@pytest.mark.parametrize("name", sorted(CASES))
def test_triton_kernel_equals_torch_path(interpreted, name):
    _, dtype, _, isotropic, entry, path, lam, iters, tol = CASES[name]
    x, mask = make_inputs(name)
    out, its, gap = interpreted[name]
    assert out.shape == x.shape and out.dtype == dtype
    if entry == "kernel" or path != "auto":  # the kernel's own (P, G) against the torch path's
        planes, weights = x.reshape(-1, *x.shape[-2:]), None if mask is None else mask.reshape(-1, *x.shape[-2:])
        ref, ref_its, ref_gap = tvmod._iterate_planes(planes, weights, lam, iters, tol, isotropic, False, False)
        ref_gap = ref_gap.float()
        assert torch.allclose(gap, ref_gap, rtol=1e-4, atol=1e-5 * float(ref_gap[:, 0].max()))
    else:
        ref, info = (
            fastwnll.tv_denoise(x, lam, iters=iters, tol=tol, isotropic=isotropic, backend="torch", return_info=True)
            if mask is None
            else fastwnll.tvm(
                x, lam=lam, iters=iters, tol=tol, isotropic=isotropic, mask=mask, backend="torch", return_info=True
            )
        )
        ref_its = info.iters.flatten()
        assert (gap - info.gap.flatten()).abs().max() <= 2e-5
    assert torch.equal(its, ref_its)  # the same stopping iteration for every plane
    if tol is not None and "tol" in name:
        assert len(set(its.tolist())) > 1  # planes of the batch stopped at different checks
    scale = float(x.float().abs().max())
    tol_out = {torch.float32: 2e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}[dtype] * max(1.0, scale)
    assert (out.float() - ref.reshape(out.shape).float()).abs().max() <= tol_out


@pytest.mark.parametrize("name", sorted(n for n in CASES if n.startswith(("scaled", "exact"))))
def test_triton_kernels_at_any_scale_and_at_the_exact_solutions(interpreted, name):
    """Through the Triton kernels (interpreted): images scaled by 1e-30 or 1e30 give the unit-scale
    result scaled (relative to the scale, not to 1), and the data (lam -> 0) or the (masked) mean (lam
    beyond the TV) come back certified with no iteration (the fused kernel's per-plane budget of 0)."""
    _, dtype, mask_kind, isotropic, entry, _, lam, iters, tol = CASES[name]
    x, mask = make_inputs(name)
    out, its, gap = interpreted[name]
    s = float(mask_kind[1:]) if mask_kind in ("x1e-30", "x1e30") else 1.0
    unit, info = fastwnll.tv_denoise(
        (x / s).double(), lam / s, iters=iters, tol=tol, isotropic=isotropic, backend="torch", return_info=True
    )
    assert torch.isfinite(out).all() and out.dtype == dtype
    if name.startswith("scaled"):
        assert (out.double() / s - unit).abs().max() <= 1e-4
        assert (gap.double() - info.gap.flatten()).abs().max() <= 1e-4
        return
    assert (its == 0).all() and (gap <= 1e-6).all()
    if lam < 1:
        assert torch.equal(out, x)
    else:
        expected = x.double() if mask is None else x.double() * mask
        weight = (torch.ones_like(x) if mask is None else mask.double()).sum((-2, -1), True)
        mean = (expected.sum((-2, -1), True) / weight).expand_as(x)
        torch.testing.assert_close(out.double(), mean, rtol=0, atol=1e-6)


def test_dispatch_rules(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x = torch.rand(1, 8, 8)
    assert not tvmod._use_kernel(x, "auto", "bpda")  # CPU tensors: torch path
    assert not tvmod._use_kernel(x, "torch", "bpda")
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        fastwnll.tv_denoise(x, 0.1, backend="triton")
    with pytest.raises(ValueError, match="float16, bfloat16 or float32"):
        fastwnll.tv_denoise(x.double(), 0.1, backend="triton")
    with pytest.raises(ValueError, match="unrolled"):
        fastwnll.tv_denoise(x, 0.1, backend="triton", backward="unrolled")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert tvmod._use_kernel(x, "triton", "bpda")
    with pytest.raises(ValueError, match="does not fit"):
        kernels.tv_primal_dual(torch.rand(1, 224, 224), None, 0.1, 1, None, True, path="plane")
    with pytest.raises(ValueError, match="unknown path"):
        kernels.tv_primal_dual(x, None, 0.1, 1, None, True, path="fused")


def test_fused_kernel_chooser_by_padded_tile():
    fits = kernels.plane_fits
    # CIFAR, MNIST and other small planes run fused
    assert fits(32, 32) and fits(28, 28) and fits(20, 17) and fits(32, 64) and fits(64, 32) and fits(8, 256)
    assert fits(1, 7) and fits(2, 60) and fits(1, 256)  # strips of at most one warp's elements
    # too many elements for the registers (64x64 and up), or a degenerate strip whose padded tile
    # has a side below MIN_SIDE (1 x 2048 spilled 1.5 kB per thread when compiled for sm_90)
    assert not fits(64, 64) and not fits(65, 32) and not fits(224, 224)
    assert not fits(1, 2048) and not fits(2, 1024) and not fits(4, 512) and not fits(3, 300) and not fits(2048, 1)


def test_kernel_launches_run_under_the_tensor_device(monkeypatch):
    # every launch (and the step-table computation) happens inside device_guard(tensor): on CUDA
    # that makes the tensor's device current, so kernels run there and on its current stream
    entered = []

    class Guard:
        def __init__(self, t):
            self.t = t

        def __enter__(self):
            entered.append(self.t)

        def __exit__(self, *exc):
            entered.remove(self.t)

    launches = []

    class FakeKernel:
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                assert entered and entered[-1].device == args[0].device, "kernel launched outside device_guard"
                launches.append(grid)

            return launch

    monkeypatch.setattr(kernels, "device_guard", Guard)
    for name in ("_tv_plane_kernel", "_tv_tile_step_kernel", "_tv_tile_gap_kernel"):
        monkeypatch.setattr(kernels, name, FakeKernel())
    kernels.tv_primal_dual(torch.rand(2, 8, 8), None, 0.1, 3, None, True, path="plane")
    kernels.tv_primal_dual(torch.rand(2, 8, 8), torch.rand(2, 8, 8) > 0.5, 0.1, 3, 1e-3, True, path="tiled")
    assert len(launches) == 1 + 3 + 1  # fused; 3 tiled steps and one gap


def test_device_guard_selects_the_tensor_device():
    from fastwnll.kernels.tv_primal_dual import device_guard

    assert isinstance(device_guard(torch.zeros(1)), type(contextlib.nullcontext()))
    guard = device_guard(torch.empty(1, device="meta"))  # not CUDA: no device switch
    assert isinstance(guard, type(contextlib.nullcontext()))


@pytest.mark.parametrize("arch", [80, 90])
def test_kernels_compile_for_gpus_without_spills(arch):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    common = {"HAS_MASK": True, "ISOTROPIC": True, "NSTEPS": tpd.STEP_COLUMNS}
    plane = {
        "x_ptr": "*bf16",
        "w_ptr": "*i1",
        "steps_ptr": "*fp32",
        "out_ptr": "*bf16",
        "iters_ptr": "*i32",
        "pg_ptr": "*fp32",
        "budget_ptr": "*i32",
        "H": "i32",
        "W": "i32",
        "every": "i32",
        "tol": "fp32",
        "rho": "fp32",
    }
    state = {n: "*fp32" for n in ("z_ptr", "p1_ptr", "p2_ptr")}
    step = {
        "x_ptr": "*fp16",
        "w_ptr": "*fp32",
        "steps_ptr": "*fp32",
        "active_ptr": "*i32",
        **state,
        **{n: "*fp32" for n in ("z_out", "p1_out", "p2_out")},
        "H": "i32",
        "W": "i32",
        "tiles_h": "i32",
        "tiles_w": "i32",
        "rho": "fp32",
    }
    gap = {
        "x_ptr": "*fp16",
        "w_ptr": "*fp32",
        "steps_ptr": "*fp32",
        **state,
        "out_ptr": "*fp32",
        "H": "i32",
        "W": "i32",
        "tiles_h": "i32",
        "tiles_w": "i32",
    }
    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    # a CIFAR/MNIST tile, the largest fused tile (2048 elements, 8 warps) and the longest one-warp
    # strip that plane_fits accepts, then the tiled kernels
    for fn, sig, (bh, bw), warps in (
        (kernels._tv_plane_kernel, plane, (32, 32), 4),
        (kernels._tv_plane_kernel, plane, (32, 64), 8),
        (kernels._tv_plane_kernel, plane, (1, 256), 1),
        (kernels._tv_tile_step_kernel, step, (kernels.TILE, kernels.TILE), 4),
        (kernels._tv_tile_gap_kernel, gap, (kernels.TILE, kernels.TILE), 4),
    ):
        assert fn is not kernels._tv_plane_kernel or kernels.plane_fits(bh, bw)
        const = {**common, "BLOCK_H": bh, "BLOCK_W": bw}
        src = ASTSource(fn, {**sig, **{k: "constexpr" for k in const}}, constexprs=const)
        compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": warps})
        assert "tt.gather" in compiled.asm["ttgir"] or fn is not kernels._tv_plane_kernel
        cubin = Path(os.environ.get("TMPDIR", "/tmp")) / f"tv_{fn.__name__}_{bh}x{bw}_{arch}_{os.getpid()}.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        try:
            usage = subprocess.run(
                [str(cuobjdump), "-res-usage", str(cubin)], capture_output=True, text=True, check=True
            ).stdout
        finally:
            cubin.unlink()
        assert re.search(r"STACK:0 ", usage) and re.search(r"LOCAL:0 ", usage), usage


def _assert_same_planes(out, info, ref, ref_info, tol):
    """Kernel and torch path agree: the planes that stopped at the same check to ``tol``; GPU rounding
    (fused multiply-adds) may move a plane at the border of the tolerance by one check (<= 1 %)."""
    same = info.iters == ref_info.iters
    assert same.float().mean() >= 0.99
    diff = (out.float() - ref.float()).abs().flatten(-2).amax(-1)
    assert bool((diff[same] <= tol).all())


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("shape", [(512, 3, 32, 32), (64, 1, 28, 28), (4, 1, 64, 64), (2, 3, 224, 224), (3, 1, 2048)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_triton_on_gpu_equals_torch_path(shape, dtype):
    x = torch.rand(shape, device="cuda").to(dtype)
    mask = tvmod.keep_mask(x, 0.5, generator=torch.Generator(device="cuda").manual_seed(0))
    tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}[dtype]
    for m in (None, mask):
        for stop in (None, 1e-3):
            out, info = fastwnll.tvm(x, mask=m, drop_rate=0.0, iters=50, tol=stop, return_info=True)
            ref, ref_info = fastwnll.tvm(
                x, mask=m, drop_rate=0.0, iters=50, tol=stop, backend="torch", return_info=True
            )
            assert out.dtype == dtype
            _assert_same_planes(out, info, ref, ref_info, tol)


@pytest.mark.cuda
@cuda
def test_triton_runs_on_the_current_stream_of_the_tensor_device():
    x = torch.rand(256, 3, 32, 32, device="cuda")
    ref = fastwnll.tv_denoise(x, 0.05, iters=40, tol=None, backend="torch")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        out = fastwnll.tv_denoise(x, 0.05, iters=40, tol=None)
        big = fastwnll.tv_denoise(x.reshape(4, 3, 128, 512)[:, :, :100], 0.05, iters=5, tol=None)  # tiled
    side.synchronize()
    assert (out - ref).abs().max() < 1e-5
    big_ref = fastwnll.tv_denoise(x.reshape(4, 3, 128, 512)[:, :, :100], 0.05, iters=5, tol=None, backend="torch")
    assert (big - big_ref).abs().max() < 1e-5


@pytest.mark.cuda
@two_gpus
@pytest.mark.parametrize("shape", [(64, 3, 32, 32), (2, 1, 100, 130)])  # fused and tiled
def test_triton_on_a_second_gpu_while_the_first_is_current(shape):
    x = torch.rand(shape, device="cuda:1")
    mask = tvmod.keep_mask(x, 0.5, generator=torch.Generator(device="cuda:1").manual_seed(0))
    with torch.cuda.device(0):
        out, info = fastwnll.tvm(x, mask=mask, iters=60, return_info=True)
        ref, ref_info = fastwnll.tvm(x, mask=mask, iters=60, backend="torch", return_info=True)
    assert out.device == x.device and info.iters.device == x.device
    _assert_same_planes(out, info, ref, ref_info, 1e-5)


@pytest.mark.cuda
@cuda
def test_device_mismatches_are_reported():
    x = torch.rand(1, 8, 8, device="cuda")
    with pytest.raises(ValueError, match="mask is on"):
        fastwnll.tvm(x, mask=torch.ones(1, 8, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="generator is on"):
        fastwnll.tvm(x, generator=torch.Generator())
