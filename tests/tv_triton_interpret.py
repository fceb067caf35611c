"""Run the Triton TV kernels under the Triton interpreter on CPU tensors (used by tests/test_tv.py).

Usage: ``TRITON_INTERPRET=1 python tests/tv_triton_interpret.py OUT.pt``. The interpreter must be
switched on before the kernels are decorated, i.e. before ``fastwnll.kernels`` is imported, so this
runs in its own process. For every case in ``CASES`` it saves the kernel output, the iterations run and the gaps;
the test recomputes the torch path on the same inputs and compares.
"""

import os
import sys

import torch

# name: (shape, dtype, mask kind, isotropic, entry point, path, lam, iters, tol)
CASES = {
    # fused kernel, public API (auto picks "plane" for planes that fit)
    "plane_denoise_iso": ((2, 3, 28, 28), torch.float32, None, True, "tv_denoise", "auto", 0.05, 12, None),
    "plane_tvm_bool_iso": ((2, 3, 28, 28), torch.float32, "bool", True, "tvm", "auto", 0.03, 12, None),
    "plane_tvm_float_aniso_3d": ((3, 20, 17), torch.float32, "float", False, "tvm", "auto", 0.1, 12, None),
    "plane_64x32_half": ((1, 1, 32, 64), torch.float16, "bool", True, "tvm", "auto", 0.03, 8, None),
    "plane_bf16_aniso": ((2, 1, 16, 16), torch.bfloat16, None, False, "tv_denoise", "auto", 0.05, 10, None),
    # stopping: the planes of a batch stop at different checks (a flat plane at the first)
    "plane_tol_denoise": ((4, 1, 12, 12), torch.float32, None, True, "tv_denoise", "auto", 0.3, 60, 2e-3),
    "plane_tol_tvm_aniso": ((3, 1, 12, 10), torch.float32, "bool", False, "tvm", "auto", 0.1, 60, 5e-3),
    # [0, 255] images with a proportional lam: the same iterations as in [0, 1]
    "plane_tol_255": ((2, 1, 12, 12), torch.float32, "x255", True, "tv_denoise", "auto", 0.3 * 255, 60, 2e-3),
    # tiled kernel: 40x70 pads to 64x128 > PLANE_MAX_ELEMENTS, so auto picks it (2x3 tiles of 32x32)
    "tiled_tvm_auto": ((1, 2, 40, 70), torch.float32, "bool", True, "tvm", "auto", 0.03, 10, None),
    "tiled_tol_denoise": ((3, 1, 33, 40), torch.float32, None, True, "tv_denoise", "tiled", 0.3, 30, 1e-2),
    # a degenerate plane (3 x 300 pads to 4 x 512, which spills in the fused kernel) goes to the tiled one
    "tiled_auto_strip": ((1, 1, 3, 300), torch.float32, None, True, "tv_denoise", "auto", 0.05, 10, None),
    # kernels called directly with a forced path
    "tiled_forced_denoise_aniso": ((2, 33, 45), torch.float32, None, False, "kernel", "tiled", 0.05, 10, None),
    "tiled_forced_half_mask": ((2, 28, 28), torch.float16, "float", True, "kernel", "tiled", 0.03, 10, None),
    "plane_forced_mask": ((2, 28, 28), torch.float32, "bool", True, "kernel", "plane", 0.03, 10, None),
    # unit scaling: images scaled by 1e-30 / 1e30 with lam scaled alike (float32 underflowed or
    # overflowed before), in the fused and the tiled kernel
    "scaled_tiny_plane": ((2, 1, 12, 12), torch.float32, "x1e-30", True, "tv_denoise", "auto", 0.1e-30, 80, 1e-3),
    "scaled_huge_plane": ((2, 1, 12, 12), torch.float32, "x1e30", False, "tv_denoise", "auto", 0.1e30, 80, 1e-3),
    "scaled_tiny_tiled": ((1, 2, 40, 70), torch.float32, "x1e-30", True, "tv_denoise", "auto", 0.03e-30, 30, None),
    # the exact solutions: lam -> 0 (the data) and lam beyond the TV (the mean; the masked mean)
    "exact_small_lam": ((2, 1, 12, 12), torch.float32, None, True, "tv_denoise", "auto", 1e-12, 40, 1e-3),
    "exact_large_lam_tvm": ((2, 1, 12, 12), torch.float32, "bool", True, "tvm", "auto", 1e4, 40, 1e-3),
    "exact_large_lam_tiled": ((1, 1, 33, 40), torch.float32, None, True, "tv_denoise", "auto", 1e4, 30, 1e-3),
}


def make_inputs(name: str):
    """Deterministic inputs (x in [0, 1], mask or None) of a case."""
    shape, dtype, mask_kind, *_ = CASES[name]
    g = torch.Generator().manual_seed(sum(map(ord, name)))
    x = torch.rand(shape, generator=g)
    if "tol" in name:
        x[0] = 0.5  # a constant plane converges at the first check
    if mask_kind == "x255":
        x = 255 * x
    elif mask_kind in ("x1e-30", "x1e30"):
        x = x * float(mask_kind[1:])
    x = x.to(dtype)
    if mask_kind == "bool":
        mask = torch.rand(shape, generator=g) >= 0.5
    elif mask_kind == "float":
        mask = torch.rand(shape, generator=g).clamp(0.2, 1.0)
    else:
        mask = None
    return x, mask


def run_case(name: str):
    """``(z, iterations, P and G)`` of a case (see ``fastwnll.kernels.tv_primal_dual.tv_primal_dual``)."""
    import warnings

    import fastwnll
    from fastwnll.kernels.tv_primal_dual import tv_primal_dual
    from fastwnll.tv.denoise import TVConvergenceWarning

    _, _, _, isotropic, entry, path, lam, iters, tol = CASES[name]
    x, mask = make_inputs(name)
    if entry == "kernel" or path != "auto":
        z, its, pg = tv_primal_dual(
            x.reshape(-1, *x.shape[-2:]),
            None if mask is None else mask.reshape(-1, *x.shape[-2:]),
            lam,
            iters,
            tol,
            isotropic,
            path=path,
        )
        return z.reshape(x.shape), its, pg
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TVConvergenceWarning)
        if entry == "tv_denoise":
            z, info = fastwnll.tv_denoise(
                x, lam, iters=iters, tol=tol, isotropic=isotropic, backend="triton", return_info=True
            )
        else:
            z, info = fastwnll.tvm(
                x, lam=lam, iters=iters, tol=tol, isotropic=isotropic, mask=mask, backend="triton", return_info=True
            )
    return z, info.iters.flatten(), info.gap.flatten()


def main(out: str) -> None:
    if os.environ.get("TRITON_INTERPRET") != "1":
        raise SystemExit("set TRITON_INTERPRET=1")
    torch.save({name: run_case(name) for name in CASES}, out)


if __name__ == "__main__":
    main(sys.argv[1])
