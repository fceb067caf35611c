"""The training loop: natural or PGD adversarial training, the paper's two-stage linear/WNLL
schedule with repeatable cycles, TVM augmentation, per-epoch JSON logs, checkpoints that resume
exactly, and a final summary.

Files written to ``config.out``: ``checkpoint.pt`` (atomically, after every epoch; the last one holds
the WNLL template bank used for the final evaluation), ``log.jsonl`` (one JSON object per epoch) and
``summary.json`` (at the end). An earlier run's files are replaced only when asked (``overwrite``).

Under ``torchrun`` (several processes) the run is data parallel (the README's section "Training on
several GPUs or machines"): every process trains its share of each batch through
DistributedDataParallel, evaluates its share of the test batches, and process 0 alone touches the
run directory.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from fastwnll.evaluation.natural import collect_bank, head_accuracies
from fastwnll.nn.network import graph_summary, set_head_mode, uses_wnll, wnll_heads
from fastwnll.runtime import (
    CHECKPOINT_NAME,
    TrainConfig,
    amp_dtype,
    build_model,
    check_fits,
    load_checkpoint,
    load_split,
    load_weights,
    resolve_device,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from fastwnll.runtime.distributed import (
    GRAPHS,
    SINGLE,
    Processes,
    gather_objects,
    main_result,
    process_device,
    process_group,
    sync_buffers,
    wrap_model,
)
from fastwnll.runtime.files import check_outputs

from .steps import AttackBank, Stage, bank_rows, train_epoch

LOG_NAME = "log.jsonl"
SUMMARY_NAME = "summary.json"


def fill_bank(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig, device, processes: Processes = SINGLE
) -> int:
    """Fill the WNLL heads' template bank with the features of a fixed random subset of
    ``config.templates`` training examples (``x`` [N, C, H, W], ``y`` [N], CPU); returns its size.
    Several processes share the work and every one ends with the same bank."""
    rows = bank_rows(y, config)
    return collect_bank(model, x[rows], y[rows], batch_size=config.eval_batch_size, device=device, processes=processes)


def _test(
    model, x_train, y_train, x_test, y_test, config: TrainConfig, device, precision, processes: Processes
) -> dict:
    """Test accuracy of the model in its current head mode (WNLL heads: bank refilled from the
    training set, plus the linear read-out), as ``{"test_acc": ..., ["test_acc_linear": ...]}``."""
    if uses_wnll(model):
        fill_bank(model, x_train, y_train, config, device, processes)
    accuracies = head_accuracies(
        model,
        x_test,
        y_test,
        batch_size=config.eval_batch_size,
        device=device,
        precision=precision,
        processes=processes,
    )
    return {key.replace("accuracy", "test_acc"): value for key, value in accuracies.items()}


def _check_stop(stop_after_epochs) -> None:
    if stop_after_epochs is not None and (
        isinstance(stop_after_epochs, bool) or not isinstance(stop_after_epochs, int) or stop_after_epochs < 1
    ):
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
            text = (
                f"training interrupted after epoch {epoch}/{epochs}; {checkpoint} is complete: continue with "
                f"train(config, resume=True)"
            )
        super().__init__(text)


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    stop_after_epochs: int | None = None,
    progress: bool = True,
    backend: str | None = None,
    graph: str | None = None,
) -> dict:
    """Train as ``config`` says; returns the run's summary (also written to ``summary.json``).

    Launched by ``torchrun`` with several processes (or called by every process of an initialized
    default process group), the run is data parallel: ``config.batch_size`` and
    ``stage2_batch_size`` are the global batches, shared out between the processes; the network is
    wrapped in DistributedDataParallel (SyncBatchNorm on CUDA); PGD examples are crafted by each
    process for its rows; each process evaluates its share of the test batches; process 0 alone writes
    the files. Every process returns the summary.

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
        progress: show a progress bar (on a terminal) and print one line per epoch (process 0 only).
        backend: the process-group backend under torchrun: "auto" (None: nccl on CUDA, gloo on the
            CPU), "nccl" or "gloo"; an error in a single process.
        graph: the WNLL training graph of several processes: "global" (None: the default; one graph
            over the whole batch, the graph of a single process) or "local" (one graph per process's
            rows); an error in a single process. A resumed run keeps its graph.

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
    if graph is not None and graph not in GRAPHS:
        raise ValueError(f"graph must be one of {', '.join(GRAPHS)}, got {graph!r}")
    out = Path(cfg.out)
    checkpoint_path = out / CHECKPOINT_NAME
    if resume and overwrite:
        raise ValueError(
            "resume continues the run in out and overwrite replaces it: pass one of them (--resume or --overwrite)"
        )
    with process_group(resolve_device(cfg.device), backend) as processes:
        if graph is not None and not processes.enabled:
            raise ValueError(
                f"graph={graph!r} (--graph) chooses the WNLL graph of a batch shared out between "
                "processes, but this run is a single process (launch with torchrun --nproc-per-node "
                "N, or drop --graph)"
            )
        payload = main_result(lambda: _prepare(cfg, resume, overwrite), processes)
        graph = _check_processes(payload, processes, graph, checkpoint_path)
        try:
            return _run(cfg, payload, stop_after_epochs, progress, processes, graph)
        except KeyboardInterrupt:
            saved = load_checkpoint(checkpoint_path) if checkpoint_path.exists() else None
            raise TrainingInterrupted(
                out,
                checkpoint_path if saved else None,
                saved["epoch"] if saved else 0,
                len(cfg.stage_plan()),
                bool(saved and saved["finished"]),
            ) from None


