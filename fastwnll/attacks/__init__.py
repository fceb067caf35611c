"""Adversarial attacks for any classifier returning logits or log-probabilities, WNLL models included.

Every attack takes ``(model, x, y)`` with images ``x`` [B, C, H, W] in [0, 1] and int64 labels ``y``
[B] on the model's device, and returns detached adversarial images of x's shape, dtype and device.
Defences are handled by wrapping the model, not by options of each attack: :class:`BPDA` for a
non-differentiable preprocessing (such as TV minimization), :class:`EOT` for randomness, and the
``gradient`` argument (or :func:`gradient_mode`) for WNLL heads' surrogate or exact backward.
:mod:`fastwnll.attacks.wnll` holds attacks designed against a WNLL head (a feature-space margin
and a smoothed-graph gradient), :mod:`fastwnll.attacks.autoattack` the Square and AutoAttack
cross-checks of the torchattacks library (an optional dependency). The registry :data:`ATTACKS`
describes every attack (:class:`AttackSpec`: norm, label, budget defaults per dataset, gradient
use, protocols).
"""

from .accuracy import correct_mask, robust_accuracy
from .autoattack import autoattack, square
from .cw import cw_l2
from .linf import fgsm, ifgsm, pgd
from .losses import cross_entropy, cw_margin, logit_margin, loss_grad, margin_loss
from .modes import attack_mode, gradient_mode
from .registry import ATTACKS, NORMS, PROTOCOLS, AttackSpec, attack_spec, get_attack
from .transfer import transfer_attack
from .wnll import head_stand_in, wnll_margin, wnll_margin_l2, wnll_smooth
from .wrappers import BPDA, EOT

__all__ = [
    "ATTACKS",
    "BPDA",
    "EOT",
    "NORMS",
    "PROTOCOLS",
    "AttackSpec",
    "attack_mode",
    "attack_spec",
    "autoattack",
    "correct_mask",
    "cross_entropy",
    "cw_l2",
    "cw_margin",
    "fgsm",
    "get_attack",
    "gradient_mode",
    "head_stand_in",
    "ifgsm",
    "logit_margin",
    "loss_grad",
    "margin_loss",
    "pgd",
    "robust_accuracy",
    "square",
    "transfer_attack",
    "wnll_margin",
    "wnll_margin_l2",
    "wnll_smooth",
]
