"""Natural accuracy of a model or of a saved checkpoint, with either head, in one process or shared out
between the processes of a ``torchrun`` launch (whole batches per process: the same numbers)."""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import nn

from fastwnll.attacks import correct_mask
from fastwnll.nn.network import (
    check_inference,
    collect_templates,
    graph_summary,
    head_mode,
    set_head_mode,
    set_inference,
    uses_wnll,
    wnll_heads,
)
from fastwnll.runtime import (
    TrainConfig,
    amp_dtype,
    autocast,
    check_fits,
    load_model,
    load_split,
    resolve_device,
    template_rows,
)
from fastwnll.runtime.distributed import (
    SINGLE,
    Processes,
    gather_batches,
    process_device,
    process_group,
    shard_batches,
)


def accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int = 500,
    device: torch.device | None = None,
    precision: torch.dtype | None = None,
    processes: Processes = SINGLE,
) -> float:
    """Fraction of ``x`` (CPU or device tensors, any count) classified as ``y``, in eval mode, batch by
    batch on ``device`` (default: the model's), under autocast with ``precision`` (None: off).

    WNLL heads interpolate each batch against their template bank; with transductive inference (the
    default) the batch size matters a little for them (the queries of a batch share one graph:
    docs/design.md, section 2.5). The model's train/eval flags are restored.
    With several ``processes`` (every one must call this with the same arguments) each runs its
    share of the batches and the results are gathered: the same accuracy as one process.
    """
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(
            f"accuracy needs as many labels as inputs (and at least one), got {x.shape[0]} and {y.shape[0]}"
        )
    device = device or next(model.parameters()).device
    with autocast(device, precision):
        parts = [
            correct_mask(model, x[start:stop], y[start:stop], device=device)
            for _, start, stop in shard_batches(x.shape[0], batch_size, processes)
        ]
    return int(gather_batches(parts, device, processes).sum()) / x.shape[0]


def collect_bank(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int,
    device: torch.device,
    processes: Processes = SINGLE,
) -> int:
    """Fill the template bank of every WNLL head of ``model`` with the features of ``x`` [N, C, H, W]
    (labels ``y`` [N] int64), ``batch_size`` rows per forward on ``device``
    (:func:`fastwnll.nn.network.collect_templates`). With several ``processes`` each computes the features
    of its share of the batches and every process receives all of them: the bank of one process.
    Returns N."""
    heads = wnll_heads(model)
    parts = []
    for _, start, stop in shard_batches(x.shape[0], batch_size, processes):
        collect_templates(model, (x[start:stop], y[start:stop]), batch_size=batch_size, device=device)
        parts.append(torch.cat([h.template_features for h in heads], dim=1))
    features = gather_batches(parts, device, processes)
    for head, block in zip(heads, features.split([h.in_features for h in heads], dim=1)):
        head.set_templates(block, y)
    return x.shape[0]


def head_accuracies(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kwargs) -> dict:
    """``{"accuracy": ...}`` for the model as it is; for a model with WNLL heads (in wnll mode, bank
    filled) also ``"accuracy_linear"``, the same network read through the heads' linear layers
    (``kwargs`` as for :func:`accuracy`)."""
    result = {"accuracy": accuracy(model, x, y, **kwargs)}
    if uses_wnll(model):
        with head_mode(model, "linear"):
            result["accuracy_linear"] = accuracy(model, x, y, **kwargs)
    return result


EVAL_HEADS = ("linear", "wnll", "both")


def with_wnll_head(model: nn.Module, config: TrainConfig) -> nn.Module:
    """``model`` itself when it has WNLL heads; otherwise a copy whose linear head ``model.head``
    is replaced by a :class:`WNLLHead` (graph options from ``config``) starting from its weights
    (``fastwnll.models.attach_head``), so a network trained with a linear head can also be read
    through the WNLL interpolation of its features. The copy's template bank is empty."""
    from fastwnll.models import attach_head

    if wnll_heads(model):
        return model
    return attach_head(
        copy.deepcopy(model),
        "head",
        "wnll",
        k=config.k,
        k_sigma=config.k_sigma,
        template_fraction=config.template_fraction,
        template_batches=config.template_batches,
        knn_backend=config.knn_backend,
    )