def _prepare(cfg: TrainConfig, resume: bool, overwrite: bool) -> dict | None:
    """The run directory made ready (process 0's work): the checkpoint to resume, or None after
    checking (and, with ``overwrite``, removing) an earlier run's files."""
    out = Path(cfg.out)
    checkpoint_path = out / CHECKPOINT_NAME
    if resume:
        payload = load_checkpoint(checkpoint_path)
        if payload["finished"]:
            raise ValueError(f"{checkpoint_path} is a finished run: nothing to resume (see {out / SUMMARY_NAME})")
        changed = cfg.differences(TrainConfig.from_dict(payload["config"]))
        if changed:
            raise ValueError(f"cannot resume {checkpoint_path}: the configuration differs in {changed}")
        return payload
    if checkpoint_path.exists() and not overwrite:
        raise FileExistsError(
            f"{checkpoint_path} already exists: resume it (--resume), start afresh "
            "(overwrite=True, --overwrite) or choose another --out"
        )
    for stale in check_outputs([checkpoint_path, out / LOG_NAME, out / SUMMARY_NAME], overwrite, "the new run"):
        stale.unlink()
    return None


def _check_processes(payload: dict | None, processes: Processes, graph: str | None, checkpoint_path: Path) -> str:
    """The WNLL graph of the run ("local" for one process); for a resumed run, ValueError unless it
    has as many processes and the same graph as the run that wrote ``payload``."""
    saved = (payload or {}).get("distributed", {"world_size": 1, "graph": None})
    if payload is not None and saved["world_size"] != processes.world_size:
        raise ValueError(
            f"cannot resume {checkpoint_path} with {processes.world_size} process(es): it was written "
            f"by a run of {saved['world_size']}, whose random streams are restored process by "
            f"process; resume it with the same number of processes (torchrun --nproc-per-node)"
        )
    if not processes.enabled:
        return "local"
    if payload is not None and graph is not None and graph != saved["graph"]:
        raise ValueError(
            f"cannot resume {checkpoint_path} with graph={graph!r}: it was trained with graph={saved['graph']!r}"
        )
    return graph or saved["graph"] or "global"


