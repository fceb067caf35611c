"""One training epoch: the stage set-up (what is trained, with which optimizer), PGD examples,
TVM augmentation, and the optimization steps with a progress bar, in one process or in each process
of a data-parallel run (every process takes its share of each batch of the run's own batch order)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from fastwnll.nn.batch import wnll_batch
from fastwnll.nn.modes import eval_mode
from fastwnll.nn.network import set_head_mode, wnll_heads
from fastwnll.runtime import TrainConfig, autocast, template_rows
from fastwnll.runtime.config import DEFAULT_ADV_TEMPLATES, DEFAULT_TEMPLATES
from fastwnll.runtime.distributed import SINGLE, Processes, all_sum, shard_rows


class Stage:
    """Optimizer, learning-rate schedule and gradient scaler of one stage, and the model's set-up for it.

    Stage ``"linear"`` (the paper's stage 1) trains every parameter with the heads in linear mode
    (SGD at ``config.lr``, multiplied by ``gamma`` at ``milestones``). Stage ``"wnll"`` (stage 2)
    trains only ``model.buffer`` (constant ``stage2_lr``) with the heads in wnll mode, every other
    parameter frozen (``requires_grad=False``) and the frozen trunk in eval mode (BatchNorm
    statistics and dropout fixed).
    """

    def __init__(self, model: nn.Module, name: str, config: TrainConfig, precision: torch.dtype | None):
        self.name = name
        if name == "wnll":
            if not isinstance(getattr(model, "buffer", None), nn.Module) or not wnll_heads(model):
                raise ValueError("stage 2 needs a model with a .buffer block and a WNLL head (fastwnll.models)")
            trained = list(model.buffer.parameters())
            lr, milestones, self.batch_size = config.stage2_lr, [], config.stage2_batch_size
        else:
            trained = list(model.parameters())
            lr, milestones, self.batch_size = config.lr, config.milestones, config.batch_size
        ids = {id(p) for p in trained}
        for p in model.parameters():
            p.requires_grad_(id(p) in ids)
        self.optimizer = torch.optim.SGD(trained, lr=lr, momentum=config.momentum, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones, gamma=config.gamma)
        self.scaler = torch.amp.GradScaler("cuda", enabled=precision == torch.float16)

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def set_modes(self, model: nn.Module) -> None:
        model.train()
        set_head_mode(model, self.name)
        if self.name == "wnll":
            model.trunk.eval()

    def state_dict(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])


def bank_rows(y: torch.Tensor, config: TrainConfig, adversarial: bool = False) -> torch.Tensor:
    """Rows of the training labels ``y`` [N] in the evaluation bank (``config.templates``) or, with
    ``adversarial``, in the bank that crafts stage-2 PGD examples (``config.adv_templates``);
    ValueError when the option asks for more rows than ``y`` has or the bank lacks a class."""
    num_classes = int(y.max()) + 1
    if adversarial:
        return template_rows(
            y, config.adv_templates, DEFAULT_ADV_TEMPLATES, config.seed + 1, num_classes, "adv_templates"
        )
    return template_rows(y, config.templates, DEFAULT_TEMPLATES, config.seed, num_classes)


class AttackBank:
    """Templates for crafting PGD examples against the WNLL head in stage 2.

    The trunk is frozen there, so the trunk features ``[adv_templates, d]`` of a fixed subset of
    the training images are computed once per stage; before each attack the heads' bank is set to
    those features passed through the current buffer block (cheap), so it matches the queries.
    """

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        config: TrainConfig,
        device: torch.device,
        precision: torch.dtype | None,
    ):
        if not isinstance(getattr(model, "trunk", None), nn.Module):
            raise ValueError("adversarial stage-2 training needs a model with .trunk and .buffer (fastwnll.models)")
        rows = bank_rows(y, config, adversarial=True)
        with eval_mode(model), torch.no_grad(), autocast(device, precision):
            self.trunk_features = torch.cat(
                [
                    model.trunk(x[rows[i : i + config.eval_batch_size]].to(device)).float()
                    for i in range(0, rows.shape[0], config.eval_batch_size)
                ]
            )
        self.labels = y[rows].to(device)

    def refresh(self, model: nn.Module) -> None:
        with torch.no_grad():
            features = model.buffer(self.trunk_features)
        for head in wnll_heads(model):
            head.set_templates(features, self.labels)


def adversarial_batch(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    config: TrainConfig,
    stage: Stage,
    bank: AttackBank | None,
    device: torch.device,
    precision: torch.dtype | None,
) -> torch.Tensor:
    """PGD examples (``eps``, ``steps`` steps of ``alpha``, uniform random start from torch's global
    generator) of ``x`` [B, C, H, W] against the model in eval mode: through its linear head in
    stage 1, through its WNLL head (``bank`` of training templates, gradient ``adv_gradient``)
    in stage 2. Returns a detached tensor like ``x``."""
    from fastwnll.attacks import pgd

    gradient = None
    if stage.name == "wnll":
        bank.refresh(model)
        gradient = config.adv_gradient
    with autocast(device, precision):
        return pgd(model, x, y, config.eps, config.alpha, config.steps, random_start=True, gradient=gradient)


def tvm_augment(
    x: torch.Tensor, fraction: float, generator: torch.Generator, batch_rows: int | None = None, first: int = 0
) -> torch.Tensor:
    """``x`` [B, C, H, W] with ``round(fraction * B)`` rows (chosen with ``generator``, a CPU
    generator) replaced by their TV minimization (``fastwnll.tvm``, Guo et al.'s drop rate 0.5 and
    lam 0.03; the mask from torch's global generator on x's device). Returns a new tensor.

    With ``batch_rows``, ``x`` is the rows ``first .. first + B - 1`` of a batch of ``batch_rows`` rows
    shared out between processes: the rows are chosen in the whole batch (every process draws the
    same ones from its copy of ``generator``, which stays the same on every process) and ``x``'s are
    replaced."""
    from fastwnll.tv.denoise import tvm

    count = int(round(fraction * (x.shape[0] if batch_rows is None else batch_rows)))
    if count == 0:
        return x
    rows = torch.randperm(x.shape[0] if batch_rows is None else batch_rows, generator=generator)[:count]
    rows = (rows[(rows >= first) & (rows < first + x.shape[0])] - first).to(x.device)
    x = x.clone()
    with torch.no_grad():
        x[rows] = tvm(x[rows])
    return x


def batch_order(n: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """A random permutation of ``range(n)`` (from ``generator``) cut into batches of ``batch_size``;
    a short last batch is dropped (kept when it is the only one)."""
    order = torch.randperm(n, generator=generator)
    return [order[i : i + batch_size] for i in range(0, max(n - batch_size, 0) + 1, batch_size)]


def batch_loss(
    net: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    precision: torch.dtype | None,
    processes: Processes = SINGLE,
    generator: torch.Generator | None = None,
    desc: str = "",
) -> tuple[torch.Tensor, float, torch.Tensor, torch.Tensor]:
    """The loss of one optimization step of ``net`` on this process's rows ``x`` / ``y`` of a batch.

    ``generator`` splits a WNLL training batch (None: torch's global generator; a global graph needs one
    seeded identically on every process). Returns ``(loss, loss_sum, out, targets)``: the loss to
    backpropagate, the sum of the output rows' cross-entropies (a float), the output rows and their
    labels. For one process ``loss`` is the mean cross-entropy of the rows; for several it is the sum
    of this process's rows' cross-entropies times ``world_size / (output rows of all processes)``, so
    that DistributedDataParallel's average of the processes' gradients is the gradient of the mean over
    the whole batch, however unevenly the rows (a WNLL graph's queries) fall on the processes.
    A loss that is not finite on some process is a RuntimeError on every process.
    """
    with autocast(device, precision), wnll_batch(net, y, generator=generator) as batch:
        out = net(x)
        if not processes.enabled:
            loss = F.cross_entropy(out.float(), batch.targets)
            summed = loss
        else:
            summed = F.cross_entropy(out.float(), batch.targets, reduction="sum")
    targets = batch.targets
    rows, failed = all_sum([targets.shape[0], float(not torch.isfinite(summed))], processes, device)
    if failed:
        value = summed.item() if not torch.isfinite(summed) else "not finite on another process"
        raise RuntimeError(f"the training loss became {value} ({desc}); try a lower learning rate")
    if not processes.enabled:
        return loss, loss.item() * targets.shape[0], out, targets
    return summed * (processes.world_size / rows), summed.item(), out, targets


def train_epoch(
    model: nn.Module,
    stage: Stage,
    x: torch.Tensor,
    y: torch.Tensor,
    config: TrainConfig,
    generator: torch.Generator,
    device: torch.device,
    precision: torch.dtype | None,
    bank: AttackBank | None,
    desc: str,
    progress: bool,
    *,
    net: nn.Module | None = None,
    processes: Processes = SINGLE,
    split_generator: torch.Generator | None = None,
) -> dict:
    """One epoch over ``x`` [N, C, H, W] / ``y`` [N] (CPU tensors, moved to ``device`` batch by batch).

    Per batch: PGD examples when ``config.adv == "pgd"``, TVM on a fraction when
    ``config.tvm_augment > 0``, then one SGD step on the cross-entropy of the model's output rows
    (with a WNLL head in training mode: the batch's query rows; see :func:`batch_loss`). Returns
    ``{"train_loss", "train_acc"}``, averaged over those rows (of every process).

    Several processes: ``net`` is ``model`` wrapped in DistributedDataParallel (``model`` itself
    crafts the PGD examples, per process), ``generator`` is the same on every process, each batch of
    the run's order is shared out (:func:`fastwnll.runtime.distributed.shard_rows`: a contiguous
    slice of it per process, so the global batch is ``stage.batch_size``) and ``split_generator``
    splits WNLL batches (see :func:`batch_loss`).
    """
    net = model if net is None else net
    stage.set_modes(model)
    total_loss = 0.0
    correct = rows = 0
    batches = batch_order(x.shape[0], stage.batch_size, generator)
    bar = tqdm(batches, desc=desc, disable=None if progress else True, leave=False, dynamic_ncols=True)
    for index in bar:
        part = shard_rows(index.shape[0], processes)
        xb, yb = x[index[part]].to(device), y[index[part]].to(device)
        if config.adv == "pgd":
            xb = adversarial_batch(model, xb, yb, config, stage, bank, device, precision)
        if config.tvm_augment > 0:
            xb = tvm_augment(xb, config.tvm_augment, generator, index.shape[0], part.start)
        stage.optimizer.zero_grad(set_to_none=True)
        loss, summed, out, targets = batch_loss(net, xb, yb, device, precision, processes, split_generator, desc)
        stage.scaler.scale(loss).backward()
        stage.scaler.step(stage.optimizer)
        stage.scaler.update()
        total_loss += summed
        correct += int((out.argmax(1) == targets).sum())
        rows += targets.shape[0]
        bar.set_postfix(loss=f"{total_loss / max(rows, 1):.4f}", acc=f"{correct / max(rows, 1):.4f}")
    total_loss, correct, rows = all_sum([total_loss, correct, rows], processes, device)
    return {"train_loss": total_loss / rows, "train_acc": correct / rows}
