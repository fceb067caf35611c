"""Attacks designed against a WNLL head: PGD on a differentiable stand-in for the interpolation.

Why the exact gradient fails (docs/design.md, sections 5.3 and 5.6). A query's WNLL score is a weighted
average of its graph neighbours' labels. When all of its ``k`` nearest neighbours carry its own
class, the score is (up to the solver tolerance) the one-hot label whatever the exact positions of
the features, so the exact derivative of the score, and of the log of the floored probabilities,
is zero or rounding noise until the kNN set changes. Sign steps of such a gradient wander at
random; the attack "fails" and the model looks robust: gradient masking.

The attacks here keep the model, its trunk and any defence (BPDA and EOT wrappers still apply)
and change only what the attacker differentiates at the head. While crafting, every WNLL head of
the model outputs a *stand-in* score computed from its own template bank (the public buffers
``template_features`` [N, d] and ``template_labels`` [N] and the attributes ``k``, ``k_sigma``,
``mu``, ``kernel``, ``num_classes``, ``tol``, ``max_iter``), with a gradient that does not vanish
when the neighbours agree:

- :func:`wnll_margin` / :func:`wnll_margin_l2`: a margin over feature-space distances to the
  nearest templates of each class (:func:`template_distance_scores`);
- :func:`wnll_smooth`: the exact gradient of a *softened* interpolation: the same WNLL equations
  over a graph with more neighbours and a larger scale (:func:`smoothed_interpolation_scores`),
  built as the head builds its graph (each query against the bank alone for an inductive head);
  where that interpolation is still one-hot (every template in a query's softened graph carries
  one class, so its gradient is exactly zero), the query falls back to the distance scores
  (:class:`SmoothStandIn`), so no image is left without a direction.

:func:`stand_in_for` gives the stand-in of a registered attack (the masking diagnostics count the
images whose stand-in gradient is exactly zero).

The model is always evaluated unchanged: the stand-in exists only inside the attack. All attacks
take images ``x`` [B, C, H, W] (float, in [0, 1]) and labels ``y`` [B] (int64) on the model's
device, run the model in eval mode and return detached adversarial images of x's shape, dtype and
device within ``eps`` of x (in their norm) and inside [0, 1]. They need a model whose output is
a WNLL head in wnll mode with a non-empty template bank.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn

from fastwnll.nn.head import PROB_FLOOR, WNLLHead
from fastwnll.nn.network import head_mode, uses_wnll, wnll_heads
from fastwnll.wnll.bank import TemplateBank
from fastwnll.wnll.interpolate import wnll_interpolate

from .checks import check_generator, check_inputs, positive_int, step_budget
from .losses import margin_loss
from .modes import attack_mode
from .projected import ascent_steps, random_point

StandIn = Callable[[WNLLHead, torch.Tensor], torch.Tensor]
# A squared distance scale below this is treated as this (a query on top of its templates).
_TINY = 1e-12


@contextmanager
def head_stand_in(model: nn.Module, scores: StandIn) -> Iterator[nn.Module]:
    """Inside the block every WNLL head of ``model`` outputs ``scores(head, features)`` (``features``
    [rows, in_features] -> [rows, num_classes]) instead of its interpolation; restored on exit.

    The heads run their cheap linear mode meanwhile and a forward hook replaces that output, so the
    interpolation the stand-in replaces is not computed at all. Raises ValueError when the model's
    output is not a WNLL head in wnll mode or a head has an empty template bank.
    """
    heads = wnll_heads(model)
    if not uses_wnll(model):
        raise ValueError(
            f"this attack targets a WNLL head, but {type(model).__name__} has "
            f"{'no WNLL head' if not heads else 'WNLL heads in linear mode'}"
        )
    empty = [h for h in heads if h.num_templates == 0]
    if empty:
        raise ValueError(
            "this attack reads the WNLL head's template bank, which is empty: fill it with "
            "fastwnll.nn.network.collect_templates(model, training_data)"
        )

    def hook(head, args, _output):
        return scores(head, args[0])

    handles = [h.register_forward_hook(hook) for h in heads]
    try:
        with head_mode(model, "linear"):
            yield model
    finally:
        for handle in handles:
            handle.remove()


def _bank(head: WNLLHead, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The head's bank [N, d] and the features [rows, d] in one working dtype (float64 for float64
    features, else float32, as the head computes), and the bank's labels [N]."""
    work = torch.float64 if features.dtype == torch.float64 else torch.float32
    if head.template_features.device != features.device:
        raise RuntimeError(
            f"the template bank is on {head.template_features.device} but the features are on "
            f"{features.device}: move the model with .to(device)"
        )
    return head.template_features.to(work), head.template_labels, features.to(work)


