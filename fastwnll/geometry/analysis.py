"""``feature_geometry``: clean and adversarial penultimate features of one or more models, their
geometry numbers (:mod:`fastwnll.geometry.metrics`), a picture and a table."""

from __future__ import annotations

import os
import time

from tqdm.auto import tqdm

from .adversarial import PROTOCOL_CHOICES, adversarial_examples, outcomes
from .features import embed, feature_width, template_bank, wnll_head
from .metrics import geometry_metrics
from .plot import arrow_rows, grid_shape, plot_panels
from .projection import PROJECTIONS, project
from .report import check_output, output_paths, write_outputs
from .upstream import Evaluator, check_same_data, eval_data, load_target, resolve_device

HEADS = ("auto", "linear", "wnll")
# Test images when n is not given (or the whole test split when smaller), as `fastwnll attack`.
DEFAULT_N = 500


def model_spec(entry) -> dict:
    """``{"name", "checkpoint", "head"}`` from a checkpoint path (name = the path, head "auto") or a
    dict with ``checkpoint`` and optional ``name`` and ``head`` (auto, linear or wnll)."""
    if isinstance(entry, (str, os.PathLike)):
        entry = {"checkpoint": os.fspath(entry)}
    if not isinstance(entry, dict) or "checkpoint" not in entry:
        raise TypeError(f"a model is a checkpoint path or a dict with 'checkpoint' (and 'name', 'head'), got {entry!r}")
    unknown = sorted(set(entry) - {"name", "checkpoint", "head"})
    if unknown:
        raise ValueError(f"unknown model fields {unknown}; allowed: checkpoint, name, head")
    checkpoint = os.fspath(entry["checkpoint"])
    head = entry.get("head") or "auto"
    if head not in HEADS:
        raise ValueError(f"head must be one of {', '.join(HEADS)}, got {head!r} (model {checkpoint})")
    return {"name": entry.get("name") or checkpoint, "checkpoint": checkpoint, "head": head}


def _projection_description(projection: str, arrows: int) -> str:
    fitted = (
        "PCA fitted per panel on that model's clean features (its adversarial features mapped by the same projection)"
        if projection == "pca"
        else "t-SNE fitted per panel on that model's clean and adversarial features together (distances not kept)"
    )
    return (
        f"{fitted}; dots = clean, crosses = adversarial, coloured by true class; arrows from clean to "
        f"adversarial for {arrows} sampled images (the same images in every panel)."
    )


