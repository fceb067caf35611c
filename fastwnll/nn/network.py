"""Functions over a whole model that holds WNLL heads: find them (:func:`wnll_heads`), switch their
mode and inference (:func:`set_head_mode`, :func:`head_mode`, :func:`set_inference`), fill their
template banks (:func:`collect_templates`) and describe their evaluation graph (:func:`graph_summary`)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator

import torch
from torch import nn

from fastwnll.knn import ApproximateKNN

from .checks import check_labels, positive_int
from .head import INFERENCE, MODES, WNLLHead
from .modes import eval_mode


def _batches(data, batch_size: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x, y = data
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"collect_templates got {x.shape[0]} inputs but {y.shape[0]} labels")
        for start in range(0, x.shape[0], batch_size):
            yield x[start : start + batch_size], y[start : start + batch_size]
        return
    for item in data:
        if not (isinstance(item, (tuple, list)) and len(item) >= 2):
            raise TypeError("collect_templates expects a loader yielding (inputs, labels) batches or a tuple (x, y)")
        yield item[0], item[1]


def collect_templates(
    model: nn.Module, data, *, max_templates: int | None = None, batch_size: int = 512, device=None
) -> int:
    """Fill the template bank of every :class:`WNLLHead` in ``model`` with training features.

    Runs ``model`` in eval mode under ``no_grad`` (heads temporarily in linear mode) and captures
    each head's input features with a forward pre-hook, so it works for any model containing
    WNLL heads; train/eval flags and head modes are restored afterwards.

    Args:
        model: an ``nn.Module`` with at least one WNLLHead.
        data: a tuple ``(x, y)`` of tensors (batched here by ``batch_size``) or an iterable of
            ``(inputs, labels)`` batches such as a DataLoader; labels int64.
        max_templates: keep the first this many rows (default: all).
        device: where to run the model (default: the device of its first parameter).
    Returns:
        The number of templates now in each head's bank.
    """
    heads = wnll_heads(model)
    if not heads:
        raise ValueError(f"{type(model).__name__} contains no WNLLHead to collect templates for")
    if max_templates is not None:
        positive_int("max_templates", max_templates)
    positive_int("batch_size", batch_size)
    if device is None:
        device = next(model.parameters()).device
    captured: list[list[torch.Tensor]] = [[] for _ in heads]
    labels: list[torch.Tensor] = []

    def hook_for(store):
        def hook(_module, args):
            store.append(args[0].detach())

        return hook

    hooks = [h.register_forward_pre_hook(hook_for(store)) for h, store in zip(heads, captured)]
    count = 0
    try:
        with eval_mode(model), head_mode(model, "linear"), torch.no_grad():
            for x, y in _batches(data, batch_size):
                if max_templates is not None:
                    x, y = x[: max_templates - count], y[: max_templates - count]
                model(x.to(device))
                labels.append(check_labels("labels", y).to(device))
                count += y.shape[0]
                if max_templates is not None and count >= max_templates:
                    break
    finally:
        for hook in hooks:
            hook.remove()
    if count == 0:
        raise ValueError("collect_templates got no data")
    all_labels = torch.cat(labels)
    for h, store in zip(heads, captured):
        features = torch.cat(store)
        if features.shape[0] != count:
            raise RuntimeError(
                f"a WNLLHead received {features.shape[0]} feature rows for {count} labels (is it called more "
                "than once per forward pass?)"
            )
        h.set_templates(features, all_labels)
    return count


def wnll_heads(model: nn.Module) -> list[WNLLHead]:
    """The :class:`WNLLHead` modules inside ``model`` (``model`` itself included), in module order;
    empty for a network without one."""
    return [m for m in model.modules() if isinstance(m, WNLLHead)]


def graph_summary(model: nn.Module, batch_size: int) -> dict | None:
    """How the WNLL heads of ``model`` build their evaluation graphs when a forward gets ``batch_size``
    rows: ``inference``, ``templates`` (per graph: per chunk of the bank), ``template_batches``,
    ``queries_per_graph`` (``batch_size``, at most, transductive; 1 inductive), ``k``, ``k_sigma``,
    ``knn_backend`` (its name, or an approximate backend's spec string with its options) and
    ``exact_knn``: a JSON-serialisable dict for results, so that a number always says which graph
    produced it (a transductive result depends on the batch size). ``None``
    when the model's output is not the interpolation (no WNLL head, or not all in wnll mode); the first
    head's settings when there are several."""
    if not uses_wnll(model):
        return None
    head = wnll_heads(model)[0]
    inductive = head.inference == "inductive"
    backend = head.knn_backend
    return {
        "inference": head.inference,
        "templates": head.num_templates // head.template_batches,
        "template_batches": head.template_batches,
        "queries_per_graph": 1 if inductive else int(batch_size),
        "k": head.k,
        "k_sigma": head.k_sigma,
        "knn_backend": backend.spec() if isinstance(backend, ApproximateKNN) else backend,
        "exact_knn": head.exact_knn,
    }


def uses_wnll(model: nn.Module) -> bool:
    """True when ``model`` has WNLL heads and all of them are in wnll mode (its output is the interpolation)."""
    heads = wnll_heads(model)
    return bool(heads) and all(h.mode == "wnll" for h in heads)


def set_head_mode(model: nn.Module, mode: str) -> None:
    """Put every WNLL head of ``model`` in ``mode`` (one of :data:`MODES`: "wnll" or "linear")."""
    if mode not in MODES:
        raise ValueError(f"WNLLHead.mode must be one of {MODES}, got {mode!r}")
    for head in wnll_heads(model):
        head.mode = mode


def check_inference(inference: str | None) -> str | None:
    """``inference`` for the WNLL heads of an evaluation: ``None`` (each head as it is) or one of
    :data:`INFERENCE`; ValueError otherwise."""
    if inference is not None and inference not in INFERENCE:
        raise ValueError(f"inference must be one of {', '.join(INFERENCE)}, got {inference!r}")
    return inference


def set_inference(model: nn.Module, inference: str | None) -> None:
    """Give every WNLL head of ``model`` ``inference`` (see :func:`check_inference`; ``None`` leaves
    each head as it is)."""
    if check_inference(inference) is not None:
        for head in wnll_heads(model):
            head.inference = inference


@contextmanager
def head_mode(model: nn.Module, mode: str) -> Iterator[nn.Module]:
    """Every WNLL head of ``model`` in ``mode`` inside the block; each head's previous mode is put
    back on exit (also after an exception). A model without WNLL heads is left as it is."""
    previous = [(h, h.mode) for h in wnll_heads(model)]
    set_head_mode(model, mode)
    try:
        yield model
    finally:
        for h, old in previous:
            h.mode = old