def template_distance_scores(head: WNLLHead, features: torch.Tensor, neighbours: int | None = None) -> torch.Tensor:
    """Scores [rows, num_classes] of ``features`` [rows, d]: for each class c,
    ``-mean(squared distances to the `neighbours` nearest templates of class c) / scale``.

    ``neighbours`` defaults to the head's ``k``; a class with fewer templates uses all of them, and a
    class absent from the bank scores ``-inf``. ``scale`` (per row, no gradient) is the mean squared
    distance to the ``neighbours`` nearest templates of any class: it makes the scores scale-free
    and of order 1 (it changes neither the argmax nor the direction of a sign or normalized step).
    The gradient of a score is the pull of the feature towards those templates' mean, nonzero
    wherever the feature is not already on it, so a margin between two classes' scores does not
    saturate, unlike the WNLL probabilities. Distances are computed about the bank's mean, so a
    large common offset of all features does not cancel digits.
    """
    bank, labels, features = _bank(head, features)
    neighbours = head.k if neighbours is None else positive_int("neighbours", neighbours)
    center = bank.mean(0).detach()
    bank, features = bank - center, features - center
    squared = (features.pow(2).sum(1, keepdim=True) + bank.pow(2).sum(1) - 2 * features @ bank.T).clamp_min(0)
    nearest = min(neighbours, bank.shape[0])
    scale = squared.detach().topk(nearest, dim=1, largest=False).values.mean(1).clamp_min(_TINY)
    absent = features.new_full((features.shape[0],), float("-inf"))
    columns = []
    for c in range(head.num_classes):
        of_class = squared[:, labels == c]
        if of_class.shape[1] == 0:
            columns.append(absent)
            continue
        closest = of_class.topk(min(neighbours, of_class.shape[1]), dim=1, largest=False).values
        columns.append(-closest.mean(1) / scale)
    return torch.stack(columns, dim=1)


def _soft_graph(head: WNLLHead, k, k_sigma, nodes: int) -> tuple[int, int]:
    """``(k, k_sigma)`` of the softened graph of a head over ``nodes`` points: ``k`` defaults to
    4 x the head's ``k`` (at most ``nodes - 1``), ``k_sigma`` to ``k + 1``; both checked."""
    k = min(4 * head.k, nodes - 1) if k is None else positive_int("k", k)
    k_sigma = k + 1 if k_sigma is None else positive_int("k_sigma", k_sigma)
    if not 2 <= k_sigma <= k + 1:
        raise ValueError(f"k_sigma must lie in [2, k + 1 = {k + 1}], got {k_sigma}")
    return k, k_sigma


def smoothed_interpolation_scores(
    head: WNLLHead,
    features: torch.Tensor,
    k: int | None = None,
    k_sigma: int | None = None,
    inductive: bool | None = None,
    bank: TemplateBank | None = None,
) -> torch.Tensor:
    """Log-probabilities [rows, num_classes] of ``features`` [rows, d] under a softened WNLL
    interpolation against the head's whole bank, with ``k`` neighbours (default 4 x the head's ``k``,
    at most n - 1 for a graph of n points) and scale neighbour ``k_sigma`` (default ``k + 1``: every
    sigma_i is the distance to the farthest of i's neighbours, so every edge weight is at least
    exp(-1)), the head's ``mu``, ``kernel``, ``tol`` and ``max_iter``, floored at the head's
    probability floor before the log. Differentiable (exact adjoint, or the closed form).

    The graph is built as the head builds its own (``inductive`` None: from ``head.inference``):
    transductive, all rows and the bank in one graph (:func:`fastwnll.wnll_interpolate`, n = bank +
    rows); inductive, each row against the bank alone (:meth:`fastwnll.TemplateBank.interpolate`
    with ``inductive=True``, n = bank + 1), so that the scores of a row, and their gradient, do not
    depend on the other rows. ``bank``: a :class:`fastwnll.TemplateBank` of the head's bank with
    these ``k`` and ``k_sigma`` to reuse (inductive only; built when None).
    """
    bank_features, labels, features = _bank(head, features)
    inductive = head.inference == "inductive" if inductive is None else inductive
    m = bank_features.shape[0]
    k, k_sigma = _soft_graph(head, k, k_sigma, m + (1 if inductive else features.shape[0]))
    with torch.autocast(device_type=features.device.type, enabled=False):
        if inductive:
            if bank is None:
                bank = soft_bank(head, bank_features, labels, k, k_sigma)
            probs = bank.interpolate(features, inductive=True, mu=head.mu, tol=head.tol, max_iter=head.max_iter)
        else:
            probs = wnll_interpolate(
                bank_features,
                labels,
                features,
                k=k,
                k_sigma=k_sigma,
                mu=head.mu,
                num_classes=head.num_classes,
                tol=head.tol,
                max_iter=head.max_iter,
                kernel=head.kernel,
            )
    return torch.log(probs.clamp_min(PROB_FLOOR))


