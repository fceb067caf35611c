"""Training-step benchmark: a PGD adversarial training epoch of the paper's MNIST CNN with the WNLL
head against one with the linear head, at the same batch size, through the trainer's own epoch
(``fastwnll.train.steps.train_epoch``)."""

from __future__ import annotations

import dataclasses

import torch

from .data import CLASSES, images
from .results import make_row
from .timing import measure_in_turn

MODEL = "mnist_cnn"
IMAGE = (1, 28, 28)
# (batch, training steps per timed epoch). The full batch is the paper's stage-2 graph: 2,000
# templates and 4,000 queries (docs/design.md, section 4.2).
QUICK = (256, 1)
FULL = (6000, 3)
# The timed epochs (see :func:`run`): (row name, head, stage).
EPOCHS = (
    ("linear, stage 1", "linear", "linear"),
    ("linear, stage 2", "wnll", "linear head in stage 2"),
    ("wnll, stage 2", "wnll", "wnll"),
)


def synthetic_digits(rows: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``rows`` uniform random ``[rows, 1, 28, 28]`` images with labels ``i % 10`` (CPU): the shapes of
    MNIST, for timing without the dataset."""
    return images((rows, *IMAGE), seed=seed), torch.arange(rows) % CLASSES


def repeat_rows(x: torch.Tensor, y: torch.Tensor, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``rows`` rows of ``x`` / ``y`` repeated as often as needed to have that many."""
    times = -(-rows // x.shape[0])
    return x.repeat(times, *([1] * (x.dim() - 1)))[:rows], y.repeat(times)[:rows]


def linear_head_stage(model, config, precision):
    """The paper's stage 2 (trunk frozen in eval mode, buffer block trained, PGD examples crafted
    against the attack bank) with the WNLL heads in linear mode: what stage 2 costs with a linear
    head. A :class:`fastwnll.train.steps.Stage` whose ``set_modes`` puts the heads in linear mode."""
    from fastwnll.nn.network import set_head_mode
    from fastwnll.train.steps import Stage

    class LinearHeadStage(Stage):
        def set_modes(self, model):
            super().set_modes(model)
            set_head_mode(model, "linear")

    return LinearHeadStage(model, "wnll", config, precision)


def run(
    device: str | torch.device,
    batch: int,
    steps: int,
    repeats: int,
    env: dict,
    *,
    pgd_steps: int | None = None,
    adv_templates: int = 1000,
    data: tuple[torch.Tensor, torch.Tensor] | None = None,
    data_name: str = "synthetic",
    amp: str = "auto",
    seed: int = 0,
) -> list[dict]:
    """Rows ``PGD epoch`` for the epochs of :data:`EPOCHS`, timed in turn.

    Each timed call is ``train_epoch`` over ``steps`` batches of ``batch`` images (``data``: CPU
    ``(x [N, 1, 28, 28], y [N])`` with at least ``batch`` rows, repeated when fewer than
    ``batch * steps``; default :func:`synthetic_digits`; ``data_name`` says which in the rows), the
    same batches in the same order for every epoch, with PGD examples (the paper's MNIST budget: eps
    0.3, ``pgd_steps`` steps of 0.01, default 40) crafted against the model being trained and one SGD
    step per batch, under ``amp`` (the trainer's default: bfloat16 autocast on CUDA):

    - ``linear, stage 1``: the paper's stage 1 with the linear head, every parameter trained, PGD
      through the linear head;
    - ``linear, stage 2``: the paper's stage 2 (the trunk frozen in eval mode, the buffer block
      trained, the attack bank refreshed before each PGD) with the WNLL head in linear mode
      (:func:`linear_head_stage`); ratio: its time over stage 1's;
    - ``wnll, stage 2``: the paper's stage 2 with the WNLL head (one graph per batch, a third of it
      templates; surrogate gradient), PGD through the WNLL head against a bank of ``adv_templates``
      training images; ratio: its time over ``linear, stage 2``'s, the cost of the head itself.

    Banks are built once per stage before the timing, as the trainer does. Every network starts from
    the same weights (seeded); one untimed round of epochs comes first (an epoch is many calls
    already, so one warm-up round suffices on every device). On the CPU the rows also hold the
    epochs' CPU time (``cpu_ms``) and its ratios (``cpu_ratio``), which a shared machine disturbs
    less than the wall time.
    """
    from fastwnll.runtime import TrainConfig, amp_dtype, build_model
    from fastwnll.train.steps import AttackBank, Stage, train_epoch

    device = torch.device(device)
    config = TrainConfig(
        dataset="mnist10k",
        model=MODEL,
        head="wnll",
        adv="pgd",
        steps=pgd_steps,
        adv_gradient="surrogate",
        wnll_gradient="surrogate",
        adv_templates=adv_templates,
        batch_size=batch,
        stage2_batch_size=batch,
        seed=seed,
        device=device.type,
        amp=amp,
    ).resolve()
    precision = amp_dtype(device, config.amp)
    x, y = data if data is not None else synthetic_digits(max(batch * steps, adv_templates), seed)
    x, y = repeat_rows(x, y, max(batch * steps, adv_templates, x.shape[0]))
    epoch_x, epoch_y = x[: batch * steps], y[: batch * steps]
    calls = []
    for _, head, stage_name in EPOCHS:
        torch.manual_seed(seed)  # the same initial weights for every epoch
        model = build_model(dataclasses.replace(config, head=head, stage2_epochs=None).resolve(), CLASSES, IMAGE[0]).to(
            device
        )
        if stage_name == "linear":
            stage, bank = Stage(model, "linear", config, precision), None
        else:
            stage = (
                Stage(model, "wnll", config, precision)
                if stage_name == "wnll"
                else linear_head_stage(model, config, precision)
            )
            bank = AttackBank(model, x, y, config, device, precision)

        def call(model=model, stage=stage, bank=bank):
            generator = torch.Generator().manual_seed(seed)  # the same batch order every time
            train_epoch(
                model, stage, epoch_x, epoch_y, config, generator, device, precision, bank, "bench", progress=False
            )

        calls.append(call)

    measured = measure_in_turn(calls, repeats, device, warmup=1)
    wall = [w for w, _ in measured]
    dtype = "float32" if precision is None else f"{str(precision).replace('torch.', '')} autocast"
    ratios = (None, ("linear, stage 2 / linear, stage 1", 1, 0), ("WNLL head / linear head, both stage 2", 2, 1))
    rows = []
    for (name, _, _), (seconds, cpu_seconds), ratio in zip(EPOCHS, measured, ratios):
        extra = {"steps": steps, "pgd_steps": config.steps, "ms_per_step": seconds * 1e3 / steps}
        if device.type == "cpu":  # the work of the epoch, whatever other programs took from the machine
            extra.update(cpu_ms=cpu_seconds * 1e3, cpu_ratio=ratio and cpu_seconds / measured[ratio[2]][1])
        rows.append(
            make_row(
                env,
                "training",
                "PGD epoch",
                name,
                batch,
                (batch, *IMAGE),
                dtype,
                seconds,
                repeats,
                ratio=ratio and wall[ratio[1]] / wall[ratio[2]],
                ratio_of=ratio[0] if ratio else "",
                note=f"{MODEL}, {steps} training step(s) of {config.steps} PGD steps, {data_name} images",
                **extra,
            )
        )
    return rows
