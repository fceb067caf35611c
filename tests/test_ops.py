"""torch.library.opcheck of every torch.ops.fastwnll op over shared sample inputs, on every device
with a kernel for the op (schema, fake kernel, autograd registration, torch.compile tracing)."""

import pytest
import torch
from test_solver import random_graph

import fastwnll

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("one_thread")


def _solve_samples():
    idx, w, y = random_graph(20, 6, 4, 3, seed=12)
    yield idx, w.requires_grad_(), y, 0.5, 1e-12, 200
    idx, w, y = random_graph(40, 10, 5, 2, seed=13, one_hot=False)
    yield idx, w.float().requires_grad_(), y.float(), 2.0, 1e-6, 200
    idx, w, y = random_graph(30, 5, 3, 1, seed=14)
    yield idx, w, y, 0.0, 1e-12, 200  # no gradient


def _adjoint_samples():
    for seed, C in ((15, 3), (16, 1)):
        idx, w, y = random_graph(20, 6, 4, C, seed=seed)
        u = fastwnll.wnll_solve(idx, w, y, mu=0.5)
        G = torch.randn(14, C, generator=torch.Generator().manual_seed(seed), dtype=F64)
        yield idx, w, y, u, G, 0.5, 1e-12, 200


def _unreachable_samples():
    idx, w, _ = random_graph(30, 5, 3, 2, seed=17)
    w[10:] = 0.0
    yield idx, w, 5
    yield idx, w.float(), 1


def _knn_candidates_samples():
    # (self_graph=True needs base to be the very tensor query, which opcheck's copies are not)
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(18), dtype=F64)
    yield x, x.clone(), 6, False
    yield x[:20].float(), x.float(), 5, False


def _knn_refine_samples():
    g = torch.Generator().manual_seed(19)
    x = torch.randn(40, 3, generator=g, dtype=F64)
    cand = torch.randint(0, 40, (40, 8), generator=g)
    cand[:, 0] = -1
    yield x, x, cand, 5, 0
    yield x[:10].float(), x.float(), cand[:10], 4, None


# op name -> (sample generator, devices with a kernel)
SAMPLES = {
    "wnll_solve": (_solve_samples, ("cpu", "cuda")),
    "wnll_adjoint": (_adjoint_samples, ("cpu", "cuda")),
    "unreachable_queries": (_unreachable_samples, ("cpu",)),
    "knn_candidates": (_knn_candidates_samples, ("cpu",)),
    "knn_refine": (_knn_refine_samples, ("cpu",)),
}


def test_every_op_has_samples():
    ops = {
        name
        for name in dir(torch.ops.fastwnll)
        if isinstance(getattr(torch.ops.fastwnll, name), torch._ops.OpOverloadPacket)
    }
    assert ops == set(SAMPLES)


def _to(value, device):
    if not isinstance(value, torch.Tensor):
        return value
    moved = value.detach().to(device)
    return moved.requires_grad_() if value.requires_grad else moved


CASES = [
    pytest.param(name, device, marks=[pytest.mark.cuda] if device == "cuda" else [], id=f"{name}-{device}")
    for name, (_, devices) in sorted(SAMPLES.items())
    for device in devices
]


@pytest.mark.parametrize("name, device", CASES)
def test_opcheck(name, device):
    samples, _ = SAMPLES[name]
    op = getattr(torch.ops.fastwnll, name).default
    for args in samples():
        torch.library.opcheck(op, tuple(_to(a, device) for a in args))