def evaluate_checkpoint(
    checkpoint,
    *,
    dataset: str | None = None,
    data_dir: str | None = None,
    split: str = "test",
    head: str | None = None,
    templates: int | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    backend: str | None = None,
    inference: str | None = None,
) -> dict:
    """Natural accuracy of a training checkpoint, read through its linear head, its WNLL head, or both.

    Args:
        checkpoint: a ``checkpoint.pt`` path or a run directory.
        dataset, data_dir: the data to evaluate on (default: the training dataset and directory).
        split: "test" or "train".
        head: "linear", "wnll" or "both"; default the checkpoint's own head ("both" for a WNLL
            model). A linear-head network is read through WNLL by replacing its head (see
            :func:`with_wnll_head`), which needs ``templates``.
        templates: (re)build the WNLL template bank from this many examples of the dataset's
            training split (a fixed random subset, as at the end of training); default: the bank
            saved in the checkpoint.
        device: "auto", "cpu" or "cuda". batch_size: queries per forward (default from the config).
        inference: ``"transductive"`` or ``"inductive"`` for the WNLL heads (see
            :class:`fastwnll.nn.WNLLHead`; default: as saved, transductive).
        backend: under ``torchrun``, the process-group backend ("auto", "nccl", "gloo"; see
            :func:`fastwnll.runtime.distributed.process_group`). Launched with several processes, every
            process evaluates its share of the batches (and of the template bank) and returns the
            result, equal to a single process's.

    Returns:
        A JSON-serialisable dict: checkpoint, dataset, split, n, model, trained_head,
        ``accuracy`` (``{"linear": ..., "wnll": ...}`` for the heads evaluated) and, when WNLL was
        evaluated, ``templates`` (the bank size) and ``wnll_graph`` (how the evaluation graphs were built:
        :func:`fastwnll.nn.graph_summary`; transductive scores depend on ``batch_size``).
    """
    if head is not None and head not in EVAL_HEADS:
        raise ValueError(f"head must be one of {EVAL_HEADS}, got {head!r}")
    if templates is not None and (isinstance(templates, bool) or not isinstance(templates, int) or templates < 1):
        raise ValueError(f"templates must be a positive integer, got {templates!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    check_inference(inference)
    with process_group(resolve_device(device), backend) as processes:
        return _evaluate(
            checkpoint,
            dataset,
            data_dir,
            split,
            head,
            templates,
            process_device(resolve_device(device), processes),
            batch_size,
            processes,
            inference,
        )


def _evaluate(
    checkpoint,
    dataset: str | None,
    data_dir: str | None,
    split: str,
    head: str | None,
    templates: int | None,
    dev: torch.device,
    batch_size: int | None,
    processes: Processes,
    inference: str | None,
) -> dict:
    """The body of :func:`evaluate_checkpoint` on the device ``dev`` of this process."""
    model, config, payload = load_model(checkpoint, dev)
    head = head or ("both" if config.head == "wnll" else "linear")
    data_config = dataclasses.replace(
        config, dataset=dataset or config.dataset, data_dir=data_dir if dataset or data_dir else config.data_dir
    )
    x, y = load_split(data_config, split)
    num_classes = payload["num_classes"]
    if int(y.max()) >= num_classes:
        raise ValueError(
            f"{data_config.dataset} has labels up to {int(y.max())} but the model has {num_classes} classes"
        )
    check_fits(model.cpu(), x, num_classes, data_config)
    model = model.to(dev)
    precision = amp_dtype(dev, "off" if config.amp == "off" else "auto")
    batch_size = batch_size or config.eval_batch_size
    result = {
        "checkpoint": str(checkpoint),
        "dataset": data_config.dataset,
        "split": split,
        "n": int(x.shape[0]),
        "model": config.model,
        "trained_head": config.head,
        "accuracy": {},
    }
    if head in ("linear", "both"):
        set_head_mode(model, "linear")
        result["accuracy"]["linear"] = accuracy(
            model, x, y, batch_size=batch_size, device=dev, precision=precision, processes=processes
        )
    if head in ("wnll", "both"):
        wnll_model = with_wnll_head(model, config).to(dev)
        set_head_mode(wnll_model, "wnll")
        set_inference(wnll_model, inference)
        if templates is not None:
            x_bank, y_bank = load_split(data_config, "train")
            rows = template_rows(y_bank, templates, templates, config.seed, num_classes)
            collect_bank(wnll_model, x_bank[rows], y_bank[rows], batch_size=batch_size, device=dev, processes=processes)
        elif not all(h.num_templates for h in wnll_heads(wnll_model)):
            what = (
                "this checkpoint has no WNLL template bank"
                if config.head == "wnll"
                else "a linear-head checkpoint has no WNLL template bank"
            )
            raise RuntimeError(f"{what}: pass templates=N (--templates N) to build one from N training examples")
        result["accuracy"]["wnll"] = accuracy(
            wnll_model, x, y, batch_size=batch_size, device=dev, precision=precision, processes=processes
        )
        result["templates"] = wnll_heads(wnll_model)[0].num_templates
        result["wnll_graph"] = graph_summary(wnll_model, batch_size)
    return result
