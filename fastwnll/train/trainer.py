"""The training loop: natural or PGD adversarial training, the paper's two-stage linear/WNLL
schedule with repeatable cycles, TVM augmentation, per-epoch JSON logs, checkpoints that resume
exactly, and a final summary.

Files written to ``config.out``: ``checkpoint.pt`` (after every epoch; the last one holds the WNLL
template bank used for the final evaluation), ``log.jsonl`` (one JSON object per epoch) and
``summary.json`` (at the end).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from fastwnll.nn.head import collect_templates, set_head_mode, uses_wnll, wnll_heads
from fastwnll.runtime import (
    CHECKPOINT_NAME, TrainConfig, amp_dtype, build_model, check_fits, fixed_subset, load_checkpoint, load_split,
    resolve_device, rng_state, save_checkpoint, set_rng_state,
)

from .evaluate import head_accuracies
from .steps import AttackBank, Stage, train_epoch

LOG_NAME = "log.jsonl"
SUMMARY_NAME = "summary.json"


def fill_bank(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig, device) -> int:
    """Fill the WNLL heads' template bank with the features of a fixed random subset of
    ``config.templates`` training examples (``x`` [N, C, H, W], ``y`` [N], CPU); returns its size."""
    rows = fixed_subset(x.shape[0], config.templates, config.seed)
    return collect_templates(model, (x[rows], y[rows]), batch_size=config.eval_batch_size, device=device)


def _test(model, x_train, y_train, x_test, y_test, config: TrainConfig, device, precision) -> dict:
    """Test accuracy of the model in its current head mode (WNLL heads: bank refilled from the
    training set, plus the linear read-out), as ``{"test_acc": ..., ["test_acc_linear": ...]}``."""
    if uses_wnll(model):
        fill_bank(model, x_train, y_train, config, device)
    accuracies = head_accuracies(model, x_test, y_test, batch_size=config.eval_batch_size, device=device,
                                 precision=precision)
    return {key.replace("accuracy", "test_acc"): value for key, value in accuracies.items()}


def _check_stop(stop_after_epochs) -> None:
    if stop_after_epochs is not None and (isinstance(stop_after_epochs, bool) or not isinstance(stop_after_epochs, int)
                                          or stop_after_epochs < 1):
        raise ValueError(f"stop_after_epochs must be a positive integer, got {stop_after_epochs!r}")


def train(config: TrainConfig, *, resume: bool = False, stop_after_epochs: int | None = None,
          progress: bool = True) -> dict:
    """Train as ``config`` says; returns the run's summary (also written to ``summary.json``).

    Args:
        config: the run (validated and completed with :meth:`TrainConfig.resolve`).
        resume: continue from ``config.out/checkpoint.pt``; the configuration must match the saved one
            except for ``device`` and ``out``. The continuation is exactly the run that was
            interrupted (bitwise on the same CPU): model, optimizer, schedule, scaler and all RNG
            states are restored. Without ``resume`` an existing checkpoint is an error.
        stop_after_epochs: return after this many epochs of this call (resume later).
        progress: show a progress bar (on a terminal) and print one line per epoch.

    Returns:
        A dict: the resolved ``config``, ``test_accuracy`` (the model as trained: the WNLL head for
        ``head="wnll"``), ``test_accuracy_linear`` for WNLL models (the same network read through the
        head's linear layer), ``templates``, ``train_time_s``, file paths; or, when stopped early,
        ``{"stopped_after_epoch": e, "epochs", "checkpoint", "log"}``.
    """
    cfg = config.resolve()
    _check_stop(stop_after_epochs)
    out = Path(cfg.out)
    checkpoint_path = out / CHECKPOINT_NAME
    payload = None
    if resume:
        payload = load_checkpoint(checkpoint_path)
        if payload["finished"]:
            raise ValueError(f"{checkpoint_path} is a finished run: nothing to resume (see {out / SUMMARY_NAME})")
        changed = cfg.differences(TrainConfig.from_dict(payload["config"]))
        if changed:
            raise ValueError(f"cannot resume {checkpoint_path}: the configuration differs in {changed}")
    elif checkpoint_path.exists():
        raise FileExistsError(f"{checkpoint_path} already exists: resume it (--resume) or choose another --out")
    device = resolve_device(cfg.device)
    precision = amp_dtype(device, cfg.amp)
    x_train, y_train = load_split(cfg, "train")
    x_test, y_test = load_split(cfg, "test")
    num_classes = int(y_train.max()) + 1
    if int(y_test.max()) >= num_classes:
        raise ValueError(f"the test split of {cfg.dataset!r} has label {int(y_test.max())}, absent from the training split")
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    in_channels = int(x_train.shape[1])
    model = build_model(cfg, num_classes, in_channels)
    check_fits(model, x_train, num_classes, cfg)
    model = model.to(device)
    plan = cfg.stage_plan()
    history: list[dict] = []
    start, stage_state = 0, None
    if payload is not None:
        model.load_state_dict(payload["model"])
        set_rng_state(payload["rng"], generator)
        start, history, stage_state = payload["epoch"], payload["history"], payload["stage"]
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / LOG_NAME
    log_path.write_text("".join(json.dumps(record) + "\n" for record in history))

    stage = bank = None
    ran = 0
    for epoch in range(start, len(plan)):
        cycle, name, epoch_in_stage = plan[epoch]
        if stage is None or epoch_in_stage == 0:
            stage = Stage(model, name, cfg, precision)
            if stage_state is not None and epoch_in_stage > 0:
                stage.load_state_dict(stage_state)
            bank = AttackBank(model, x_train, y_train, cfg, device, precision) \
                if name == "wnll" and cfg.adv == "pgd" else None
        stage_state = None
        last = epoch + 1 == len(plan)
        record = {"epoch": epoch + 1, "cycle": cycle + 1, "stage": name, "epoch_in_stage": epoch_in_stage + 1,
                  "lr": stage.lr}
        started = time.perf_counter()
        record.update(train_epoch(model, stage, x_train, y_train, cfg, generator, device, precision, bank,
                                  f"epoch {epoch + 1}/{len(plan)} ({name})", progress))
        stage.scheduler.step()
        record["train_time_s"] = time.perf_counter() - started
        started = time.perf_counter()
        if last:
            # The final model: all parameters trainable again, WNLL heads in wnll mode (bank refilled).
            for p in model.parameters():
                p.requires_grad_(True)
            set_head_mode(model, "wnll")
            record.update(_test(model, x_train, y_train, x_test, y_test, cfg, device, precision))
        elif cfg.eval_every and (epoch + 1) % cfg.eval_every == 0:
            record.update(_test(model, x_train, y_train, x_test, y_test, cfg, device, precision))
        record["eval_time_s"] = time.perf_counter() - started
        history.append(record)
        save_checkpoint(checkpoint_path, {
            "config": cfg.to_dict(), "num_classes": num_classes, "in_channels": in_channels, "epoch": epoch + 1, "history": history,
            "model": model.state_dict(), "stage": None if last else stage.state_dict(),
            "rng": rng_state(generator), "finished": last,
        })
        with log_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if progress:
            tqdm.write(_epoch_line(record, len(plan)))
            sys.stdout.flush()
        ran += 1
        if stop_after_epochs is not None and ran >= stop_after_epochs and not last:
            for p in model.parameters():
                p.requires_grad_(True)
            return {"stopped_after_epoch": epoch + 1, "epochs": len(plan), "checkpoint": str(checkpoint_path),
                    "log": str(log_path)}
    return _summary(cfg, num_classes, history, model, device, x_test.shape[0], out)


def _summary(cfg: TrainConfig, num_classes: int, history: list[dict], model: nn.Module, device, test_n: int,
             out: Path) -> dict:
    final = history[-1]
    heads = wnll_heads(model)
    summary = {
        "config": cfg.to_dict(), "num_classes": num_classes, "device": str(device), "epochs": len(history),
        "train_time_s": sum(r["train_time_s"] for r in history),
        "eval_time_s": sum(r["eval_time_s"] for r in history),
        "test_accuracy": final["test_acc"], "test_n": int(test_n),
        "templates": heads[0].num_templates if heads else 0,
        "checkpoint": str(out / CHECKPOINT_NAME), "log": str(out / LOG_NAME),
    }
    if "test_acc_linear" in final:
        summary["test_accuracy_linear"] = final["test_acc_linear"]
    (out / SUMMARY_NAME).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _epoch_line(record: dict, total: int) -> str:
    line = (f"epoch {record['epoch']}/{total} {record['stage']:<6} lr {record['lr']:.3g} "
            f"loss {record['train_loss']:.4f} acc {record['train_acc']:.4f}")
    if "test_acc" in record:
        line += f" test {record['test_acc']:.4f}"
    if "test_acc_linear" in record:
        line += f" (linear {record['test_acc_linear']:.4f})"
    return line + f" [{record['train_time_s'] + record['eval_time_s']:.1f} s]"
