"""The report grid: models x defences x protocols x attacks x eps, plus transfer attacks, the
worst case over the attacks of each cell, and the masking diagnostics.

A grid is described by :class:`GridConfig` (a JSON file for ``fastwnll report --config``); see
:func:`run_grid`. Example::

    {"models": [{"name": "wnll-pgd", "checkpoint": "runs/wnll_pgd"},
                {"name": "linear-pgd", "checkpoint": "runs/wnll_pgd_stage1", "head": "linear"}],
     "defenses": ["none", "tvm"], "attacks": ["fgsm", "ifgsm", "wnll_margin", "wnll_smooth", "square", "cw_l2"],
     "eps": [0.1, 0.2, 0.3], "cw_eps": [1.0, 2.0, null], "protocols": ["paper", "adaptive"], "n": 500,
     "cw_n": 100, "eot": 8, "attack_settings": {"square": {"n_queries": 1000}}, "attack_n": {"square": 200},
     "transfer": [{"source": {"name": "oracle", "checkpoint": "runs/oracle"}, "attacks": ["ifgsm"], "eps": [0.3]}]}
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from fastwnll.attacks import attack_spec
from fastwnll.attacks.checks import check_eps
from fastwnll.nn.network import check_inference, uses_wnll
from fastwnll.runtime import resolve_device

from .defense import check_defense
from .diagnostics import diagnose, warn
from .protocol import DEFAULT_EOT, PROTOCOLS, resolve
from .robustness import Evaluator
from .targets import HEADS, Target, check_same_data, eval_data, load_target

CELL_KEYS = ("model", "defense", "protocol", "attack", "eps")
# The pseudo-attack of the worst case over every white-box attack of a cell, per norm.
WORST = {"linf": "worst-linf", "l2": "worst-l2"}


@dataclass
class GridConfig:
    """Everything a report runs. ``models``: list of ``{"name", "checkpoint", "head"?}`` (head as in
    :func:`load_target`); ``attacks``: names of the registry ``fastwnll.attacks.ATTACKS``, each run
    under the grid's ``protocols`` that it declares (the attacks designed against a WNLL head only
    under the adaptive one, and only on models read through a WNLL head); ``eps``: radii of its
    L_inf attacks; ``cw_eps``: radii of its L2 attacks (``None`` = unbounded, for the minimum-norm
    ones such as cw_l2); ``n``: test images (a fixed seeded subset), ``cw_n`` of them (the first)
    for the L2 attacks; ``attack_n``: ``{attack: images}`` for attacks run on fewer (the first)
    images; ``steps``/``alpha``: overrides of the iterative attacks' budget (default: the paper's
    for the dataset); ``attack_settings``: ``{attack: {setting: value}}`` overriding the registry's
    settings (``cw``: CW-L2's, kept for older configurations); ``eot``: EOT samples of the adaptive
    attack on TVM; ``tvm``: TVM settings; ``transfer``: list of ``{"source": name of a model above
    or {"name", "checkpoint", "head"?}, "attacks": [...], "eps": [...]}`` crafted on the source
    (paper protocol, no defence) and evaluated on every other model behind every defence.
    ``worst_case`` adds, per cell (model, defence, norm, radius) with more than one white-box run,
    a "worst-case" row per attack (survived the attack under every protocol it ran) and one for
    the pseudo-attack :data:`WORST` (survived every white-box attack of the cell, on the first n
    images all of them attacked). ``exclude``: cells to skip, each a dict over ``model``,
    ``defense``, ``protocol``, ``attack``, ``eps`` (a value or a list of values); a cell matching
    every key of one entry is skipped, e.g. ``{"defense": "tvm", "protocol": "adaptive", "eps": [0.1, 0.2]}``."""

    models: list[dict] = field(default_factory=list)
    defenses: list[str] = field(default_factory=lambda: ["none", "tvm"])
    attacks: list[str] = field(default_factory=lambda: ["fgsm", "ifgsm", "cw_l2"])
    eps: list[float] = field(default_factory=list)
    cw_eps: list[float | None] = field(default_factory=lambda: [None])
    protocols: list[str] = field(default_factory=lambda: list(PROTOCOLS))
    n: int = 500
    cw_n: int | None = None
    steps: int | None = None
    alpha: float | None = None
    cw: dict = field(default_factory=dict)
    attack_settings: dict = field(default_factory=dict)
    attack_n: dict = field(default_factory=dict)
    eot: int = DEFAULT_EOT
    tvm: dict = field(default_factory=dict)
    transfer: list[dict] = field(default_factory=list)
    seed: int = 0
    batch_size: int = 500
    device: str = "auto"
    worst_case: bool = True
    exclude: list[dict] = field(default_factory=list)
    title: str | None = None

    @classmethod
    def from_dict(cls, values: dict) -> "GridConfig":
        if not isinstance(values, dict):
            raise ValueError(f"a grid configuration must be a JSON object, got {type(values).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown grid configuration fields {unknown}; allowed: {sorted(names)}")
        return cls(**values).validate()

    @classmethod
    def from_file(cls, path: str | Path) -> "GridConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"grid configuration not found: {path}")
        try:
            values = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from None
        return cls.from_dict(values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> "GridConfig":
        """Check every field; returns self. Raises ValueError naming the problem."""
        if not self.models:
            raise ValueError("the grid needs at least one model ({'name': ..., 'checkpoint': ...})")
        names = [_model_entry(m)["name"] for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique, got {names}")
        for d in self.defenses:
            check_defense(d)
        for a in self.attacks:
            attack_spec(a).check_available()
        for p in self.protocols:
            if p not in PROTOCOLS:
                raise ValueError(f"unknown protocol {p!r}; choose one of {', '.join(PROTOCOLS)}")
        for e in self.eps:
            check_eps(e)
        for e in self.cw_eps:
            check_eps(e, "cw_eps")
        if any(_norm(a) == "linf" for a in self.attacks) and not self.eps:
            raise ValueError("the grid has L_inf attacks but no eps values")
        if any(_norm(a) == "l2" for a in self.attacks) and not self.cw_eps:
            raise ValueError("cw_eps must hold at least one L2 radius (or null for unbounded)")
        for a in self.attacks:
            spec = attack_spec(a)
            if not set(spec.protocols) & set(self.protocols):
                raise ValueError(
                    f"attack {a!r} does not run under the {' or '.join(self.protocols)} protocol "
                    f"(only {', '.join(spec.protocols)})"
                )
            if spec.norm == "l2" and not spec.minimum_norm and all(e is None for e in self.cw_eps):
                raise ValueError(f"attack {a!r} is bounded while crafting: cw_eps needs an L2 radius, not only null")
        self._validate_per_attack()
        for name in ("n", "batch_size", "eot"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.cw_n is not None and (
            isinstance(self.cw_n, bool) or not isinstance(self.cw_n, int) or not 1 <= self.cw_n <= self.n
        ):
            raise ValueError(f"cw_n must be an integer in [1, n={self.n}], got {self.cw_n!r}")
        for pattern in self.exclude:
            if not isinstance(pattern, dict) or not pattern:
                raise ValueError(f"each exclude entry must be a non-empty object, got {pattern!r}")
            unknown = sorted(set(pattern) - set(CELL_KEYS))
            if unknown:
                raise ValueError(f"unknown exclude keys {unknown}; allowed: {', '.join(CELL_KEYS)}")
        for spec in self.transfer:
            if not isinstance(spec, dict) or "source" not in spec:
                raise ValueError(f"each transfer entry needs a 'source', got {spec!r}")
            unknown = sorted(set(spec) - {"source", "attacks", "eps"})
            if unknown:
                raise ValueError(f"unknown transfer fields {unknown}; allowed: source, attacks, eps")
            for a in spec.get("attacks", ["ifgsm"]):
                attack_spec(a)
            for e in spec.get("eps", self.eps[-1:]):
                check_eps(e)
        return self

    def _validate_per_attack(self) -> None:
        for name, values in (("attack_settings", self.attack_settings), ("attack_n", self.attack_n)):
            if not isinstance(values, dict):
                raise ValueError(f"{name} must map attack names to values, got {values!r}")
            for attack in values:
                if attack not in self.attacks:
                    raise ValueError(f"{name} names {attack!r}, which is not one of the grid's attacks {self.attacks}")
        for attack, settings in self.attack_settings.items():
            spec = attack_spec(attack)
            unknown = sorted(set(settings) - set(spec.settings)) if isinstance(settings, dict) else None
            if unknown is None or unknown:
                raise ValueError(
                    f"attack_settings[{attack!r}] must be an object of {spec.label} settings "
                    f"{sorted(spec.settings)}, got {settings!r}"
                )
        for attack, n in self.attack_n.items():
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= self.n:
                raise ValueError(f"attack_n[{attack!r}] must be an integer in [1, n={self.n}], got {n!r}")

    def settings_of(self, attack: str) -> dict:
        """The setting overrides of ``attack``: ``attack_settings[attack]``, for cw_l2 over ``cw``."""
        return {**(self.cw if attack == "cw_l2" else {}), **self.attack_settings.get(attack, {})}

    def n_of(self, attack: str) -> int | None:
        """The images ``attack`` runs on: ``attack_n[attack]``, else ``cw_n`` for L2 attacks, else ``n``."""
        if attack in self.attack_n:
            return self.attack_n[attack]
        return self.cw_n if _norm(attack) == "l2" and self.cw_n is not None else self.n


def _norm(attack: str) -> str:
    """The norm of ``attack``'s radius: the L_inf ones take ``eps``, the L2 ones ``cw_eps`` (and ``cw_n``)."""
    return attack_spec(attack).norm


def _model_entry(entry) -> dict:
    if not isinstance(entry, dict) or "checkpoint" not in entry:
        raise ValueError(f"a model entry needs a 'checkpoint' (and a 'name'), got {entry!r}")
    unknown = sorted(set(entry) - {"name", "checkpoint", "head", "inference"})
    if unknown:
        raise ValueError(f"unknown model entry fields {unknown}; allowed: name, checkpoint, head, inference")
    head = entry.get("head", "auto")
    if head not in HEADS:
        raise ValueError(f"head must be one of {', '.join(HEADS)}, got {head!r}")
    inference = check_inference(entry.get("inference"))
    return {
        "name": str(entry.get("name", entry["checkpoint"])),
        "checkpoint": entry["checkpoint"],
        "head": head,
        **({} if inference is None else {"inference": inference}),
    }


def _load(entry, device) -> Target:
    entry = _model_entry(entry)
    return load_target(
        entry["checkpoint"], name=entry["name"], head=entry["head"], device=device, inference=entry.get("inference")
    )


def _excluded(cell: dict, patterns: list[dict]) -> bool:
    def matches(key, wanted):
        return cell[key] in wanted if isinstance(wanted, list) else cell[key] == wanted

    return any(all(matches(key, wanted) for key, wanted in pattern.items()) for pattern in patterns)


def _radii(config: GridConfig, attack: str) -> list[float | None]:
    """The radii of ``attack`` in the grid: ``cw_eps`` for L2 attacks (without null for the bounded
    ones), ``eps`` for L_inf ones."""
    spec = attack_spec(attack)
    if spec.norm == "linf":
        return config.eps
    return [e for e in config.cw_eps if e is not None or spec.minimum_norm]


def cells(config: GridConfig, targets: list[Target]) -> list[tuple]:
    """The white-box cells ``(target, defense, protocol, attack, eps)`` in report order, without the
    excluded ones, the protocols an attack does not declare, and the attacks designed against a WNLL
    head on targets that are not read through one."""
    out = []
    for target in targets:
        for defense in config.defenses:
            for protocol in config.protocols:
                for attack in config.attacks:
                    spec = attack_spec(attack)
                    if protocol not in spec.protocols or (spec.wnll and not uses_wnll(target.model)):
                        continue
                    for eps in _radii(config, attack):
                        cell = {
                            "model": target.name,
                            "defense": defense,
                            "protocol": protocol,
                            "attack": attack,
                            "eps": eps,
                        }
                        if not _excluded(cell, config.exclude):
                            out.append((target, defense, protocol, attack, eps))
    return out


def run_grid(config: GridConfig, *, progress: bool = True) -> dict:
    """Run every cell of ``config`` and every transfer attack; returns the result dict that
    :func:`fastwnll.evaluation.report.write_report` writes: ``rows`` (one dict per cell, see
    :meth:`Evaluator.evaluate`), ``models``, ``settings`` (the config), ``dataset``, ``n``, ``cw_n``,
    ``device``, ``time_s``. All models must share the test data."""
    config.validate()
    started = time.perf_counter()
    device = resolve_device(config.device)
    targets = [_load(m, device) for m in config.models]
    for other in targets[1:]:
        check_same_data(targets[0], other)
    x, y = eval_data(targets[0], config.n, config.seed)
    evaluator = Evaluator(
        x,
        y,
        dataset=targets[0].dataset,
        tvm=config.tvm,
        seed=config.seed,
        batch_size=config.batch_size,
        device=device,
        progress=progress,
    )
    work = cells(config, targets)
    transfer_work = []
    by_name = {t.name: t for t in targets}
    for spec in config.transfer:
        source = spec["source"]
        if isinstance(source, str):
            if source not in by_name:
                raise ValueError(
                    f"transfer source {source!r} is not one of the models {sorted(by_name)}; give "
                    "{'name': ..., 'checkpoint': ...} for another checkpoint"
                )
            source = by_name[source]
        else:
            source = _load(source, device)
            check_same_data(source, targets[0])
        for attack in spec.get("attacks", ["ifgsm"]):
            for eps in spec.get("eps", config.eps[-1:]):
                for target in targets:
                    if target.name == source.name:
                        continue
                    transfer_work += [(source, target, defense, attack, eps) for defense in config.defenses]
    entries = []
    bar = tqdm(total=len(work) + len(transfer_work), desc="report", disable=not progress, dynamic_ncols=True)
    for target, defense, protocol, attack, eps in work:
        bar.set_postfix_str(f"{target.name} {defense} {protocol} {attack} {eps}")
        eot = config.eot if protocol == "adaptive" and defense == "tvm" else None
        setting = resolve(protocol, target.model, defense, eot=eot)
        entries.append(
            evaluator.evaluate_with_mask(
                target,
                attack,
                eps,
                defense,
                setting,
                n=config.n_of(attack),
                steps=config.steps if attack_spec(attack).iterative else None,
                alpha=config.alpha,
                settings=config.settings_of(attack),
            )
        )
        bar.update()
    diagnostics = diagnose(entries)
    rows = with_worst_case(entries) if config.worst_case else [row for row, _ in entries]
    for source, target, defense, attack, eps in transfer_work:
        bar.set_postfix_str(f"{source.name} -> {target.name} {defense} {attack} {eps}")
        setting = resolve("paper", source.model, "none")
        rows.append(
            evaluator.evaluate(
                target,
                attack,
                eps,
                defense,
                setting,
                source=source,
                n=config.n_of(attack),
                steps=config.steps if attack_spec(attack).iterative else None,
                alpha=config.alpha,
                settings=config.settings_of(attack),
            )
        )
        bar.update()
    bar.close()
    warn(diagnostics)
    models = [t.describe() for t in targets]
    models += [s.describe() for s in _unique_sources(transfer_work) if s.name not in by_name]
    return {
        "title": config.title,
        "dataset": targets[0].dataset,
        "n": config.n,
        "cw_n": config.cw_n or config.n,
        "device": str(device),
        "settings": config.to_dict(),
        "models": models,
        "rows": rows,
        "diagnostics": diagnostics,
        "time_s": time.perf_counter() - started,
    }


def worst_case_row(entries: list[tuple[dict, torch.Tensor]], **fields) -> dict:
    """A "worst-case" row from white-box rows of one cell with their survival masks [n] (a smaller n
    is a prefix of a larger one): the fraction of the first ``min(n)`` images that survive every one
    of them. It copies the row with the fewest images (so ``clean_accuracy`` is on the same images),
    joins the differing gradient and TVM settings with "|", lists the runs it takes in ``runs``, and
    takes ``fields`` (such as ``attack``) on top."""
    n = min(mask.shape[0] for _, mask in entries)
    survived = torch.stack([mask[:n] for _, mask in entries]).all(0)
    base = min((row for row, _ in entries), key=lambda row: row["n"])
    worst = dict(
        base,
        protocol="worst-case",
        n=n,
        robust_accuracy=float(survived.float().mean()),
        craft_time_s=0.0,
        reused=True,
        runs=[f"{row['attack']}/{row['protocol']}" for row, _ in entries],
        gradient=_joined(row["gradient"] for row, _ in entries),
        tvm_attack=_joined(row["tvm_attack"] for row, _ in entries),
        **fields,
    )
    for name in ("changed", "median_l2", "zero_gradient_share", "prediction_changes"):
        worst.pop(name, None)
    return worst


def with_worst_case(entries: list[tuple[dict, torch.Tensor]]) -> list[dict]:
    """The rows of ``entries`` (white-box rows with their survival masks), each (model, defence) group
    followed by its worst-case rows: for every cell (model, defence, norm, radius) with more than
    one run, one per attack (:func:`worst_case_row` over the protocols it ran under) and, with more
    than one attack, one for :data:`WORST` of the norm over every attack of the cell."""
    out: list[dict] = []
    groups: dict[tuple, list] = {}
    for row, mask in entries:
        groups.setdefault((row["model"], row["defense"]), []).append((row, mask))
    for group in groups.values():
        out += [row for row, _ in group]
        cells: dict[tuple, list] = {}
        for row, mask in group:
            cells.setdefault((row["norm"], row["eps"]), []).append((row, mask))
        for (norm, _), cell in cells.items():
            if len(cell) < 2:
                continue
            attacks = list(dict.fromkeys(row["attack"] for row, _ in cell))
            out += [worst_case_row([e for e in cell if e[0]["attack"] == attack]) for attack in attacks]
            if len(attacks) > 1:
                out.append(worst_case_row(cell, attack=WORST[norm], budget=None))
    return out


def _joined(values) -> str | None:
    distinct = list(dict.fromkeys(values))
    return distinct[0] if len(distinct) == 1 else "|".join(str(v) for v in distinct)


def _unique_sources(transfer_work) -> list[Target]:
    seen: dict[str, Target] = {}
    for source, *_ in transfer_work:
        seen.setdefault(source.name, source)
    return list(seen.values())