def soft_bank(head: WNLLHead, features: torch.Tensor, labels: torch.Tensor, k: int, k_sigma: int) -> TemplateBank:
    """The :class:`fastwnll.TemplateBank` of the softened graph over ``features`` [N, d] (the head's
    bank in the working dtype) and ``labels`` [N]."""
    return TemplateBank(features, labels, k=k, k_sigma=k_sigma, kernel=head.kernel, num_classes=head.num_classes)


class SmoothStandIn:
    """The stand-in of :func:`wnll_smooth` (a :data:`StandIn`): for features [rows, d] of a head,
    the softened interpolation's log-probabilities (:func:`smoothed_interpolation_scores`, graph as
    the head builds it), except for the rows where that interpolation is one-hot, which get
    :func:`template_distance_scores` instead.

    Why the fallback. A row is one-hot when no template of another class reaches it in the
    softened graph (all of its ``k`` nearest templates and every template whose list it enters share
    one class; in a transductive graph also through the other rows): its probabilities are the
    one-hot label exactly (the other classes at the floor), the log-probability margin is constant
    and its gradient exactly zero, however far the query is from the decision boundary. Such rows
    are detected exactly (their second largest probability is at most the floor) and follow the
    distance margin, which is the softened interpolation's margin in the limit of a large scale
    (with every class's nearest templates weighted alike, the log-probability of a class is, to first
    order in 1 / sigma^2, minus the mean squared distance to its templates over sigma^2): it points
    towards the nearest templates of the other classes, whose entry into the graph is the event the
    attack needs. The choice is made per row from that row's own scores, so it does not depend on
    the other rows either.

    ``k``, ``k_sigma``: of the softened graph (see :func:`smoothed_interpolation_scores`). The
    inductive softened bank of each head is built once and reused by every call.
    """

    def __init__(self, k: int | None = None, k_sigma: int | None = None):
        self.k = None if k is None else positive_int("k", k)
        self.k_sigma = None if k_sigma is None else positive_int("k_sigma", k_sigma)
        self._banks: dict[int, tuple] = {}

    def _bank_of(self, head: WNLLHead, features: torch.Tensor) -> TemplateBank | None:
        if head.inference != "inductive":
            return None
        bank_features, labels, _ = _bank(head, features[:1])
        key = (head.template_features, head.template_features._version, bank_features.dtype)
        cached = self._banks.get(id(head))
        if cached is None or cached[0][0] is not key[0] or cached[0][1:] != key[1:]:
            k, k_sigma = _soft_graph(head, self.k, self.k_sigma, bank_features.shape[0] + 1)
            cached = (key, soft_bank(head, bank_features, labels, k, k_sigma))
            self._banks[id(head)] = cached
        return cached[1]

    def __call__(self, head: WNLLHead, features: torch.Tensor) -> torch.Tensor:
        log_probs = smoothed_interpolation_scores(
            head, features, self.k, self.k_sigma, bank=self._bank_of(head, features)
        )
        saturated = one_hot_rows(log_probs)
        if not bool(saturated.any()):
            return log_probs
        fallback = template_distance_scores(head, features[saturated])
        return log_probs.index_put((saturated.nonzero().squeeze(1),), fallback.to(log_probs.dtype))


def one_hot_rows(log_probs: torch.Tensor) -> torch.Tensor:
    """Bool [rows]: the rows of floored log-probabilities [rows, C] whose second largest probability
    is at the floor (one class holds all the mass: the margin's gradient is exactly zero)."""
    second = log_probs.detach().topk(2, dim=1).values[:, 1]
    return second <= torch.log(torch.tensor(PROB_FLOOR, dtype=log_probs.dtype))


def margin_stand_in(neighbours: int | None = None) -> StandIn:
    """The stand-in of :func:`wnll_margin` and :func:`wnll_margin_l2`: :func:`template_distance_scores`
    over ``neighbours`` nearest templates per class."""
    neighbours = None if neighbours is None else positive_int("neighbours", neighbours)

    def scores(head, features):
        return template_distance_scores(head, features, neighbours)

    return scores


# The stand-in each registered WNLL attack crafts on, from the attack's keyword arguments.
STAND_INS: dict[str, Callable[[dict], StandIn]] = {
    "wnll_margin": lambda kwargs: margin_stand_in(kwargs.get("neighbours")),
    "wnll_margin_l2": lambda kwargs: margin_stand_in(kwargs.get("neighbours")),
    "wnll_smooth": lambda kwargs: SmoothStandIn(kwargs.get("k"), kwargs.get("k_sigma")),
}


