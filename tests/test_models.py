"""Models: the CIFAR ResNets, the MNIST and digits CNNs, their buffer blocks and heads, attach_head."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastwnll.models import MODELS, Classifier, attach_head, build
from fastwnll.models.resnet import BasicBlock
from fastwnll.nn import WNLLHead, wnll_batch
from fastwnll.nn.head import GRADIENTS
from fastwnll.nn.network import collect_templates

torch.set_num_threads(1)

# model -> (input shape [C, H, W], trunk width = embed width)
SHAPES = {
    **{name: ((3, 32, 32), 64) for name in ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110")},
    "mnist_cnn": ((1, 28, 28), 200),
    "digits_cnn": ((1, 8, 8), 64),
}
WNLL_OPTIONS = {"k": 5, "k_sigma": 3}


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_model_names():
    assert MODELS == ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "mnist_cnn", "digits_cnn")


@pytest.mark.parametrize("name", MODELS)
def test_output_and_embedding_shapes(name):
    torch.manual_seed(0)
    shape, width = SHAPES[name]
    model = build(name, num_classes=7).eval()
    x = torch.rand(2, *shape)
    with torch.no_grad():
        out, features, embedded = model(x), model.trunk(x), model.embed(x)
    assert isinstance(model, Classifier) and isinstance(model.head, nn.Linear)
    assert out.shape == (2, 7) and out.dtype == torch.float32
    assert features.shape == (2, width) and embedded.shape == (2, width) and model.embed_dim == width
    assert (embedded >= 0).all()  # the buffer block ends with a ReLU
    assert torch.equal(out, model.head(model.buffer(features)))
    assert [type(m) for m in model.buffer] == [nn.Linear, nn.ReLU] and model.buffer[0].in_features == width


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_resnet_depth(depth):
    model = build(f"resnet{depth}")
    blocks = [m for m in model.trunk.modules() if isinstance(m, BasicBlock)]
    convs = [m for m in model.trunk.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(blocks) == 3 * (depth - 2) // 6
    assert len(convs) + 1 == depth  # 3x3 convolutions + the classifier: 6n + 2 weighted layers
    shortcuts = [b for b in blocks if not isinstance(b.shortcut, nn.Identity)]
    assert len(shortcuts) == 2  # option B: projections only where resolution and width change


def test_parameter_counts():
    resnet20 = build("resnet20")
    # He et al.'s ResNet20 with option-A shortcuts has 269,722 parameters; option B's two projection
    # shortcuts (1x1 conv + batch norm) add 16*32 + 2*32 + 32*64 + 2*64 = 2,752.
    assert count(resnet20.trunk) + count(resnet20.head) == 269_722 + 2_752
    assert count(resnet20.buffer) == 64 * 64 + 64
    assert count(resnet20) == 276_634
    mnist = build("mnist_cnn")
    convs = (9 * 1 * 32 + 32) + (9 * 32 * 32 + 32) + (9 * 32 * 64 + 64) + (9 * 64 * 64 + 64)
    assert count(mnist.trunk) == convs + 1024 * 200 + 200
    assert count(mnist.buffer) == 200 * 200 + 200 and count(mnist.head) == 200 * 10 + 10
    assert count(build("digits_cnn")) < 40_000


def test_in_channels_and_num_classes():
    model = build("mnist_cnn", num_classes=3, in_channels=3).eval()
    assert model(torch.rand(2, 3, 28, 28)).shape == (2, 3)
    model = build("resnet20", in_channels=1).eval()
    assert model(torch.rand(2, 1, 20, 20)).shape == (2, 10)  # any image size: global average pooling


@pytest.mark.parametrize(
    "name, x, error, message",
    [
        (
            "resnet20",
            torch.rand(2, 1, 32, 32),
            ValueError,
            r"resnet20 expects images of shape \[N, 3, H, W\], got \[2, 1, 32, 32\]",
        ),
        (
            "resnet20",
            torch.rand(3, 32, 32),
            ValueError,
            r"resnet20 expects images of shape \[N, 3, H, W\], got \[3, 32, 32\]",
        ),
        ("mnist_cnn", torch.rand(2, 1, 32, 32), ValueError, r"mnist_cnn expects images of shape \[N, 1, 28, 28\]"),
        ("digits_cnn", torch.rand(2, 1, 28, 28), ValueError, r"digits_cnn expects images of shape \[N, 1, 8, 8\]"),
        (
            "digits_cnn",
            torch.zeros(2, 1, 8, 8, dtype=torch.uint8),
            TypeError,
            "expects a floating-point image tensor, got torch.uint8",
        ),
        ("digits_cnn", [[0.0]], TypeError, "expects a floating-point image tensor, got list"),
    ],
)
def test_bad_inputs(name, x, error, message):
    model = build(name)
    with pytest.raises(error, match=message):
        model(x)
    with pytest.raises(error, match=message):
        model.trunk(x)  # stage-2 training calls the trunk directly


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"name": "resnet18"}, ValueError, "unknown model 'resnet18'"),
        ({"name": "resnet20", "num_classes": 1}, ValueError, "num_classes must be an integer >= 2"),
        ({"name": "resnet20", "num_classes": 10.0}, ValueError, "num_classes must be an integer >= 2"),
        ({"name": "resnet20", "in_channels": 0}, ValueError, "in_channels must be a positive integer"),
        ({"name": "resnet20", "head": "softmax"}, ValueError, r"head must be one of \('linear', 'wnll'\)"),
        (
            {"name": "resnet20", "head": "linear", "k": 5},
            TypeError,
            r"head='linear' takes no head options, got \['k'\]",
        ),
        (
            {"name": "resnet20", "head": "wnll", "k_sigma": 50},
            ValueError,
            r"k_sigma=50 must be an integer in \[2, k\+1",
        ),
        ({"name": "resnet20", "head": "wnll", "bogus": 1}, TypeError, "bogus"),
    ],
)
def test_build_errors(kwargs, error, message):
    name = kwargs.pop("name")
    with pytest.raises(error, match=message):
        build(name, **kwargs)


def digit_batch(n, seed=0):
    from fastwnll.data import load_dataset

    x, y = load_dataset("digits", split="train")
    rows = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return x[rows], y[rows]


@pytest.mark.parametrize("gradient", GRADIENTS)
def test_wnll_head_training_step(gradient):
    torch.manual_seed(0)
    model = build("digits_cnn", head="wnll", gradient=gradient, template_fraction=0.4, **WNLL_OPTIONS)
    assert isinstance(model.head, WNLLHead) and model.head.k == 5 and model.head.gradient == gradient
    assert model.head.template_fraction == 0.4 and model.head.in_features == 64
    x, y = digit_batch(40)
    model.train()
    with wnll_batch(model, y, generator=torch.Generator().manual_seed(1)) as batch:
        out = model(x)
    assert out.shape == (24, 10) and batch.targets.shape == (24,)  # 16 templates, 24 queries
    assert torch.allclose(out.exp().sum(1), torch.ones(24), atol=1e-5)
    F.cross_entropy(out, batch.targets).backward()
    assert model.buffer[0].weight.grad.abs().sum() > 0
    assert model.trunk[1].weight.grad.abs().sum() > 0
    linear_grad = model.head.linear.weight.grad
    if gradient == "surrogate":  # backward through the linear layer
        assert linear_grad is not None and linear_grad.abs().sum() > 0
    else:  # backward through the interpolation: the linear layer gets nothing
        assert linear_grad is None


def test_wnll_head_eval_and_state_dict_round_trip():
    torch.manual_seed(0)
    model = build("digits_cnn", head="wnll", **WNLL_OPTIONS)
    x, y = digit_batch(60)
    assert collect_templates(model, (x[:50], y[:50])) == 50
    model.eval()
    with torch.no_grad():
        out = model(x[50:])
    assert out.shape == (10, 10) and torch.allclose(out.exp().sum(1), torch.ones(10), atol=1e-5)
    restored = build("digits_cnn", head="wnll", **WNLL_OPTIONS)
    restored.load_state_dict(model.state_dict())
    restored.eval()
    with torch.no_grad():
        assert torch.equal(restored(x[50:]), out)


def test_attach_head_on_torchvision_resnet18():
    torchvision = pytest.importorskip("torchvision")

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        logits = model(x)
    old_fc = model.fc
    assert attach_head(model, "fc", **WNLL_OPTIONS) is model
    head = model.fc
    assert isinstance(head, WNLLHead) and (head.in_features, head.num_classes, head.k) == (512, 10, 5)
    assert not head.training  # keeps the replaced layer's eval flag
    assert torch.equal(head.linear.weight, old_fc.weight) and torch.equal(head.linear.bias, old_fc.bias)
    head.mode = "linear"
    with torch.no_grad():
        assert torch.allclose(model(x), F.log_softmax(logits, 1), atol=1e-6)
    head.mode = "wnll"
    xs, ys = torch.rand(12, 3, 32, 32), torch.arange(12) % 10
    collect_templates(model, (xs, ys))
    with torch.no_grad():
        assert model(x).shape == (2, 10)
    model.train()
    with wnll_batch(model, ys, generator=torch.Generator().manual_seed(0)) as batch:
        out = model(xs)
    assert out.shape == (8, 10)  # 12 rows, a third of them templates
    F.cross_entropy(out, batch.targets).backward()
    assert model.layer4[1].conv2.weight.grad.abs().sum() > 0
    model.eval()
    head.mode = "linear"
    with torch.no_grad():
        log_probs = model(x)
    attach_head(model, "fc", head="linear")  # and back: the same classifier, an nn.Linear again
    assert isinstance(model.fc, nn.Linear) and not model.fc.training
    with torch.no_grad():
        assert torch.allclose(F.log_softmax(model(x), 1), log_probs, atol=1e-6)


def test_attach_head_dotted_path_dtype_and_bias_free_layer():
    model = nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 3, bias=False)))
    model = model.double()
    attach_head(model, "1.2", gradient="exact", k=4, k_sigma=3)
    head = model[1][2]
    assert isinstance(head, WNLLHead) and head.gradient == "exact"
    assert head.linear.weight.dtype == torch.float64 and head.template_features.dtype == torch.float64
    assert torch.equal(head.linear.bias, torch.zeros(3, dtype=torch.float64))


@pytest.mark.parametrize(
    "attr, head, kwargs, error, message",
    [
        ("classifier", "wnll", {}, AttributeError, "has no submodule 'classifier'"),
        ("body.fc", "wnll", {}, AttributeError, "has no submodule 'body.fc'"),
        ("act", "wnll", {}, TypeError, "replaces an nn.Linear, but 'act' is a ReLU"),
        ("fc", "linear", {}, TypeError, "replaces a WNLLHead, but 'fc' is a Linear"),
        ("fc", "svm", {}, ValueError, "head must be one of"),
    ],
)
def test_attach_head_errors(attr, head, kwargs, error, message):
    model = nn.Module()
    model.act, model.fc = nn.ReLU(), nn.Linear(4, 3)
    with pytest.raises(error, match=message):
        attach_head(model, attr, head=head, **kwargs)


def test_attach_head_more_errors():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        attach_head("resnet", "fc")
    model = build("digits_cnn", head="wnll")
    with pytest.raises(TypeError, match="head='linear' takes no head options"):
        attach_head(model, "head", head="linear", k=3)
