"""Small models on sklearn's 8x8 digits shared by the attack and evaluation tests (a helper module,
not a test file): a plain CNN, a CNN read through a WNLL head whose exact gradient masks itself,
and a CNN whose output is a hard argmax (a deliberately masked model)."""

import torch
import torch.nn.functional as F
from torch import nn

from fastwnll.nn.head import WNLLHead
from fastwnll.nn.network import collect_templates

TRAIN_ROWS = 1500  # the first 1,500 digits train; the rest are held out


def load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """sklearn's 8x8 digits as images x [1797, 1, 8, 8] float32 in [0, 1] and labels y [1797] int64."""
    from sklearn.datasets import load_digits as sklearn_digits

    data = sklearn_digits()
    return torch.tensor(data.images, dtype=torch.float32)[:, None] / 16, torch.tensor(data.target)


def train(net: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 200, seed: int = 0) -> nn.Module:
    """``steps`` Adam steps of cross-entropy on random batches of 128 of the training rows; returns
    the net in eval mode with its parameter gradients cleared."""
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(steps):
        idx = torch.randint(0, TRAIN_ROWS, (128,))
        loss = F.cross_entropy(net(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return net.eval()


def plain_cnn(x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    """A small linear-head CNN trained on the training digits (about 97 % held-out accuracy)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(128, 10))
    return train(net, x, y)


def wnll_cnn(x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    """A CNN trained with the linear layer of its WNLL head, then read through the head (wnll mode)
    with a bank of the first 1,000 training digits. Its exact WNLL gradient is a weak attack."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(256, 64),
        nn.ReLU(),
        WNLLHead(64, 10, mode="linear"),
    )
    train(net, x, y, steps=300)
    for p in net.parameters():
        p.requires_grad_(False)
    collect_templates(net, (x[:1000], y[:1000]))
    net[-1].mode = "wnll"
    return net


class RowLinear(nn.Linear):
    """``nn.Linear`` whose rows are computed independently (a product summed over the features): a
    matrix product's blocking, and so its rounding, changes with the number of rows, which would make
    a network's outputs differ by a few ulps between batch sizes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.unsqueeze(1) * self.weight).sum(-1) + self.bias


def row_mlp_wnll(x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    """An MLP of :class:`RowLinear` layers read through an inductive WNLL head (bank of the first 1,000
    training digits): every output and input gradient of a row is the same bits in any batch."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Flatten(), RowLinear(64, 64), nn.ReLU(), RowLinear(64, 32), nn.ReLU(), WNLLHead(32, 10, mode="linear")
    )
    train(net, x, y, steps=300)
    for p in net.parameters():
        p.requires_grad_(False)
    collect_templates(net, (x[:1000], y[:1000]))
    net[-1].mode, net[-1].inference = "wnll", "inductive"
    return net


class HardArgmax(nn.Module):
    """``net``'s decision as scores: 10 on the argmax class, 0 elsewhere. It depends on the input
    only through a hard argmax, so its input gradient is exactly zero: gradient masking by design."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        return logits * 0 + 10 * F.one_hot(logits.argmax(1), logits.shape[1]).to(logits.dtype)


def clustered_wnll(inference: str = "transductive", trunk: nn.Module | None = None):
    """A WNLL model whose templates form one tight cluster per class, so that every query near its class
    has whole neighbourhoods of its own class (even the 4 k nearest templates of a softened graph):
    images [B, 1, 4, 4] in [0, 1], ``trunk`` (default: flatten) to 16 features, a WNLL head (k = 5) with
    60 templates per class around the class centres 0.25 / 0.75 (L_inf 0.5 apart). Returns the model
    and 40 images near the centres [40, 1, 4, 4] with their labels [40]."""
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.25] * 16, [0.75] * 16, [0.25] * 8 + [0.75] * 8, [0.75] * 8 + [0.25] * 8])
    labels = torch.arange(4).repeat_interleave(60)
    head = WNLLHead(16, 4, k=5, inference=inference)
    head.set_templates(centres[labels] + 0.02 * torch.randn(240, 16, generator=g), labels)
    model = nn.Sequential(trunk if trunk is not None else nn.Flatten(), head).eval()
    y = torch.arange(4).repeat(10)
    x = (centres[y] + 0.03 * torch.randn(40, 16, generator=g)).clamp(0, 1).view(40, 1, 4, 4)
    return model, x, y