def stand_in_for(attack: str, kwargs: dict) -> StandIn:
    """The stand-in the WNLL attack named ``attack`` (``"wnll_margin"``, ``"wnll_margin_l2"`` or
    ``"wnll_smooth"``) crafts on with its keyword arguments ``kwargs`` (only its stand-in settings
    are read); ValueError for another name."""
    if attack not in STAND_INS:
        raise ValueError(f"{attack!r} is not an attack on a WNLL stand-in; choose one of {', '.join(STAND_INS)}")
    return STAND_INS[attack](kwargs)


def _stand_in_pgd(model, x, y, scores: StandIn, *, eps, alpha, steps, norm, random_start, generator):
    check_inputs(model, x, y)
    eps, alpha, steps = step_budget(eps, alpha, steps)
    check_generator(generator, x)
    x = x.detach()
    with attack_mode(model), head_stand_in(model, scores):
        start = random_point(x, eps, norm, generator) if random_start else x
        return ascent_steps(model, x, start, y, eps=eps, alpha=alpha, steps=steps, loss_fn=margin_loss, norm=norm)


def _margin_pgd(model, x, y, eps, alpha, steps, neighbours, random_start, generator, norm: str) -> torch.Tensor:
    """:func:`wnll_margin` (``norm`` "linf") and :func:`wnll_margin_l2` (``norm`` "l2")."""
    return _stand_in_pgd(
        model,
        x,
        y,
        margin_stand_in(neighbours),
        eps=eps,
        alpha=alpha,
        steps=steps,
        norm=norm,
        random_start=random_start,
        generator=generator,
    )


def wnll_margin(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    alpha: float,
    steps: int,
    neighbours: int | None = None,
    random_start: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Feature-space margin attack on a WNLL head, L_inf: ``steps`` sign steps of size ``alpha`` in the
    ball of radius ``eps`` (from x, or from a uniform random point of the ball with ``random_start``,
    drawn from ``generator``).

    The loss is the margin ``s_best_other - s_y`` of :func:`template_distance_scores`: it pulls the
    query's feature towards the ``neighbours`` nearest templates of the closest other class and away
    from the nearest templates of its own class. Why it works where the exact gradient fails: the
    WNLL score only changes once other-class templates enter the query's kNN set, and its exact
    gradient is zero or noise before that (see the module docstring); the distance margin has a
    nonzero gradient that points exactly towards that event, however unanimous the neighbours are.
    """
    return _margin_pgd(model, x, y, eps, alpha, steps, neighbours, random_start, generator, "linf")


def wnll_margin_l2(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    alpha: float,
    steps: int,
    neighbours: int | None = None,
    random_start: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """:func:`wnll_margin` in an L2 ball of radius ``eps``: ``steps`` steps of L2 length ``alpha``
    along the normalized gradient, each projected onto the ball and the [0, 1] box."""
    return _margin_pgd(model, x, y, eps, alpha, steps, neighbours, random_start, generator, "l2")


def wnll_smooth(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    alpha: float,
    steps: int,
    k: int | None = None,
    k_sigma: int | None = None,
    random_start: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Smoothed-graph attack on a WNLL head, L_inf: sign steps (as :func:`wnll_margin`) on the
    log-probability margin ``log p_best_other - log p_y`` of a softened interpolation
    (:func:`smoothed_interpolation_scores`: ``k`` neighbours, default 4 x the head's, and sigma the
    distance to the farthest of them, in a graph built as the head builds its own: each image
    against the bank alone for an inductive head), used only to craft; the model is evaluated
    unchanged. Images whose softened interpolation is still one-hot follow the distance margin of
    :func:`wnll_margin` instead (:class:`SmoothStandIn`): every image gets a nonzero direction, and
    for an inductive head each image's steps do not depend on the other images of the batch.

    Why it works where the exact gradient fails: with the head's own ``k`` a query's neighbours are
    often all of its class, its score is exactly one-hot and its exact gradient vanishes. With more
    neighbours and a scale that keeps every edge weight above exp(-1), other-class templates are
    in the graph with real weight, the other classes' probabilities are well above the floor, and
    the exact gradient of the softened interpolation says how to move the feature towards them.
    The margin of log-probabilities (instead of the cross-entropy) keeps the step informative when
    the true class's probability is close to 1. Where even the softened graph holds one class only
    (all of an image's 4 k nearest templates share its class, common with small batches or
    inductive inference), the distance margin takes over for that image.
    """
    return _stand_in_pgd(
        model,
        x,
        y,
        SmoothStandIn(k, k_sigma),
        eps=eps,
        alpha=alpha,
        steps=steps,
        norm="linf",
        random_start=random_start,
        generator=generator,
    )
