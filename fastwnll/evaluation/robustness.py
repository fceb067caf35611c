"""Crafting adversarial examples against targets and measuring robust accuracy, with a cache so that
identical attacks (the same model, gradient path and budget) are crafted once in a grid, and the
per-target masking checks (docs/design.md, section 5.5) recorded with every gradient attack."""

from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from fastwnll.attacks import attack_spec, correct_mask, get_attack
from fastwnll.attacks.checks import check_eps, check_inputs
from fastwnll.attacks.wnll import stand_in_for
from fastwnll.nn.network import graph_summary
from fastwnll.runtime.distributed import SINGLE, Processes, batch_seed, gather_batches, shard_batches

from .budgets import attack_kwargs
from .defense import attack_target, check_defense, defended, make_tvm
from .diagnostics import gradient_checks
from .protocol import AttackSetting
from .targets import Target


class Evaluator:
    """Attacks on a fixed test subset ``x`` [N, C, H, W] (float32 in [0, 1]) with labels ``y`` [N] (int64).

    Attacks and evaluations run in batches of ``batch_size`` rows on ``device`` (the targets must be
    there already). For WNLL heads the rows of one batch are interpolated together, so crafting and
    evaluation use the same batches. ``tvm`` holds the TVM settings (see
    :func:`fastwnll.evaluation.defense.make_tvm`); the defender's masks are seeded with ``seed`` and
    the attacker's with ``seed + 1`` (independent streams), and the random starts with ``seed``,
    each batch with its own seed (:func:`fastwnll.runtime.distributed.batch_seed`; the first batch's is
    the seed itself), so every number is reproducible and depends neither on the order of the calls
    nor on which process runs a batch. With several ``processes`` (every one constructs the
    evaluator and makes the same calls) each crafts and evaluates its share of the batches and the
    results are gathered: the numbers of one process.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        dataset: str,
        tvm: dict | None = None,
        seed: int = 0,
        batch_size: int = 500,
        device: torch.device | str = "cpu",
        progress: bool = False,
        processes: Processes = SINGLE,
    ):
        if x.shape[0] != y.shape[0] or x.shape[0] == 0:
            raise ValueError(
                f"x and y must hold the same (non-zero) number of examples, got {x.shape[0]} and {y.shape[0]}"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.device = torch.device(device)
        self.x, self.y = x.to(self.device), y.to(self.device)
        self.dataset = dataset
        self.tvm_settings = dict(tvm or {})
        make_tvm(self.tvm_settings)  # validate now, not in the middle of a grid
        self.seed = seed
        self.batch_size = batch_size
        self.progress = progress and processes.is_main
        self.processes = processes
        self._adversarial: dict[tuple, tuple[torch.Tensor, float]] = {}
        self._clean: dict[tuple, float] = {}
        self._checks: dict[tuple, dict] = {}

    def _subset(self, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        total = self.x.shape[0]
        n = total if n is None else n
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= total:
            raise ValueError(f"n must be an integer in [1, {total}], got {n!r}")
        return self.x[:n], self.y[:n]

    def _defended(self, target: Target, defense: str, batch: int = 0):
        return defended(
            target.model,
            defense,
            make_tvm(self.tvm_settings, seed=batch_seed(self.seed, batch)) if check_defense(defense) == "tvm" else None,
        )

    def _batches(self, n: int) -> list[tuple[int, int, int]]:
        """``(batch index, start, stop)`` of this process's batches of the first ``n`` rows."""
        return shard_batches(n, self.batch_size, self.processes)

    def correct(self, target: Target, x_eval: torch.Tensor, defense: str) -> torch.Tensor:
        """Bool [n]: which rows of ``x_eval`` (matching the first n of ``self.y``) ``target`` behind
        ``defense`` classifies correctly (batches of ``batch_size``; fresh defender TVM masks)."""
        y = self.y[: x_eval.shape[0]]
        check_inputs(self._defended(target, defense), x_eval, y)
        parts = [
            correct_mask(self._defended(target, defense, b), x_eval[start:stop], y[start:stop])
            for b, start, stop in self._batches(x_eval.shape[0])
        ]
        return gather_batches(parts, self.device, self.processes)

    def accuracy(self, target: Target, x_eval: torch.Tensor, defense: str) -> float:
        """Accuracy in [0, 1] of ``target`` behind ``defense`` on ``x_eval`` (rows matching ``self.y``)."""
        return float(self.correct(target, x_eval, defense).float().mean())

    def clean_accuracy(self, target: Target, defense: str, n: int | None = None) -> float:
        """Accuracy on the first ``n`` clean images, behind ``defense`` (cached)."""
        x, _ = self._subset(n)
        key = (target.name, defense, x.shape[0])
        if key not in self._clean:
            self._clean[key] = self.accuracy(target, x, defense)
        return self._clean[key]

    def _attack_model(self, source: Target, setting: AttackSetting, batch: int = 0):
        """What the attacker of ``setting`` runs on batch ``batch``: ``source``'s model, behind the
        attacker's own TVM instance (seeded ``batch_seed(seed + 1, batch)``) when the setting attacks
        TVM (BPDA + EOT, or as deployed)."""
        tvm_attack = None if setting.tvm_attack == "ignored" else setting.tvm_attack
        if tvm_attack is None:
            return source.model
        return attack_target(
            source.model,
            "tvm",
            tvm_attack,
            setting.eot,
            tvm=make_tvm(self.tvm_settings, seed=batch_seed(self.seed + 1, batch)),
        )

    def gradient_checks(
        self, source: Target, setting: AttackSetting, n: int | None = None, stand_in: tuple | None = None
    ) -> dict:
        """The masking checks of the gradient an attack of ``setting`` follows on the first ``n``
        images (cached): see :func:`fastwnll.evaluation.diagnostics.gradient_checks`. ``stand_in``:
        ``(attack, kwargs)`` of an attack on a stand-in for the WNLL head, whose own gradient is
        checked (:func:`fastwnll.attacks.wnll.stand_in_for`)."""
        x, y = self._subset(n)
        tvm_attack = None if setting.tvm_attack == "ignored" else setting.tvm_attack
        scores = None
        if stand_in is not None:
            attack, kwargs = stand_in
            scores = stand_in_for(attack, kwargs)
            stand_in = (attack, tuple(sorted((k, v) for k, v in kwargs.items() if k in ("neighbours", "k", "k_sigma"))))
        key = (source.name, x.shape[0], setting.gradient, tvm_attack, setting.eot, stand_in)
        if key not in self._checks:
            self._checks[key] = gradient_checks(
                self._attack_model(source, setting),
                x,
                y,
                self.batch_size,
                gradient=setting.gradient,
                eot=setting.eot,
                stand_in=scores,
            )
        return self._checks[key]

    def craft(
        self,
        source: Target,
        attack: str,
        eps: float | None,
        setting: AttackSetting,
        *,
        n: int | None = None,
        steps: int | None = None,
        alpha: float | None = None,
        settings: dict | None = None,
    ) -> tuple[torch.Tensor, dict]:
        """Adversarial versions of the first ``n`` images, crafted with white-box access to ``source``
        as ``setting`` says (its gradient mode, and TVM ignored, attacked with BPDA + EOT, or queried
        as deployed by a gradient-free attack; see :meth:`AttackSetting.for_attack`).

        ``settings`` override the attack's own settings (``fastwnll.evaluation.attack_kwargs``).
        Returns ``(x_adv [n, C, H, W], info)``; ``info`` has the budget's description, ``craft_time_s``
        and ``reused`` (True when an identical attack was crafted before). A minimum-norm attack is
        crafted unbounded (``eps`` is applied by :meth:`restrict`); a radius of 0 returns the images.
        """
        eps = check_eps(eps)
        spec = attack_spec(attack)
        if setting.protocol not in spec.protocols:
            raise ValueError(
                f"attack {attack!r} does not run under the {setting.protocol} protocol "
                f"(only {', '.join(spec.protocols)})"
            )
        spec.check_available()
        setting = setting.for_attack(spec)
        kwargs = attack_kwargs(attack, eps, dataset=self.dataset, steps=steps, alpha=alpha, settings=settings)
        x, y = self._subset(n)
        budget = spec.describe(eps, kwargs)
        # An attack that ignores TVM crafts on the bare model: the same examples as without the defence.
        tvm_attack = None if setting.tvm_attack == "ignored" else setting.tvm_attack
        key = (
            source.name,
            attack,
            None if spec.minimum_norm else eps,
            x.shape[0],
            setting.gradient,
            tvm_attack,
            setting.eot,
            tuple(sorted(kwargs.items())),
        )
        if key in self._adversarial:
            x_adv, seconds = self._adversarial[key]
            return x_adv, {"budget": budget, "craft_time_s": seconds, "reused": True}
        started = time.perf_counter()
        if not spec.minimum_norm and eps == 0:
            x_adv = x.clone()
        else:
            if spec.takes_gradient_mode:
                kwargs["gradient"] = setting.gradient
            bar = tqdm(
                self._batches(x.shape[0]),
                desc=f"{source.name} {attack} {eps if eps is not None else ''}".strip(),
                disable=not self.progress,
                leave=False,
                dynamic_ncols=True,
            )
            parts = []
            for b, start, stop in bar:
                model = self._attack_model(source, setting, b)
                if spec.takes_generator:  # reproducible random starts
                    kwargs["generator"] = torch.Generator(device=x.device).manual_seed(batch_seed(self.seed, b))
                parts.append(get_attack(attack, **kwargs)(model, x[start:stop], y[start:stop]))
            x_adv = gather_batches(parts, self.device, self.processes)
        seconds = time.perf_counter() - started
        self._adversarial[key] = (x_adv, seconds)
        return x_adv, {"budget": budget, "craft_time_s": seconds, "reused": False}

    def restrict(self, x_adv: torch.Tensor, attack: str, eps: float | None) -> torch.Tensor:
        """For a minimum-norm attack (such as ``cw_l2``) with a radius ``eps``: keep each adversarial image whose
        distance to its original (in the attack's norm) is at most ``eps`` and put the original back
        otherwise. Identity for the bounded attacks (their budget is enforced while crafting) and for
        ``eps=None``."""
        spec = attack_spec(attack)
        if not spec.minimum_norm or eps is None:
            return x_adv
        x = self.x[: x_adv.shape[0]]
        order = float("inf") if spec.norm == "linf" else 2
        within = (x_adv - x).flatten(1).norm(p=order, dim=1) <= eps
        return torch.where(within.view(-1, *[1] * (x.dim() - 1)), x_adv, x)

    def l2_stats(self, x_adv: torch.Tensor) -> dict:
        """Fraction of changed images and the median L2 distance of the changed ones (None if none)."""
        distance = (x_adv - self.x[: x_adv.shape[0]]).flatten(1).norm(dim=1)
        changed = distance > 0
        median = float(distance[changed].median()) if changed.any() else None
        return {"changed": float(changed.float().mean()), "median_l2": median}

    def evaluate(
        self,
        target: Target,
        attack: str,
        eps: float | None,
        defense: str,
        setting: AttackSetting,
        *,
        source: Target | None = None,
        n: int | None = None,
        steps: int | None = None,
        alpha: float | None = None,
        settings: dict | None = None,
    ) -> dict:
        """One cell of a report: robust accuracy of ``target`` behind ``defense`` against ``attack`` at
        ``eps``, crafted on ``target`` itself (white box) or on ``source`` (transfer, black box), with
        ``settings`` overriding the attack's own (see :meth:`craft`).

        Returns a JSON-serialisable dict: model, head, defense, protocol, attack, norm, eps,
        gradient, tvm_attack, eot, source, n, clean_accuracy, wnll_graph (the target's WNLL evaluation
        graphs, :func:`fastwnll.nn.graph_summary`, or None), robust_accuracy, budget, craft_time_s,
        reused (changed / median_l2 for L2 attacks; zero_gradient_share and prediction_changes, see
        :func:`fastwnll.evaluation.diagnostics.gradient_checks`, for white-box attacks that follow the
        model's gradient or that of their stand-in for the WNLL head). ``setting`` is adjusted to the
        attack (:meth:`AttackSetting.for_attack`) and the row says what ran.
        """
        return self.evaluate_with_mask(
            target, attack, eps, defense, setting, source=source, n=n, steps=steps, alpha=alpha, settings=settings
        )[0]

    def evaluate_with_mask(
        self,
        target: Target,
        attack: str,
        eps: float | None,
        defense: str,
        setting: AttackSetting,
        *,
        source: Target | None = None,
        n: int | None = None,
        steps: int | None = None,
        alpha: float | None = None,
        settings: dict | None = None,
    ) -> tuple[dict, torch.Tensor]:
        """:meth:`evaluate` and the bool mask [n] of the examples that survived the attack."""
        crafter = target if source is None else source
        spec = attack_spec(attack)
        setting = setting.for_attack(spec)
        x_adv, info = self.craft(crafter, attack, eps, setting, n=n, steps=steps, alpha=alpha, settings=settings)
        x_eval = self.restrict(x_adv, attack, eps)
        if source is None and spec.takes_gradient_mode:
            info.update(self.gradient_checks(crafter, setting, x_adv.shape[0]))
        elif source is None and spec.wnll:  # the attack's own gradient, through its stand-in
            kwargs = attack_kwargs(attack, eps, dataset=self.dataset, steps=steps, alpha=alpha, settings=settings)
            info.update(self.gradient_checks(crafter, setting, x_adv.shape[0], stand_in=(attack, kwargs)))
        row = {
            "model": target.name,
            "head": target.head,
            "defense": defense,
            "protocol": setting.protocol if source is None else "transfer",
            "attack": attack,
            "norm": spec.norm,
            "eps": eps,
            "gradient": setting.gradient,
            "tvm_attack": setting.tvm_attack,
            "eot": setting.eot,
            "source": None if source is None else source.name,
            "n": int(x_adv.shape[0]),
            "clean_accuracy": self.clean_accuracy(target, defense, x_adv.shape[0]),
            "wnll_graph": graph_summary(target.model, self.batch_size),
        }
        survived = self.correct(target, x_eval, defense)
        row.update({"robust_accuracy": float(survived.float().mean()), **info})
        if spec.norm == "l2":
            row.update(self.l2_stats(x_eval))
        return row, survived
