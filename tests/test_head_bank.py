"""WNLLHead in evaluation: through its indexed bank (the same scores as wnll_interpolate, rebuilt
whenever the bank changes), transductive and inductive inference, template chunks that hold every
class, warnings about classes, dtypes, the k_sigma default, the kNN backend option and the graph
recorded with results."""

import copy
import pickle
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fastwnll
from fastwnll.nn import WNLLHead, graph_summary, wnll_batch
from fastwnll.runtime import TrainConfig
from fastwnll.wnll.interpolate import wnll_interpolate

pytestmark = pytest.mark.usefixtures("one_thread")


def clustered(n, d=6, classes=3, seed=0, dtype=torch.float32, spread=1.0):
    """n points around ``classes`` Gaussian centres, labels cycling 0..classes-1."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    centres = 4 * torch.randn(classes, d, generator=g)
    return (centres[y] + spread * torch.randn(n, d, generator=g)).to(dtype), y


def log_probs(scores):
    p = scores.clamp_min(1e-8)
    return torch.log(p / p.sum(1, keepdim=True))


def eval_head(x, y, **kwargs):
    """A head in eval mode with the bank (x, y); exact gradient unless given (the surrogate's output is
    the WNLL value too)."""
    head = WNLLHead(x.shape[1], int(y.max()) + 1, **{"gradient": "exact", **kwargs}).to(x.dtype).eval()
    head.set_templates(x, y)
    return head


def test_eval_equals_wnll_interpolate_with_the_bank():
    x, y = clustered(400, spread=2.0)
    head = eval_head(x[:300], y[:300], k=10)
    with torch.no_grad():
        out = head(x[300:])
    assert torch.equal(out, log_probs(wnll_interpolate(x[:300], y[:300], x[300:], k=10, num_classes=3)))
    head.gradient = "surrogate"
    with torch.no_grad():
        torch.testing.assert_close(head(x[300:]), out)


def test_exact_gradient_in_eval_equals_the_full_rebuilds():
    x, y = clustered(160, dtype=torch.float64, spread=3.0)
    head = eval_head(x[:120], y[:120], k=8)
    q = x[120:].clone().requires_grad_(True)
    F.nll_loss(head(q), y[120:]).backward()
    ref = x[120:].clone().requires_grad_(True)
    F.nll_loss(log_probs(wnll_interpolate(x[:120], y[:120], ref, k=8)), y[120:]).backward()
    assert ref.grad.abs().max() > 1e-6
    torch.testing.assert_close(q.grad, ref.grad, rtol=1e-9, atol=1e-13)


def test_the_index_follows_every_change_of_the_bank():
    """A stale index would be a silently wrong answer: a new bank, load_state_dict, in-place edits of
    either buffer, dtype moves and new graph options all give the scores of the bank as it is now."""
    x, y = clustered(300, spread=2.5)
    head = eval_head(x[:200], y[:200], k=10)
    queries = x[200:]

    def expect(templates, labels, **options):
        options = {"k": head.k, "k_sigma": head.k_sigma, "num_classes": 3, **options}
        with torch.no_grad():
            assert torch.equal(
                head(queries.to(templates.dtype)),
                log_probs(wnll_interpolate(templates, labels, queries.to(templates.dtype), **options)),
            )

    expect(x[:200], y[:200])
    head.set_templates(x[50:250], y[50:250])
    expect(x[50:250], y[50:250])
    other = eval_head(x[:150], y[:150], k=10)
    head.load_state_dict(other.state_dict())  # another size: new buffers
    expect(x[:150], y[:150])
    head.load_state_dict(eval_head(x[10:160], y[10:160], k=10).state_dict())  # same size: copied in place
    expect(x[10:160], y[10:160])
    with torch.no_grad():
        head.template_features[:20] += 1.0  # in place
    expect(head.template_features.clone(), y[10:160])
    head.template_labels[::4] = (head.template_labels[::4] + 1) % 3
    expect(head.template_features.clone(), head.template_labels.clone())
    head.k, head.k_sigma = 6, 5
    expect(head.template_features.clone(), head.template_labels.clone())
    head.double()
    expect(head.template_features.clone(), head.template_labels.clone())


def test_copies_and_pickles_do_not_carry_the_index():
    x, y = clustered(120)
    head = eval_head(x[:100], y[:100], k=8)
    with torch.no_grad():
        out = head(x[100:])
    assert head._banks is not None
    for clone in (copy.deepcopy(head), pickle.loads(pickle.dumps(head))):
        assert clone._banks is None
        with torch.no_grad():
            assert torch.equal(clone(x[100:]), out)


def test_inductive_inference_does_not_depend_on_the_batch(mnist_pca):
    """Each row against the bank alone: the same scores in any batch, equal to interpolating the
    row by itself; transductive scores change with the batch."""
    x, y = mnist_pca
    x = x.float()
    head = eval_head(x[:1000], y[:1000], inference="inductive")
    queries = x[2000:2100]
    with torch.no_grad():
        out = head(queries)
        perm = torch.randperm(100, generator=torch.Generator().manual_seed(0))
        assert torch.equal(head(queries[perm]), out[perm])
        assert torch.equal(torch.cat([head(queries[i : i + 9]) for i in range(0, 100, 9)]), out)
        single = torch.cat(
            [wnll_interpolate(x[:1000], y[:1000], queries[i : i + 1], num_classes=10) for i in range(20)]
        )
        torch.testing.assert_close(out[:20].exp(), log_probs(single).exp(), rtol=1e-4, atol=1e-6)
        assert (out.argmax(1) == y[2000:2100]).float().mean() > 0.8
        head.inference = "transductive"
        assert not torch.equal(head(queries[:10]), head(queries)[:10])
    with pytest.raises(ValueError, match="inference"):
        WNLLHead(4, 2, inference="batch")


@pytest.mark.parametrize("gradient", ["surrogate", "exact"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("template_batches", [1, 3])
def test_inductive_head_is_batch_independent_bit_for_bit_with_either_gradient(gradient, dtype, template_batches):
    """Outputs and per-row input gradients of an inductive head in eval mode: a batch, its rows one by
    one and uneven chunks give the same bits, with the surrogate gradient (whose value is the WNLL
    score exactly, the same as the exact gradient's head gives) as with the exact one."""
    x, y = clustered(600, d=40, classes=12, spread=3.0, dtype=dtype)
    head = eval_head(x[:450], y[:450], inference="inductive", gradient=gradient, template_batches=template_batches)
    queries = x[450:] * 1.1
    weights = torch.randn(150, 12, generator=torch.Generator().manual_seed(3), dtype=dtype)

    def run(rows):
        q = queries[rows].clone().requires_grad_(True)
        out = head(q)
        (grad,) = torch.autograd.grad((out * weights[rows]).sum(), q)
        return out.detach(), grad

    out, grad = run(slice(0, 150))
    parts = [run(slice(i, i + 1)) for i in range(150)]
    assert torch.equal(torch.cat([o for o, _ in parts]), out) and torch.equal(torch.cat([g for _, g in parts]), grad)
    cuts = [0, 7, 8, 50, 113, 150]
    parts = [run(slice(a, b)) for a, b in zip(cuts, cuts[1:])]
    assert torch.equal(torch.cat([o for o, _ in parts]), out) and torch.equal(torch.cat([g for _, g in parts]), grad)
    with torch.no_grad():
        value = head(queries)
        head.gradient = "exact" if gradient == "surrogate" else "surrogate"
        assert torch.equal(head(queries), value)  # the surrogate's value is WNLL's, bit for bit


def test_template_batches_hold_every_class_when_labels_cycle():
    """Labels cycling with the chunk count: an interleaved split gave each chunk a single class, so
    every query scored 1/C for every class. Each chunk now holds every class."""
    x, y = clustered(330, classes=3)
    head = eval_head(x[:300], y[:300], k=8, template_batches=3)
    chunks = head.template_chunks()
    assert torch.equal(torch.cat(chunks).sort().values, torch.arange(300))
    assert all(set(y[c].tolist()) == {0, 1, 2} for c in chunks)
    with torch.no_grad():
        out = head(x[300:])
    assert (out.argmax(1) == y[300:]).float().mean() > 0.9
    expected = sum(wnll_interpolate(x[:300][c], y[:300][c], x[300:], k=8, num_classes=3) for c in chunks) / 3
    torch.testing.assert_close(out, log_probs(expected))
    with pytest.warns(RuntimeWarning, match=r"class\(es\) \[2\]"):
        head.set_templates(x[:302], torch.cat([y[:300], torch.tensor([0, 0])]).clamp(max=1))  # class 2 absent
    head.template_labels[:3] = torch.tensor([2, 2, 1])  # then 2 templates of class 2 for 3 chunks
    with pytest.raises(ValueError, match="cannot each hold every class"):
        head(x[300:])


def test_warnings_about_classes():
    x, y = clustered(60)
    head = WNLLHead(6, 4)
    with pytest.warns(RuntimeWarning, match=r"class\(es\) \[3\]"):
        head.set_templates(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        WNLLHead(6, 3).set_templates(x, y)
    train = WNLLHead(6, 3, k=10, template_fraction=0.2)
    y_one = torch.tensor([1] * 5 + [0, 2] * 10)
    with pytest.warns(RuntimeWarning, match=r"hold one class \(1\)"):
        with wnll_batch(train, y_one, split="first"):
            train(x[:25])


def test_features_of_another_dtype():
    """Half precision (an autocast network) is cast up; float64 into a float32 head is refused."""
    x, y = clustered(100)
    head = eval_head(x[:80], y[:80], k=8)
    with torch.no_grad():
        half = head(x[80:].half())
        assert half.dtype == torch.float32
        assert torch.equal(half, head(x[80:].half().float()))
        with pytest.raises(TypeError, match=r"head.to\(torch.float64\)"):
            head(x[80:].double())
        head.mode = "linear"
        assert head(x[80:].bfloat16()).dtype == torch.float32
        head.double()
        assert head(x[80:]).dtype == torch.float64


def test_k_sigma_defaults_to_the_librarys():
    x, y = clustered(40)
    head = eval_head(x[:30], y[:30], k=4)  # was k_sigma=8 > k + 1: an error
    assert head.k_sigma == 5
    with torch.no_grad():
        assert torch.equal(head(x[30:]), log_probs(wnll_interpolate(x[:30], y[:30], x[30:], k=4, num_classes=3)))
    assert WNLLHead(6, 3).k_sigma == 8
    assert TrainConfig(dataset="digits", head="wnll", k=4).resolve().head_kwargs()["k_sigma"] is None


def test_knn_backend_per_head(monkeypatch):
    x, y = clustered(200)
    pytest.importorskip("faiss")
    head = eval_head(x[:150], y[:150], knn_backend="hnsw")
    assert not head.exact_knn and not head.template_banks()[0].exact
    with torch.no_grad():
        assert (head(x[150:]).argmax(1) == y[150:]).float().mean() > 0.9
    seen = []
    original = fastwnll.wnll.interpolate.wnll_interpolate

    def spy(*args, **kwargs):
        seen.append(kwargs["knn_backend"])
        return original(*args, **kwargs)

    monkeypatch.setattr(fastwnll.wnll.interpolate, "wnll_interpolate", spy)
    head.train()
    with wnll_batch(head, y[:90]):
        head(x[:90])
    assert seen == ["hnsw"]
    assert WNLLHead(6, 3).exact_knn
    with pytest.raises(ValueError, match="kNN backend"):
        WNLLHead(6, 3, knn_backend="kdtree")
    config = TrainConfig(dataset="digits", head="wnll", knn_backend="ivf").resolve()
    assert config.head_kwargs()["knn_backend"] == "ivf"
    with pytest.raises(ValueError, match="knn_backend"):
        TrainConfig(dataset="digits", head="wnll", knn_backend="kdtree").resolve()


def test_graph_summary():
    x, y = clustered(100)
    model = nn.Sequential(nn.Identity(), eval_head(x[:90], y[:90], k=8, template_batches=3))
    assert graph_summary(model, 64) == {
        "inference": "transductive",
        "templates": 30,
        "template_batches": 3,
        "queries_per_graph": 64,
        "k": 8,
        "k_sigma": 8,
        "knn_backend": "auto",
        "exact_knn": True,
    }
    model[1].inference = "inductive"
    assert graph_summary(model, 64)["queries_per_graph"] == 1
    model[1].mode = "linear"
    assert graph_summary(model, 64) is None
    assert graph_summary(nn.Linear(3, 2), 64) is None


def test_an_index_built_in_inference_mode_serves_gradients():
    """Evaluation under torch.inference_mode (which builds the index), then an attack's gradient."""
    x, y = clustered(120, dtype=torch.float64, spread=3.0)
    head = eval_head(x[:100], y[:100], k=8)
    reference = eval_head(x[:90], y[:90], k=8)
    with torch.inference_mode():
        head(x[100:])
        head.set_templates(x[:90], y[:90])
        head(x[100:])
    grads = []
    for h in (head, reference):
        q = x[100:].clone().requires_grad_(True)
        F.nll_loss(h(q), y[100:]).backward()
        grads.append(q.grad)
    assert torch.equal(grads[0], grads[1]) and grads[0].abs().sum() > 0
