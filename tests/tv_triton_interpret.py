"""Run the Triton TV kernels under the Triton interpreter on CPU tensors (used by tests/test_tv.py).

Usage: ``TRITON_INTERPRET=1 python tests/tv_triton_interpret.py OUT.pt``. The interpreter must be
switched on before the kernels are decorated, i.e. before ``fastwnll.kernels`` is imported, so this
runs in its own process. For every case in ``CASES`` it saves the inputs and the kernel output;
the test recomputes the torch path on the same inputs and compares.
"""
import os
import sys

import torch

# name: (shape, dtype, mask kind, isotropic, entry point, path, lam, iters)
CASES = {
    # fused kernel, public API (auto picks "plane" for planes that fit)
    "plane_denoise_iso": ((2, 3, 28, 28), torch.float32, None, True, "tv_denoise", "auto", 0.05, 12),
    "plane_tvm_bool_iso": ((2, 3, 28, 28), torch.float32, "bool", True, "tvm", "auto", 0.03, 12),
    "plane_tvm_float_aniso_3d": ((3, 20, 17), torch.float32, "float", False, "tvm", "auto", 0.1, 12),
    "plane_64_half": ((1, 1, 64, 64), torch.float16, "bool", True, "tvm", "auto", 0.03, 8),
    "plane_bf16_aniso": ((2, 1, 16, 16), torch.bfloat16, None, False, "tv_denoise", "auto", 0.05, 10),
    # tiled kernel: 40x70 pads to 64x128 > 4096 elements, so auto picks it (2x3 tiles of 32x32)
    "tiled_tvm_auto": ((1, 2, 40, 70), torch.float32, "bool", True, "tvm", "auto", 0.03, 10),
    # kernels called directly with a forced path
    "tiled_forced_denoise_aniso": ((2, 33, 45), torch.float32, None, False, "kernel", "tiled", 0.05, 10),
    "tiled_forced_half_mask": ((2, 28, 28), torch.float16, "float", True, "kernel", "tiled", 0.03, 10),
    "plane_forced_mask": ((2, 28, 28), torch.float32, "bool", True, "kernel", "plane", 0.03, 10),
}


def make_inputs(name: str):
    """Deterministic inputs (x in [0, 1], mask or None) of a case."""
    shape, dtype, mask_kind, *_ = CASES[name]
    g = torch.Generator().manual_seed(sum(map(ord, name)))
    x = torch.rand(shape, generator=g).to(dtype)
    if mask_kind == "bool":
        mask = torch.rand(shape, generator=g) >= 0.5
    elif mask_kind == "float":
        mask = torch.rand(shape, generator=g).clamp(0.2, 1.0)
    else:
        mask = None
    return x, mask


def run_case(name: str) -> torch.Tensor:
    import fastwnll
    from fastwnll.kernels.tv_primal_dual import tv_primal_dual
    from fastwnll.tv import step_constants

    _, _, _, isotropic, entry, path, lam, iters = CASES[name]
    x, mask = make_inputs(name)
    if entry == "tv_denoise":
        return fastwnll.tv_denoise(x, lam, iters=iters, isotropic=isotropic, backend="triton")
    if entry == "tvm":
        return fastwnll.tvm(x, lam=lam, iters=iters, isotropic=isotropic, mask=mask, backend="triton")
    consts = step_constants(lam, mask is not None)
    return tv_primal_dual(x, mask, consts, iters, isotropic, path=path)


def main(out: str) -> None:
    if os.environ.get("TRITON_INTERPRET") != "1":
        raise SystemExit("set TRITON_INTERPRET=1")
    torch.save({name: run_case(name) for name in CASES}, out)


if __name__ == "__main__":
    main(sys.argv[1])
