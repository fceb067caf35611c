"""Masking diagnostics, in the spirit of AutoAttack's checks (Croce and Hein, 2020): warnings that a
robust accuracy is likely overstated because an attack could not work, each naming the likely cause.

Three checks (docs/design.md, section 5.5):

- **zero gradients**: a large share of the examples has an input gradient that is exactly zero
  (a hard decision, a saturated or quantized output): a gradient attack cannot move them. For an
  attack on a stand-in for the WNLL head (``fastwnll.attacks.wnll``) the gradient checked is that of
  the attack's own loss through its stand-in: the images it cannot move are counted and named.
- **randomness without EOT**: the model a gradient attack differentiates changes its predictions
  between two calls on the same images (a randomized defence such as TVM) and the attack averaged
  no EOT samples, so each step follows one random draw.
- **weaker attack**: on the same images and budget, one attack leaves a large share of images
  correctly classified that another attack of the cell fools (for example the exact WNLL gradient
  against the linear surrogate, or a gradient attack against the gradient-free Square).

Each diagnostic is a JSON-serialisable dict with ``check``, ``model``, ``defense``, the attack's
fields and ``message``; :func:`warn` also issues them as :class:`MaskingWarning`.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from fastwnll.attacks import attack_spec, cross_entropy, loss_grad, margin_loss
from fastwnll.attacks.modes import attack_mode
from fastwnll.attacks.wnll import StandIn, head_stand_in

# A check fires when at least this share of the examples has an exactly zero input gradient ...
ZERO_GRADIENT_SHARE = 0.1
# ... or this share (and at least WEAKER_MIN_IMAGES images) survives one attack of a cell and is fooled
# by another one (on the same images).
WEAKER_SHARE = 0.1
WEAKER_MIN_IMAGES = 10


class MaskingWarning(UserWarning):
    """An evaluation result is likely an overstatement (see :mod:`fastwnll.evaluation.diagnostics`)."""


def gradient_checks(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    *,
    gradient: str | None,
    eot: int,
    stand_in: StandIn | None = None,
) -> dict:
    """The first two checks for the model a gradient attack differentiates (``model``, already
    wrapped in BPDA/EOT as the attack sees it) on images ``x`` [N, ...] with labels ``y`` [N], in
    batches of ``batch_size`` rows, with the WNLL heads' ``gradient`` mode (None to leave it).
    With ``stand_in`` (an attack on a stand-in for the WNLL head, ``fastwnll.attacks.wnll.stand_in_for``)
    the gradient is that of the margin loss through the stand-in, as the attack computes it.

    Returns ``{"zero_gradient_share": share of examples whose input gradient (of the cross-entropy, or
    of the stand-in's margin) is exactly zero, "prediction_changes": share of examples whose
    prediction differs between two calls, or None when the attack averages ``eot`` > 1 samples}``.
    """
    zero, changed = 0, 0
    with attack_mode(model, gradient):
        for start in range(0, x.shape[0], batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            if stand_in is None:
                _, grad, _ = loss_grad(model, xb, yb, cross_entropy)
            else:
                with head_stand_in(model, stand_in):
                    _, grad, _ = loss_grad(model, xb, yb, margin_loss)
            zero += int((grad.flatten(1).abs().amax(1) == 0).sum())
            if eot == 1:
                with torch.no_grad():
                    changed += int((model(xb).argmax(1) != model(xb).argmax(1)).sum())
    return {"zero_gradient_share": zero / x.shape[0], "prediction_changes": changed / x.shape[0] if eot == 1 else None}


def _where(row: dict) -> str:
    parts = [row["model"], f"defence {row['defense']}", f"protocol {row['protocol']}"]
    if row.get("gradient"):
        parts.append(f"{row['gradient']} WNLL gradient")
    return ", ".join(parts)


def _label(row: dict, protocol: bool = True) -> str:
    radius = "unbounded" if row["eps"] is None else f"{row['eps']:g}"
    return f"{attack_spec(row['attack']).label} {radius}" + (f" ({row['protocol']})" if protocol else "")


def row_diagnostics(row: dict) -> list[dict]:
    """The zero-gradient and randomness checks of one row of :meth:`Evaluator.evaluate` (empty when the
    row has no checks or they pass)."""
    found = []
    base = {key: row[key] for key in ("model", "defense", "protocol", "gradient", "tvm_attack", "eot")}
    share = row.get("zero_gradient_share")
    stand_in = attack_spec(row["attack"]).wnll
    if share is not None and share >= ZERO_GRADIENT_SHARE:
        if stand_in:
            found.append(
                {
                    "check": "zero-gradients",
                    **base,
                    "attack": row["attack"],
                    "value": share,
                    "message": (
                        f"{_where(row)}: the stand-in of {attack_spec(row['attack']).label} has an exactly zero "
                        f"input gradient for {100 * share:.0f} % of the images ({round(share * row['n'])} of "
                        f"{row['n']}), so that attack cannot move them (likely cause: a hard decision or a "
                        "saturated or quantized layer between the input and the head); trust another attack "
                        "(square) or the worst case"
                    ),
                }
            )
        else:
            cause = (
                "the exact WNLL gradient: a query whose neighbours all carry its class has its other-class "
                "probabilities at the head's floor, and its gradient vanishes"
                if row.get("gradient") == "exact"
                else "a hard decision or a saturated or quantized output"
            )
            found.append(
                {
                    "check": "zero-gradients",
                    **base,
                    "value": share,
                    "message": (
                        f"{_where(row)}: the input gradient is exactly zero for {100 * share:.0f} % of the "
                        f"images, so gradient attacks cannot move them (likely cause: {cause}); trust an attack "
                        "that does not need this gradient (square, the wnll_* attacks) or the worst case"
                    ),
                }
            )
    changes = row.get("prediction_changes")
    if changes:
        found.append(
            {
                "check": "randomness-without-eot",
                **base,
                "value": changes,
                "message": (
                    f"{_where(row)}: the attacked model changed its prediction between two calls on "
                    f"{100 * changes:.0f} % of the images (a randomized defence) but the attack used no EOT, so "
                    "every step follows one random draw; attack with EOT (the adaptive protocol, --eot N)"
                ),
            }
        )
    return found


def _cause(weak: dict, strong: dict) -> str:
    strong_spec = attack_spec(strong["attack"])
    if weak.get("gradient") == "exact":
        return (
            "the exact gradient through the WNLL interpolation vanishes while a query's neighbours agree "
            "(gradient masking by the interpolation itself)"
        )
    if not strong_spec.gradient:
        return f"gradient masking: the gradient-free {strong_spec.label} succeeds where the gradient fails"
    if weak.get("gradient") == "surrogate" and strong_spec.wnll:
        return (
            "the linear-layer surrogate (the published protocol) is not the WNLL head's gradient; the attack "
            f"built against the head ({strong_spec.label}) finds what it misses"
        )
    if weak.get("tvm_attack") == "bpda" and strong.get("tvm_attack") == "ignored":
        return "BPDA through TVM gives a worse gradient than the undefended network's (try more EOT samples)"
    return f"the gradient {attack_spec(weak['attack']).label} follows is less informative here (possible masking)"


def weaker_attacks(cell: list[tuple[dict, torch.Tensor]]) -> list[dict]:
    """The weaker-attack check on the rows of one cell (the same model, defence, norm and radius),
    each with its survival mask [n] (a smaller n is a prefix of a larger one).

    A row is flagged when at least :data:`WEAKER_SHARE` of the images (and at least
    :data:`WEAKER_MIN_IMAGES`) survive it and are fooled by another row of the cell, naming the row
    that fools most of them. Not flagged, by
    design: single-step and gradient-free attacks (weaker than iterative gradient attacks without
    any masking), and an attack that ignores TVM against one that attacks it.
    """
    found = []
    for weak, weak_mask in cell:
        spec = attack_spec(weak["attack"])
        if spec.single_step or not spec.gradient:
            continue
        best, best_share, best_count = None, 0.0, 0
        for strong, strong_mask in cell:
            if strong is weak or (weak.get("tvm_attack") == "ignored" and strong.get("tvm_attack") != "ignored"):
                continue
            n = min(weak_mask.shape[0], strong_mask.shape[0])
            count = int((weak_mask[:n] & ~strong_mask[:n]).sum())
            if count / n > best_share:
                best, best_share, best_count = strong, count / n, count
        if best is not None and best_share >= WEAKER_SHARE and best_count >= WEAKER_MIN_IMAGES:
            message = (
                f"{_where(weak)}: {_label(weak, protocol=False)} is much weaker than {_label(best)} on the "
                f"same images ({100 * weak['robust_accuracy']:.1f} % vs {100 * best['robust_accuracy']:.1f} % "
                f"robust; {100 * best_share:.0f} % of the images survive the first and not the second); "
                f"likely cause: {_cause(weak, best)}"
            )
            found.append(
                {
                    "check": "weaker-attack",
                    "model": weak["model"],
                    "defense": weak["defense"],
                    "protocol": weak["protocol"],
                    "attack": weak["attack"],
                    "eps": weak["eps"],
                    "gradient": weak.get("gradient"),
                    "stronger": f"{best['attack']} ({best['protocol']})",
                    "value": best_share,
                    "message": message,
                }
            )
    return found


def diagnose(entries: list[tuple[dict, torch.Tensor]]) -> list[dict]:
    """Every diagnostic of white-box rows with their survival masks: the per-row checks (each reported
    once per attacked model and gradient path) and the weaker-attack check within each cell."""
    found, seen = [], set()
    for row, _ in entries:
        for diagnostic in row_diagnostics(row):
            # a stand-in's check is its attack's own; the others are the attacked model's
            path = diagnostic.get("attack", row["gradient"])
            key = (diagnostic["check"], row["model"], row["defense"], path, row["tvm_attack"], row["eot"])
            if key not in seen:
                seen.add(key)
                found.append(diagnostic)
    cells: dict[tuple, list] = {}
    for row, mask in entries:
        cells.setdefault((row["model"], row["defense"], row["norm"], row["eps"]), []).append((row, mask))
    for cell in cells.values():
        found += weaker_attacks(cell)
    return found


def warn(diagnostics: list[dict]) -> None:
    """Issue every diagnostic as a :class:`MaskingWarning`."""
    for diagnostic in diagnostics:
        warnings.warn(diagnostic["message"], MaskingWarning, stacklevel=2)
