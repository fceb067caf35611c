"""The configuration of a training run: one dataclass, per-dataset defaults and validation. It is
saved in every checkpoint, so reading a run back (``fastwnll.evaluation``) needs it as much as
training does."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from fastwnll.data import DATASETS, dataset_spec
from fastwnll.knn.approximate import ApproximateKNN
from fastwnll.knn.search import check_backend
from fastwnll.models.heads import HEADS
from fastwnll.nn.head import GRADIENTS

from .device import AMP, DEVICES
from .ranges import COUNT, FRACTION, NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE, Range

ADVERSARIES = ("none", "pgd")

# Defaults of the fields left None that do not depend on the dataset. The per-dataset ones (network,
# learning rate, stage-2 batch size, the paper's PGD budget) are in the dataset registry
# (``fastwnll.data.DATASET_SPECS``).
GENERIC_DEFAULTS = {"lr": 0.05, "stage2_batch_size": 1024}
# Stage-2 (WNLL) epochs per cycle when not given: the paper trains the buffer block "a few epochs".
DEFAULT_STAGE2_EPOCHS = 2
# The allowed values of the numeric fields (checked by ``resolve``; the ``train`` command parses its
# flags with the same ranges). ``milestones`` is a list: the range of each of its epochs.
FIELD_RANGES: dict[str, Range] = {
    **dict.fromkeys(("epochs", "stage2_epochs", "eval_every", "seed"), NON_NEGATIVE_INT),
    **dict.fromkeys(
        (
            "cycles",
            "batch_size",
            "stage2_batch_size",
            "k",
            "templates",
            "template_batches",
            "eval_batch_size",
            "adv_templates",
            "steps",
            "milestones",
        ),
        COUNT,
    ),
    "k_sigma": Range(2, integer=True),
    **dict.fromkeys(("lr", "stage2_lr", "gamma", "alpha"), POSITIVE),
    **dict.fromkeys(("momentum", "weight_decay", "eps"), NON_NEGATIVE),
    "tvm_augment": FRACTION,
    "template_fraction": Range(0, 1, low_open=True, high_open=True),
}
# Template banks when ``templates`` / ``adv_templates`` are not given: this many training images, or
# all of them when the training split is smaller.
DEFAULT_TEMPLATES = 5000
DEFAULT_ADV_TEMPLATES = 1000
# Fields that may differ between a run and its resumption.
RESUMABLE_CHANGES = ("device", "out", "download")


def dataset_defaults(dataset: str) -> dict:
    """The defaults of the ``None`` fields for ``dataset``: the generic ones, the dataset's own
    training defaults and its paper budget as ``eps``, ``alpha``, ``steps``."""
    spec = dataset_spec(dataset)
    budget = dataclasses.asdict(spec.budget) if spec.budget else {}
    return {**GENERIC_DEFAULTS, **spec.defaults, **budget}


@dataclass
class TrainConfig:
    """Everything that determines a training run. ``None`` fields take per-dataset defaults in
    :meth:`resolve`.

    Schedule (docs/design.md, section 4.2): ``cycles`` times (stage 1: ``epochs`` epochs of the whole
    network with the linear head; then, for ``head="wnll"``, stage 2: ``stage2_epochs`` epochs of the
    buffer block alone with the WNLL head, whose backward is ``wnll_gradient``). Each stage starts a fresh SGD
    optimizer (``momentum``, ``weight_decay``): stage 1 at ``lr``, multiplied by ``gamma`` at each
    of ``milestones`` (epochs counted from the start of the stage); stage 2 at a constant
    ``stage2_lr`` (default: stage 1's final learning rate).

    Adversarial training (``adv="pgd"``): every training batch is replaced by PGD examples (``eps``,
    ``steps`` steps of ``alpha``, uniform random start; defaults: the dataset's paper budget,
    docs/design.md, section 4.5) crafted against the model in eval mode: through the linear head in
    stage 1, through the WNLL head with a bank of ``adv_templates`` training templates (default
    :data:`DEFAULT_ADV_TEMPLATES`, or the whole training split when smaller) and ``adv_gradient`` in stage 2.
    ``tvm_augment``: that fraction of each (adversarial) batch is replaced by its TV minimization
    (``fastwnll.tvm`` with Guo et al.'s defaults), the transformation the defence applies at test time.

    WNLL head: graph options ``k``, ``k_sigma`` (None: ``min(8, k + 1)``), ``template_fraction`` (of each
    stage-2 batch), ``knn_backend`` (the kNN search of every WNLL graph: exact, or approximate "hnsw" / "ivf"
    with their options as a spec string, ``"hnsw:ef_search=128,hnsw_m=16"``, or an ``ApproximateKNN``, kept
    as its spec string);
    for evaluation a bank of ``templates`` training examples (a fixed random subset; default
    :data:`DEFAULT_TEMPLATES`, or the whole training split when smaller; more than the split holds is
    an error, and so is a bank that lacks a class), split into
    ``template_batches`` chunks whose scores are averaged, queries ``eval_batch_size`` at a time.
    ``eval_every``: test every so many epochs (0: only after the last one, which is always tested).
    ``device``: "auto" (CUDA when available), "cpu" or "cuda"; ``amp``: mixed precision on CUDA
    ("auto"/"on", bfloat16 where supported) or "off". ``out``: the run directory.
    """

    dataset: str = "digits"
    data_dir: str | None = None
    download: bool = False
    model: str | None = None
    head: str = "linear"
    epochs: int = 10
    stage2_epochs: int | None = None
    cycles: int = 1
    adv: str = "none"
    eps: float | None = None
    alpha: float | None = None
    steps: int | None = None
    adv_gradient: str = "surrogate"
    wnll_gradient: str = "surrogate"
    adv_templates: int | None = None
    tvm_augment: float = 0.0
    batch_size: int = 128
    stage2_batch_size: int | None = None
    lr: float | None = None
    stage2_lr: float | None = None
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    k: int = 15
    k_sigma: int | None = None
    template_fraction: float = 1 / 3
    templates: int | None = None
    template_batches: int = 1
    knn_backend: str = "auto"
    eval_batch_size: int = 500
    eval_every: int = 1
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"
    out: str = "runs/train"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown training configuration fields: {unknown}")
        return cls(**values)

    def resolve(self) -> "TrainConfig":
        """A validated copy with every ``None`` default filled in. Raises ValueError naming the field."""
        if not isinstance(self.milestones, (list, tuple)):
            raise ValueError(f"milestones must be a list of epochs, got {self.milestones!r}")
        c = dataclasses.replace(self, milestones=list(self.milestones))
        _choice("dataset", c.dataset, DATASETS)
        _choice("head", c.head, HEADS)
        _choice("adv", c.adv, ADVERSARIES)
        _choice("adv_gradient", c.adv_gradient, GRADIENTS)
        _choice("wnll_gradient", c.wnll_gradient, GRADIENTS)
        _choice("device", c.device, DEVICES)
        _choice("amp", c.amp, AMP)
        c.knn_backend = knn_backend_spec(c.knn_backend)
        if c.adv == "none":
            given = [name for name in ("eps", "alpha", "steps") if getattr(c, name) is not None]
            if given:
                raise ValueError(f"{', '.join(given)} given without adversarial training: set adv='pgd' (--adv pgd)")
        defaults = dataset_defaults(c.dataset)
        for name in ("model", "lr", "stage2_batch_size") + (("eps", "alpha", "steps") if c.adv == "pgd" else ()):
            if getattr(c, name) is None:
                if name not in defaults:
                    raise ValueError(f"dataset {c.dataset!r} has no default {name}: pass it explicitly")
                setattr(c, name, defaults[name])
        if c.stage2_epochs is None:
            c.stage2_epochs = DEFAULT_STAGE2_EPOCHS if c.head == "wnll" else 0
        for name, allowed in FIELD_RANGES.items():
            value = getattr(c, name)
            for item in value if name == "milestones" else [value]:
                if item is not None:  # None: templates / stage2_lr / adversarial fields left to their defaults
                    allowed.check(name, item)
        if c.milestones != sorted(set(c.milestones)):
            raise ValueError(f"milestones must be strictly increasing, got {c.milestones}")
        if c.head == "linear" and c.stage2_epochs:
            raise ValueError("stage2_epochs > 0 needs head='wnll' (stage 2 trains with the WNLL head)")
        if c.epochs + c.stage2_epochs == 0:
            raise ValueError("nothing to train: epochs and stage2_epochs are both 0")
        if c.stage2_lr is None:
            c.stage2_lr = FIELD_RANGES["stage2_lr"].check(
                "stage2_lr", c.lr * c.gamma ** sum(m < c.epochs for m in c.milestones)
            )
        if not isinstance(c.download, bool):
            raise ValueError(f"download must be True or False, got {c.download!r}")
        for name in ("data_dir", "out"):
            value = getattr(c, name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{name} must be a path string, got {value!r}")
        return c

    def stage_plan(self) -> list[tuple[int, str, int]]:
        """``(cycle, stage, epoch_in_stage)`` for every epoch of the run, stage ``"linear"`` or ``"wnll"``."""
        plan = []
        for cycle in range(self.cycles):
            plan += [(cycle, "linear", e) for e in range(self.epochs)]
            plan += [(cycle, "wnll", e) for e in range(self.stage2_epochs or 0)]
        return plan

    def head_kwargs(self) -> dict:
        """Keyword arguments of the WNLL head (empty for the linear head)."""
        if self.head != "wnll":
            return {}
        return {
            "k": self.k,
            "k_sigma": self.k_sigma,
            "template_fraction": self.template_fraction,
            "template_batches": self.template_batches,
            "gradient": self.wnll_gradient,
            "knn_backend": self.knn_backend,
        }

    def differences(self, other: "TrainConfig", ignore=RESUMABLE_CHANGES) -> list[str]:
        """Names of the fields whose values differ, except ``ignore``."""
        a, b = self.to_dict(), other.to_dict()
        return [k for k in a if k not in ignore and a[k] != b[k]]


def knn_backend_spec(value) -> str:
    """The ``knn_backend`` field as a string (a backend name or an approximate spec, see
    :func:`fastwnll.knn.check_backend`; an ``ApproximateKNN`` becomes its spec), checked."""
    if isinstance(value, ApproximateKNN):
        return value.spec()
    try:
        check_backend(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"knn_backend: {error}") from None
    return value.strip() if ":" in value else value


def _choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
