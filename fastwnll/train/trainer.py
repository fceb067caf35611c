"""The training loop: natural or PGD adversarial training, the paper's two-stage linear/WNLL
schedule with repeatable cycles, TVM augmentation, per-epoch JSON logs, checkpoints that resume
exactly, and a final summary.

Files written to ``config.out``: ``checkpoint.pt`` (atomically, after every epoch; the last one holds
the WNLL template bank used for the final evaluation), ``log.jsonl`` (one JSON object per epoch) and
``summary.json`` (at the end). An earlier run's files are replaced only when asked (``overwrite``).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from fastwnll.nn.head import collect_templates, graph_summary, set_head_mode, uses_wnll, wnll_heads
from fastwnll.runtime import (
    CHECKPOINT_NAME, TrainConfig, amp_dtype, build_model, check_fits, load_checkpoint, load_split, load_weights,
    resolve_device, rng_state, save_checkpoint, set_rng_state,
)
from fastwnll.runtime.files import check_outputs

from .evaluate import head_accuracies
from .steps import AttackBank, Stage, bank_rows, train_epoch

LOG_NAME = "log.jsonl"
SUMMARY_NAME = "summary.json"


def fill_bank(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig, device) -> int:
    """Fill the WNLL heads' template bank with the features of a fixed random subset of
    ``config.templates`` training examples (``x`` [N, C, H, W], ``y`` [N], CPU); returns its size."""
    rows = bank_rows(y, config)
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


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (KeyboardInterrupt) during :func:`train`, raised once the run directory ``out`` is
    known to be consistent: ``checkpoint`` is the last complete checkpoint (verified), after epoch
    ``epoch`` of ``epochs``, or None when the run was interrupted before its first epoch ended (then
    nothing was written and the same call starts it again). ``finished``: the interruption came
    after the last epoch's checkpoint (only ``summary.json`` may be missing)."""

    def __init__(self, out: Path, checkpoint: Path | None, epoch: int, epochs: int, finished: bool):
        self.out, self.checkpoint, self.epoch, self.epochs, self.finished = out, checkpoint, epoch, epochs, finished
        if checkpoint is None:
            text = f"training interrupted before its first epoch ended; nothing to resume in {out}: start it again"
        elif finished:
            text = f"training interrupted after its last epoch; {checkpoint} holds the finished run"
        else:
            text = (f"training interrupted after epoch {epoch}/{epochs}; {checkpoint} is complete: continue with "
                    f"train(config, resume=True)")
        super().__init__(text)


def train(config: TrainConfig, *, resume: bool = False, overwrite: bool = False,
          stop_after_epochs: int | None = None, progress: bool = True) -> dict:
    """Train as ``config`` says; returns the run's summary (also written to ``summary.json``).

    Args:
        config: the run (validated and completed with :meth:`TrainConfig.resolve`).
        resume: continue from ``config.out/checkpoint.pt``; the configuration must match the saved one
            except for ``device`` and ``out``. The continuation is exactly the run that was
            interrupted (bitwise on the same CPU): model, optimizer, schedule, scaler and all RNG
            states are restored.
        overwrite: start afresh in a directory that holds an earlier run's checkpoint, log or
            summary (they are removed first). Without it (and without ``resume``) any of them is a
            FileExistsError.
        stop_after_epochs: return after this many epochs of this call (resume later).
        progress: show a progress bar (on a terminal) and print one line per epoch.

    Returns:
        A dict: the resolved ``config``, ``test_accuracy`` (the model as trained: the WNLL head for
        ``head="wnll"``), ``test_accuracy_linear`` for WNLL models (the same network read through the
        head's linear layer), ``templates``, ``train_time_s``, file paths; or, when stopped early,
        ``{"stopped_after_epoch": e, "epochs", "checkpoint", "log"}``.

    Raises:
        TrainingInterrupted: on Ctrl-C (a KeyboardInterrupt); every checkpoint is written atomically
            at the end of an epoch, so the last one is complete and the run resumes from it.
    """
    cfg = config.resolve()
    _check_stop(stop_after_epochs)
    out = Path(cfg.out)
    checkpoint_path = out / CHECKPOINT_NAME
    payload = None
    if resume and overwrite:
        raise ValueError("resume continues the run in out and overwrite replaces it: pass one of them "
                         "(--resume or --overwrite)")
    if resume:
        payload = load_checkpoint(checkpoint_path)
        if payload["finished"]:
            raise ValueError(f"{checkpoint_path} is a finished run: nothing to resume (see {out / SUMMARY_NAME})")
        changed = cfg.differences(TrainConfig.from_dict(payload["config"]))
        if changed:
            raise ValueError(f"cannot resume {checkpoint_path}: the configuration differs in {changed}")
    else:
        if checkpoint_path.exists() and not overwrite:
            raise FileExistsError(f"{checkpoint_path} already exists: resume it (--resume), start afresh "
                                  "(overwrite=True, --overwrite) or choose another --out")
        for stale in check_outputs([checkpoint_path, out / LOG_NAME, out / SUMMARY_NAME], overwrite,
                                   "the new run"):
            stale.unlink()
    try:
        return _run(cfg, payload, stop_after_epochs, progress)
    except KeyboardInterrupt:
        saved = load_checkpoint(checkpoint_path) if checkpoint_path.exists() else None
        raise TrainingInterrupted(out, checkpoint_path if saved else None, saved["epoch"] if saved else 0,
                                  len(cfg.stage_plan()), bool(saved and saved["finished"])) from None


def _run(cfg: TrainConfig, payload: dict | None, stop_after_epochs: int | None, progress: bool) -> dict:
    """The body of :func:`train` once its files are checked: ``payload`` the checkpoint to resume, or None."""
    out = Path(cfg.out)
    checkpoint_path = out / CHECKPOINT_NAME
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
        load_weights(model, payload["model"], checkpoint_path)
        set_rng_state(payload["rng"], generator)
        start, history, stage_state = payload["epoch"], payload["history"], payload["stage"]
    if cfg.head == "wnll":  # the banks' sizes are checked now, not after stage 1
        bank_rows(y_train, cfg)
        if cfg.adv == "pgd":
            bank_rows(y_train, cfg, adversarial=True)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / LOG_NAME
    if payload is not None:  # a resumed run's log holds exactly the epochs of its checkpoint
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
    if heads:
        summary["graph"] = graph_summary(model, cfg.eval_batch_size)
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
