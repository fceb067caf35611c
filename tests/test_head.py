"""WNLLHead: batch splitting, both gradient modes, the template bank, errors, compile, torchvision."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fastwnll
from fastwnll.nn import WNLLHead, wnll_batch
from fastwnll.nn.batch import split_batch
from fastwnll.nn.network import collect_templates


def clustered(n, d=6, classes=3, seed=0, dtype=torch.float32):
    """n points in ``classes`` well separated Gaussian clusters, labels cycling 0..classes-1."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    centres = 4 * torch.randn(classes, d, generator=g)
    x = centres[y] + torch.randn(n, d, generator=g)
    return x.to(dtype), y


def test_split_keeps_every_class_and_partitions_rows():
    y = torch.tensor([0] * 20 + [1] * 20 + [2] * 2)
    t, q = split_batch(y, 1 / 3, generator=torch.Generator().manual_seed(0))
    assert len(t) == 14 and len(q) == 28
    assert torch.equal(torch.cat([t, q]).sort().values, torch.arange(42))
    assert set(y[t].tolist()) == {0, 1, 2}
    t2, _ = split_batch(y, 1 / 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(t, t2)
    t3, q3 = split_batch(y, 0.25, split="first")
    assert torch.equal(t3, torch.arange(10)) and torch.equal(q3, torch.arange(10, 42))
    # more classes than templates: still a valid split, no requirement that all classes appear
    t4, q4 = split_batch(torch.arange(6), 1 / 3, generator=torch.Generator().manual_seed(1))
    assert len(t4) == 2 and len(q4) == 4


def test_training_forward_outputs_query_rows_with_wnll_values():
    x, y = clustered(45)
    head = WNLLHead(6, 3, k=8, k_sigma=5)
    with wnll_batch(head, y, generator=torch.Generator().manual_seed(3)) as batch:
        out = head(x)
    assert out.shape == (30, 3) and out.dtype == torch.float32
    assert torch.equal(batch.targets, y[batch.query_index])
    expected = fastwnll.wnll_interpolate(
        x[batch.template_index], y[batch.template_index], x[batch.query_index], k=8, k_sigma=5, num_classes=3
    )
    torch.testing.assert_close(out.exp(), expected.clamp_min(1e-8) / expected.clamp_min(1e-8).sum(1, keepdim=True))
    assert (out.argmax(1) == batch.targets).float().mean() > 0.9


def test_linear_mode_and_models_without_wnll_heads_keep_all_rows():
    x, y = clustered(30)
    head = WNLLHead(6, 3, mode="linear")
    with wnll_batch(head, y) as batch:
        out = head(x)
    assert out.shape == (30, 3) and torch.equal(batch.targets, y)
    torch.testing.assert_close(out, F.log_softmax(head.linear(x), 1))
    with wnll_batch(nn.Linear(6, 3), y) as batch:
        assert torch.equal(batch.targets, y)


def _grads(head, x, y, loss_fn):
    x = x.clone().requires_grad_(True)
    head.zero_grad()
    with wnll_batch(head, y, split="first") as batch:
        out = head(x)
        loss_fn(out, batch.targets).backward()
    return out, batch, x.grad, head.linear.weight.grad


def test_surrogate_with_nll_loss_backpropagates_like_a_plain_linear_head():
    x, y = clustered(45)
    head = WNLLHead(6, 3, k=8, k_sigma=5)
    out, batch, gx, gw = _grads(head, x, y, F.nll_loss)
    xq = x[batch.query_index].clone().requires_grad_(True)
    head.zero_grad()
    F.cross_entropy(head.linear(xq), batch.targets).backward()
    torch.testing.assert_close(gw, head.linear.weight.grad)
    torch.testing.assert_close(gx[batch.query_index], xq.grad)
    assert (gx[batch.template_index] == 0).all()
    assert gw.abs().sum() > 0


def test_surrogate_with_cross_entropy_sends_wnll_residual_through_the_linear_layer():
    x, y = clustered(45)
    head = WNLLHead(6, 3, k=8, k_sigma=5)
    out, batch, _, gw = _grads(head, x, y, F.cross_entropy)
    residual = (out.detach().exp() - F.one_hot(batch.targets, 3)) / out.shape[0]
    torch.testing.assert_close(gw, residual.T @ x[batch.query_index])


def test_exact_gradient_goes_through_the_interpolation_only():
    x = torch.randn(45, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.arange(45) % 3  # labels unrelated to the features: uncertain scores, sizeable gradients
    head = WNLLHead(6, 3, k=8, k_sigma=5, gradient="exact").double()
    out_e, batch, gx_e, gw_e = _grads(head, x, y, F.cross_entropy)
    assert gw_e is None
    xe = x.clone().requires_grad_(True)
    t, q = batch.template_index, batch.query_index
    u = fastwnll.wnll_interpolate(xe[t], y[t], xe[q], k=8, k_sigma=5, num_classes=3)
    u = u.clamp_min(1e-8)
    F.nll_loss(torch.log(u / u.sum(1, keepdim=True)), y[q]).backward()
    torch.testing.assert_close(gx_e, xe.grad)
    assert gx_e[t].abs().sum() > 0  # templates get gradient too
    head.gradient = "surrogate"
    out_s, _, gx_s, _ = _grads(head, x, y, F.cross_entropy)
    torch.testing.assert_close(out_s, out_e)  # same forward value
    assert gx_s.abs().sum() > 0 and not torch.allclose(gx_s, gx_e, rtol=0.1, atol=0)


def test_eval_interpolates_against_the_bank_and_averages_template_batches():
    x, y = clustered(90)
    head = WNLLHead(6, 3, k=8, k_sigma=5).eval()
    head.set_templates(x[:60], y[:60])
    with torch.no_grad():
        out = head(x[60:])
    assert out.shape == (30, 3)
    assert (out.argmax(1) == y[60:]).float().mean() > 0.9
    head.template_batches = 2
    with torch.no_grad():
        out2 = head(x[60:])
    chunks = [
        fastwnll.wnll_interpolate(x[:60][c::2], y[:60][c::2], x[60:], k=8, k_sigma=5, num_classes=3) for c in range(2)
    ]
    expected = ((chunks[0] + chunks[1]) / 2).clamp_min(1e-8)
    torch.testing.assert_close(out2.exp(), expected / expected.sum(1, keepdim=True))
    with wnll_batch(head, y[60:]) as batch:  # labels are ignored in eval mode
        assert head(x[60:]).shape == (30, 3)
    assert torch.equal(batch.targets, y[60:])


def test_bank_survives_state_dict_of_another_size_and_dtype_moves():
    x, y = clustered(40)
    head = WNLLHead(6, 3)
    head.set_templates(x, y)
    other = WNLLHead(6, 3)
    other.set_templates(x[:5], y[:5])
    other.load_state_dict(head.state_dict())
    assert other.num_templates == 40
    torch.testing.assert_close(other.template_features, x)
    assert torch.equal(other.template_labels, y)
    empty = WNLLHead(6, 3)
    empty.load_state_dict(head.state_dict())
    assert empty.num_templates == 40
    head.load_state_dict(WNLLHead(6, 3).state_dict())  # an empty bank loads too
    assert head.num_templates == 0
    wrong = WNLLHead(7, 3).state_dict()
    with pytest.raises(RuntimeError, match="size mismatch"):
        head.load_state_dict(wrong)
    other.double()
    assert other.template_features.dtype == torch.float64 and other.template_labels.dtype == torch.int64


def test_collect_templates_uses_any_model_and_restores_its_state():
    torch.manual_seed(0)
    x, y = clustered(50)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Dropout(0.5), WNLLHead(8, 3))
    model.train()
    head = model[3]
    assert collect_templates(model, (x, y), max_templates=35, batch_size=16) == 35
    assert model.training and head.training and head.mode == "wnll"
    assert head.num_templates == 35 and torch.equal(head.template_labels, y[:35])
    with torch.no_grad():
        torch.testing.assert_close(head.template_features, model[:2].eval()(x[:35]))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=20)
    assert collect_templates(model, loader) == 50
    model.eval()
    with torch.no_grad():
        assert model(x[:10]).shape == (10, 3)