def feature_geometry(
    checkpoints,
    *,
    attack: str = "ifgsm",
    eps: float | None = None,
    n: int | None = None,
    out: str | os.PathLike | None = None,
    overwrite: bool = False,
    protocol: str = "worst-case",
    steps: int | None = None,
    alpha: float | None = None,
    restarts: int = 1,
    projection: str = "pca",
    arrows: int = 40,
    columns: int | None = None,
    templates: int | None = None,
    k: int | None = None,
    seed: int = 0,
    batch_size: int = 500,
    device: str = "auto",
    progress: bool = True,
    title: str | None = None,
) -> dict:
    """Feature-space geometry of each model in ``checkpoints`` on the same clean and adversarial test images.

    For every model: the penultimate features (the head's input) of ``n`` test images (a fixed
    subset seeded with ``seed``; default 500 or the whole split if smaller) and of their adversarial
    versions under ``attack`` (fgsm, ifgsm, pgd or cw_l2; ``eps``, ``steps``, ``alpha``, ``restarts``
    as for ``fastwnll attack``) and ``protocol`` ("worst-case", "paper" or "adaptive"; see
    :mod:`fastwnll.geometry.adversarial`), then :func:`fastwnll.geometry.metrics.geometry_metrics`
    with the model's template bank (:func:`fastwnll.geometry.features.template_bank`, ``templates``
    training images when it has none; default the training config's ``templates``) and ``k``
    neighbours (default: the WNLL head's ``k``, else the training config's).

    Args:
        checkpoints: checkpoint paths (files or run directories) or dicts ``{"checkpoint", "name",
            "head"}`` (see :func:`model_spec`); all trained on the same dataset.
        out: when given, write ``geometry.png`` (one panel per model, ``projection`` "pca" or
            "tsne", ``arrows`` displacement arrows, ``columns`` panels per row, default all up to
            4), ``geometry.json`` and ``geometry.md`` there; existing files are an error unless
            ``overwrite``.
        batch_size: rows per attack batch and forward (a WNLL head interpolates a batch's rows together).
        device: "auto", "cpu" or "cuda". progress: show progress bars.
    Returns:
        A JSON-serialisable dict: ``title``, ``attack``, ``eps``, ``attack_description``,
        ``protocol``, ``n``, ``seed``, ``dataset``, ``projection``, ``device``, ``models`` (one dict
        per model: name, checkpoint, head, protocol, attacks, budget, clean_accuracy,
        adversarial_accuracy, feature_width, templates, template_source, k, ``metrics``, time_s),
        ``time_s`` and, when written, ``files``.
    """
    started = time.perf_counter()
    if protocol not in PROTOCOL_CHOICES:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOL_CHOICES)}")
    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {', '.join(PROJECTIONS)}, got {projection!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    for option, value in (("k", k), ("templates", templates)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{option} must be an integer >= 1, got {value!r}")
    if out is not None:
        check_output(out, overwrite)
    grid_shape(1, columns)  # validates columns before the work
    if isinstance(checkpoints, (str, os.PathLike, dict)):
        checkpoints = [checkpoints]
    specs = [model_spec(entry) for entry in checkpoints]
    if not specs:
        raise ValueError("no models given")
    names = [s["name"] for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"model names must be unique, got {names}")
    dev = resolve_device(device)
    targets = [load_target(s["checkpoint"], name=s["name"], head=s["head"], device=dev) for s in specs]
    for target in targets[1:]:
        check_same_data(targets[0], target)
    if n is None:
        n = min(DEFAULT_N, eval_data(targets[0])[1].shape[0])
    x, y = eval_data(targets[0], n, seed)
    evaluator = Evaluator(
        x, y, dataset=targets[0].dataset, seed=seed, batch_size=batch_size, device=dev, progress=progress
    )
    arrow_index = arrow_rows(n, arrows, seed)
    models, panels = [], []
    bar = tqdm(targets, desc="feature geometry", disable=not progress, dynamic_ncols=True)
    for target in bar:
        bar.set_postfix_str(target.name)
        row, panel = _model_geometry(
            target,
            evaluator,
            attack,
            eps,
            protocol,
            steps=steps,
            alpha=alpha,
            restarts=restarts,
            templates=templates,
            k=k,
            projection=projection,
            seed=seed,
        )
        models.append(row)
        panels.append({**panel, "arrows": arrow_index})
    budget = models[0]["budget"]
    result = {
        "title": title or f"Feature-space geometry under {budget}",
        "attack": attack,
        "eps": eps,
        "attack_description": budget,
        "protocol": protocol,
        "n": int(n),
        "seed": seed,
        "dataset": targets[0].dataset,
        "projection": projection,
        "projection_description": _projection_description(projection, int(arrow_index.numel())),
        "device": str(dev),
        "models": models,
        "time_s": time.perf_counter() - started,
    }
    if out is not None:
        result["files"] = {key: str(path) for key, path in output_paths(out).items()}
        write_outputs(result, out)
        plot_panels(
            panels,
            result["files"]["plot"],
            title=result["title"],
            caption=result["projection_description"],
            num_classes=targets[0].num_classes,
            columns=columns,
        )
    return result


def _model_geometry(
    target, evaluator, attack, eps, protocol, *, steps, alpha, restarts, templates, k, projection, seed
) -> tuple[dict, dict]:
    """One model's row of the result and its picture panel (without the arrows)."""
    started = time.perf_counter()
    model, name, batch_size = target.model, target.name, evaluator.batch_size
    width = feature_width(model, name)
    clean_correct, _ = outcomes(model, evaluator.x, evaluator.y, batch_size)
    x_adv, info = adversarial_examples(
        evaluator, target, attack, eps, protocol, steps=steps, alpha=alpha, restarts=restarts
    )
    adv_correct, _ = outcomes(model, x_adv, evaluator.y, batch_size)
    clean = embed(model, evaluator.x, batch_size=batch_size, name=name)
    adversarial = embed(model, x_adv, batch_size=batch_size, name=name)
    bank, bank_labels, source = template_bank(
        target, templates=templates or target.config.templates, batch_size=batch_size
    )
    head = wnll_head(model)
    neighbours = k or (head.k if head is not None else target.config.k)
    labels = evaluator.y.cpu()
    metrics = geometry_metrics(clean, adversarial, labels, bank, bank_labels, neighbours)
    shown = project(clean, adversarial, projection, seed)
    facts = target.describe()
    row = {
        "name": name,
        "checkpoint": target.path,
        "head": target.head,
        "model": facts["model"],
        "adv_training": facts["adv_training"],
        "adv_eps": facts["adv_eps"],
        "protocol": info["protocol"],
        "attacks": info["attacks"],
        **({"chosen": info["chosen"]} if "chosen" in info else {}),
        "clean_accuracy": float(clean_correct.double().mean()),
        "adversarial_accuracy": float(adv_correct.double().mean()),
        "feature_width": width,
        "templates": int(bank.shape[0]),
        "template_source": source,
        "k": neighbours,
        "metrics": metrics,
        "craft_time_s": info["craft_time_s"],
        "time_s": time.perf_counter() - started,
        "budget": info["budget"],
    }
    panel = {
        "title": (
            f"{name} ({target.head} head, {info['protocol']})\n"
            f"s/D {metrics['spread_ratio']:.2f}, displacement/D {metrics['relative_displacement']:.2f}, "
            f"kNN-true adv. {100 * metrics['knn_true_adversarial']:.0f}%"
        ),
        "clean": shown["clean"],
        "adversarial": shown["adversarial"],
        "labels": labels,
        "axes": shown["axes"],
    }
    return row, panel