def _run(
    cfg: TrainConfig,
    payload: dict | None,
    stop_after_epochs: int | None,
    progress: bool,
    processes: Processes,
    graph: str,
) -> dict:
    """The body of :func:`train` once its files are checked: ``payload`` the checkpoint to resume, or None;
    ``graph`` the WNLL heads' training graph."""
    out = Path(cfg.out)
    checkpoint_path = out / CHECKPOINT_NAME
    device = process_device(resolve_device(cfg.device), processes)
    precision = amp_dtype(device, cfg.amp)
    progress = progress and processes.is_main
    (x_train, y_train), (x_test, y_test) = _load_data(cfg, processes)
    num_classes = int(y_train.max()) + 1
    if int(y_test.max()) >= num_classes:
        raise ValueError(
            f"the test split of {cfg.dataset!r} has label {int(y_test.max())}, absent from the training split"
        )
    _check_shares(cfg, x_train.shape[0], processes, graph)
    # Each process has its own stream for dropout, PGD starts and TVM masks (process 0's is a single
    # process's); the data generator (batch order, TVM rows, global WNLL splits) is the same everywhere.
    torch.manual_seed(cfg.seed + processes.rank)
    generator = torch.Generator().manual_seed(cfg.seed)
    in_channels = int(x_train.shape[1])
    model = build_model(cfg, num_classes, in_channels)
    check_fits(model, x_train, num_classes, cfg)
    if processes.enabled and device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    for head in wnll_heads(model):
        head.graph = graph
    split_generator = generator if graph == "global" else None
    plan = cfg.stage_plan()
    history: list[dict] = []
    start, stage_state = 0, None
    if payload is not None:
        load_weights(model, payload["model"], checkpoint_path)
        set_rng_state(payload["distributed"]["rng"][processes.rank] if processes.enabled else payload["rng"], generator)
        start, history, stage_state = payload["epoch"], payload["history"], payload["stage"]
    if cfg.head == "wnll":  # the banks' sizes are checked now, not after stage 1
        bank_rows(y_train, cfg)
        if cfg.adv == "pgd":
            bank_rows(y_train, cfg, adversarial=True)
    log_path = out / LOG_NAME

    def start_files() -> None:
        out.mkdir(parents=True, exist_ok=True)
        if payload is not None:  # a resumed run's log holds exactly the epochs of its checkpoint
            log_path.write_text("".join(json.dumps(record) + "\n" for record in history))

    # Process 0 writes; the others wait for it, so the files exist (or its error is everyone's) after each write.
    main_result(start_files, processes)

    stage = bank = net = None
    ran = 0
    for epoch in range(start, len(plan)):
        cycle, name, epoch_in_stage = plan[epoch]
        if stage is None or epoch_in_stage == 0:
            net = None  # the previous stage's DistributedDataParallel wrapper goes before the next one comes
            stage = Stage(model, name, cfg, precision)
            if stage_state is not None and epoch_in_stage > 0:
                stage.load_state_dict(stage_state)
            net = wrap_model(model, device, processes)
            bank = (
                AttackBank(model, x_train, y_train, cfg, device, precision)
                if name == "wnll" and cfg.adv == "pgd"
                else None
            )
        stage_state = None
        last = epoch + 1 == len(plan)
        record = {
            "epoch": epoch + 1,
            "cycle": cycle + 1,
            "stage": name,
            "epoch_in_stage": epoch_in_stage + 1,
            "lr": stage.lr,
        }
        started = time.perf_counter()
        record.update(
            train_epoch(
                model,
                stage,
                x_train,
                y_train,
                cfg,
                generator,
                device,
                precision,
                bank,
                f"epoch {epoch + 1}/{len(plan)} ({name})",
                progress,
                net=net,
                processes=processes,
                split_generator=split_generator,
            )
        )
        stage.scheduler.step()
        sync_buffers(model, processes)
        record["train_time_s"] = time.perf_counter() - started
        started = time.perf_counter()
        if last:
            # The final model: all parameters trainable again, WNLL heads in wnll mode (bank refilled).
            for p in model.parameters():
                p.requires_grad_(True)
            set_head_mode(model, "wnll")
            record.update(_test(model, x_train, y_train, x_test, y_test, cfg, device, precision, processes))
        elif cfg.eval_every and (epoch + 1) % cfg.eval_every == 0:
            record.update(_test(model, x_train, y_train, x_test, y_test, cfg, device, precision, processes))
        record["eval_time_s"] = time.perf_counter() - started
        history.append(record)
        states = gather_objects(rng_state(generator), processes)
        checkpoint = {
            "config": cfg.to_dict(),
            "num_classes": num_classes,
            "in_channels": in_channels,
            "epoch": epoch + 1,
            "history": history,
            "model": model.state_dict(),
            "stage": None if last else stage.state_dict(),
            "rng": states[0],
            "finished": last,
        }
        if processes.enabled:
            checkpoint["distributed"] = {
                "world_size": processes.world_size,
                "backend": processes.backend,
                "graph": graph,
                "rng": states,
            }
        main_result(lambda: _write_epoch(checkpoint_path, checkpoint, log_path, record), processes)
        if progress:
            tqdm.write(_epoch_line(record, len(plan)))
            sys.stdout.flush()
        ran += 1
        if stop_after_epochs is not None and ran >= stop_after_epochs and not last:
            for p in model.parameters():
                p.requires_grad_(True)
            return {
                "stopped_after_epoch": epoch + 1,
                "epochs": len(plan),
                "checkpoint": str(checkpoint_path),
                "log": str(log_path),
            }
    return _summary(cfg, num_classes, history, model, device, x_test.shape[0], out, processes, graph)