def test_torchvision_resnet_with_replaced_fc_trains_and_evaluates():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=4)
    model.fc = WNLLHead(model.fc.in_features, 4, k=5, k_sigma=3)
    x, y = torch.rand(24, 3, 32, 32), torch.arange(24) % 4
    with wnll_batch(model, y) as batch:
        loss = F.cross_entropy(model(x), batch.targets)
    loss.backward()
    assert model.fc.linear.weight.grad is not None and model.conv1.weight.grad.abs().sum() > 0
    collect_templates(model, (x, y))
    model.eval()
    with torch.no_grad():
        assert model(x[:6]).shape == (6, 4)


def test_torch_compile_in_eval_mode():
    torch.manual_seed(0)
    x, y = clustered(60)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), WNLLHead(8, 3, k=8, k_sigma=5))
    collect_templates(model, (x[:40], y[:40]))
    model.eval()
    compiled = torch.compile(model, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x[40:]), model(x[40:]))


def test_clear_errors():
    x, y = clustered(30)
    head = WNLLHead(6, 3)
    with pytest.raises(RuntimeError, match="wnll_batch"):
        head(x)
    with wnll_batch(head, y[:20]):
        with pytest.raises(ValueError, match="20 labels but .* 30 rows"):
            head(x)
    with pytest.raises(ValueError, match=r"shape \[rows, 6\]"):
        head(x[:, :5])
    with pytest.raises(TypeError, match="floating-point"):
        head(y)
    head.eval()
    with pytest.raises(RuntimeError, match="empty template bank"):
        head(x)
    with pytest.raises(ValueError, match=r"shape \[N, 6\]"):
        head.set_templates(x[:, :4], y)
    with pytest.raises(ValueError, match="outside"):
        head.set_templates(x, y + 1)
    with pytest.raises(TypeError, match="int64"):
        head.set_templates(x, y.int())
    with pytest.raises(ValueError, match="NaN"):
        head.set_templates(x.masked_fill(x > 3, float("nan")), y)
    with pytest.raises(ValueError, match="30 labels"):
        head.set_templates(x[:10], y)
    head.set_templates(x, y)
    head.template_batches = 31
    with pytest.raises(ValueError, match="template_batches"):
        head(x)
    head.gradient = "straight"
    with pytest.raises(ValueError, match="gradient"):
        head(x)
    with pytest.raises(ValueError, match="mode"):
        WNLLHead(6, 3, mode="softmax")
    with pytest.raises(ValueError, match="template_fraction"):
        WNLLHead(6, 3, template_fraction=1.0)
    with pytest.raises(ValueError, match="k_sigma"):
        WNLLHead(6, 3, k=4, k_sigma=6)
    with pytest.raises(ValueError, match="num_classes"):
        WNLLHead(6, 1)
    with pytest.raises(TypeError, match="nn.Module"):
        with wnll_batch(lambda v: v, y):
            pass
    with pytest.raises(ValueError, match="no WNLLHead"):
        collect_templates(nn.Linear(6, 3), (x, y))
    with pytest.raises(ValueError, match="at least 2 rows"):
        split_batch(y[:1], 0.5)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bank_moves_with_the_model_and_autocast_keeps_float32():
    x, y = clustered(90)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), WNLLHead(8, 3, k=8, k_sigma=5))
    collect_templates(model, (x[:60], y[:60]))
    model.cuda().eval()
    assert model[2].template_features.is_cuda
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
        out = model(x[60:].cuda())
    assert out.dtype == torch.float32 and (out.argmax(1).cpu() == y[60:]).float().mean() > 0.9
    model.train()
    with wnll_batch(model, y.cuda()) as batch:
        F.cross_entropy(model(x.cuda()), batch.targets).backward()
    assert model[0].weight.grad.is_cuda
