"""``fastwnll demo``: linear vs WNLL head on scikit-learn's digits, trained with PGD, attacked with IFGSM.

One run of :func:`fastwnll.train.train` on the digits CNN with a WNLL head gives both networks, as
in the paper's comparison: stage 1 (the whole network, PGD adversarial training through the linear
head) ends with the **linear-head** network, saved as ``linear.pt``; stage 2 (the buffer block
trained with the WNLL head, PGD examples crafted through it) turns a copy into the **WNLL-head**
network. Each is then evaluated on the 359 test digits: natural accuracy, and accuracy under IFGSM
(the paper's attack: sign steps from the image, no random start) crafted with the linear-surrogate
gradient (the paper's protocol) and, for the WNLL model, with the exact gradient through the
interpolation.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from fastwnll.runtime import TrainConfig

DEMO_DEFAULTS = {"epochs": 8, "stage2_epochs": 2, "eps": 0.1, "steps": 3, "attack_steps": 10}
# Digits are small (1,438 training images of 8x8): small batches train faster per epoch; stage 2
# builds one graph per batch, so it takes bigger ones.
DEMO_BATCH_SIZE, DEMO_STAGE2_BATCH_SIZE = 64, 256


def _step_size(eps: float, steps: int) -> float:
    """Madry et al.'s rule: steps of 2.5 * eps / steps, enough to cross the ball and come back."""
    return 2.5 * eps / steps


def _evaluate(checkpoint: Path, head: str, eps: float, attack_steps: int, exact: bool, device: str) -> dict:
    """Natural and IFGSM accuracy of the network in ``checkpoint`` read through ``head``."""
    from fastwnll.attacks import ifgsm, robust_accuracy
    from fastwnll.nn.network import set_head_mode
    from fastwnll.runtime import load_model, load_split, resolve_device

    dev = resolve_device(device)
    model, config, _ = load_model(checkpoint, dev)
    set_head_mode(model, head)
    x, y = load_split(config, "test")
    x, y = x.to(dev), y.to(dev)
    alpha = _step_size(eps, attack_steps)
    # One batch: a WNLL model's test queries share one graph with the templates, in the attack and in
    # the accuracy alike. The linear read-out of a WNLL-head network has no surrogate to choose.
    gradient = "surrogate" if head == "wnll" else None
    row = {
        "natural": robust_accuracy(model, x, y),
        "ifgsm": robust_accuracy(model, ifgsm(model, x, y, eps, alpha, attack_steps, gradient=gradient), y),
        "n": int(x.shape[0]),
    }
    if head == "wnll" and exact:
        row["ifgsm_exact"] = robust_accuracy(model, ifgsm(model, x, y, eps, alpha, attack_steps, gradient="exact"), y)
    return row


def run_demo(
    *,
    epochs: int = DEMO_DEFAULTS["epochs"],
    stage2_epochs: int = DEMO_DEFAULTS["stage2_epochs"],
    eps: float = DEMO_DEFAULTS["eps"],
    steps: int = DEMO_DEFAULTS["steps"],
    attack_steps: int = DEMO_DEFAULTS["attack_steps"],
    exact: bool = True,
    seed: int = 0,
    device: str = "auto",
    out: str | None = None,
    progress: bool = True,
) -> list[dict]:
    """Train the digits CNN and compare its linear and WNLL heads (see the module docstring).

    Args:
        epochs: stage-1 epochs; stage2_epochs: stage-2 epochs (>= 1).
        eps: L_inf budget of PGD training and of the IFGSM attack (pixels in [0, 1]).
        steps: PGD steps in training; attack_steps: IFGSM steps. Both use steps of 2.5 * eps / steps.
        exact: also attack the WNLL model with the exact gradient through the interpolation.
        out: directory that keeps the run (``linear.pt``, ``wnll/``); default a temporary one.
    Returns:
        One dict per network, linear head first: ``model`` (a label), ``natural``, ``ifgsm``
        (surrogate gradient for WNLL), with ``exact`` also ``ifgsm_exact`` for WNLL (fractions of
        the ``n`` test digits classified correctly), and ``time_s`` (its training and attacks).
    """
    from .trainer import train

    if isinstance(stage2_epochs, bool) or not isinstance(stage2_epochs, int) or stage2_epochs < 1:
        raise ValueError(f"the demo needs stage2_epochs >= 1 (the WNLL head's stage), got {stage2_epochs!r}")
    if out is not None and Path(out).exists() and any(Path(out).iterdir()):
        raise FileExistsError(f"{out} exists and is not empty: choose another --out")
    with tempfile.TemporaryDirectory(prefix="fastwnll-demo-") as scratch:
        root = Path(out) if out is not None else Path(scratch)
        config = TrainConfig(
            dataset="digits",
            model="digits_cnn",
            head="wnll",
            epochs=epochs,
            stage2_epochs=stage2_epochs,
            adv="pgd",
            eps=eps,
            alpha=_step_size(eps, steps),
            steps=steps,
            batch_size=DEMO_BATCH_SIZE,
            stage2_batch_size=DEMO_STAGE2_BATCH_SIZE,
            eval_every=0,
            seed=seed,
            device=device,
            out=str(root / "wnll"),
        )
        if progress:
            print(f"== stage 1: the digits CNN with its linear head, PGD training (eps {eps}, {steps} steps)")
        started = time.perf_counter()
        stage1 = train(config, stop_after_epochs=epochs, progress=progress)
        linear_checkpoint = root / "linear.pt"
        shutil.copyfile(stage1["checkpoint"], linear_checkpoint)
        linear = {"model": "linear head", **_evaluate(linear_checkpoint, "linear", eps, attack_steps, False, device)}
        linear["time_s"] = time.perf_counter() - started
        if progress:
            print("== stage 2: the buffer block with the WNLL head, PGD examples crafted through it")
        started = time.perf_counter()
        summary = train(config, resume=True, progress=progress)
        wnll = {
            "model": "WNLL head",
            **_evaluate(Path(summary["checkpoint"]), "wnll", eps, attack_steps, exact, device),
        }
        wnll["time_s"] = time.perf_counter() - started
    return [linear, wnll]


def format_table(rows: list[dict], *, eps: float, attack_steps: int) -> str:
    """The demo's results (``run_demo``'s rows) as a small fixed-width text table, accuracies in percent."""

    def cell(row, key):
        return f"{100 * row[key]:.1f}%" if key in row else "-"

    lines = [
        "",
        f"digits test set, {rows[0]['n']} images: accuracy, natural and under IFGSM "
        f"(eps {eps:g}, {attack_steps} steps)",
        f"{'':<12} {'natural':>8} {'IFGSM':>9} {'IFGSM':>9}   time",
        f"{'':<12} {'':>8} {'surrogate':>9} {'exact':>9}",
    ]
    for row in rows:
        lines.append(
            f"{row['model']:<12} {cell(row, 'natural'):>8} {cell(row, 'ifgsm'):>9} "
            f"{cell(row, 'ifgsm_exact'):>9}   {row['time_s']:.0f} s"
        )
    lines += [
        "",
        "Both networks share stage 1 (PGD training with the linear head); the WNLL head adds stage 2.",
        "IFGSM as in the paper: sign steps from the image, no random start. For the WNLL head, 'surrogate'",
        "takes the gradient through the linear layer (the paper's protocol), 'exact' through the WNLL",
        "interpolation itself.",
        "",
    ]
    return "\n".join(lines)