def _write_epoch(checkpoint_path: Path, checkpoint: dict, log_path: Path, record: dict) -> None:
    """Save an epoch's checkpoint and append its record to the log."""
    save_checkpoint(checkpoint_path, checkpoint)
    with log_path.open("a") as f:
        f.write(json.dumps(record) + "\n")


def _load_data(cfg: TrainConfig, processes: Processes) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """The training and test splits; with ``download`` and several processes, the first process of each
    machine loads (downloads) them before the others read them."""
    first = not (cfg.download and processes.enabled) or processes.local_rank == 0
    splits = (load_split(cfg, "train"), load_split(cfg, "test")) if first else None
    if cfg.download and processes.enabled:
        torch.distributed.barrier()
    return splits or (load_split(cfg, "train"), load_split(cfg, "test"))


def _check_shares(cfg: TrainConfig, n_train: int, processes: Processes, graph: str) -> None:
    """ValueError when a batch shared out between the processes leaves one of them too few rows: none in
    stage 1, or, with one WNLL graph per process (``graph="local"``), not more than ``k`` in stage 2."""
    if not processes.enabled:
        return
    world = processes.world_size
    stages = [("batch_size", cfg.batch_size, 1)] if cfg.epochs else []
    if cfg.head == "wnll" and cfg.stage2_epochs:
        stages.append(("stage2_batch_size", cfg.stage2_batch_size, cfg.k + 1 if graph == "local" else 1))
    for name, size, need in stages:
        rows = min(size, n_train) // world  # the smallest share (a lone short batch is kept whole)
        if rows < need:
            what = "an example" if need == 1 else f"the {need} rows a per-process graph with k={cfg.k} needs"
            raise ValueError(
                f"{name}={size} is the global batch, shared out between {world} processes: "
                f"{rows} row(s) per process leaves some process without {what}; use "
                f"--{name.replace('_', '-')} >= {need * world}" + (" or --graph global" if need > 1 else "")
            )


def _summary(
    cfg: TrainConfig,
    num_classes: int,
    history: list[dict],
    model: nn.Module,
    device,
    test_n: int,
    out: Path,
    processes: Processes,
    graph: str,
) -> dict:
    final = history[-1]
    heads = wnll_heads(model)
    summary = {
        "config": cfg.to_dict(),
        "num_classes": num_classes,
        "device": str(device),
        "epochs": len(history),
        "train_time_s": sum(r["train_time_s"] for r in history),
        "eval_time_s": sum(r["eval_time_s"] for r in history),
        "test_accuracy": final["test_acc"],
        "test_n": int(test_n),
        "templates": heads[0].num_templates if heads else 0,
        "checkpoint": str(out / CHECKPOINT_NAME),
        "log": str(out / LOG_NAME),
        "world_size": processes.world_size,
    }
    if processes.enabled:
        summary.update(backend=processes.backend, graph=graph)
    if "test_acc_linear" in final:
        summary["test_accuracy_linear"] = final["test_acc_linear"]
    if heads:
        summary["wnll_graph"] = graph_summary(model, cfg.eval_batch_size)
    main_result(lambda: (out / SUMMARY_NAME).write_text(json.dumps(summary, indent=2) + "\n"), processes)
    return summary


def _epoch_line(record: dict, total: int) -> str:
    line = (
        f"epoch {record['epoch']}/{total} {record['stage']:<6} lr {record['lr']:.3g} "
        f"loss {record['train_loss']:.4f} acc {record['train_acc']:.4f}"
    )
    if "test_acc" in record:
        line += f" test {record['test_acc']:.4f}"
    if "test_acc_linear" in record:
        line += f" (linear {record['test_acc_linear']:.4f})"
    return line + f" [{record['train_time_s'] + record['eval_time_s']:.1f} s]"
