"""Attacks: budgets, agreement with torchattacks, BPDA/EOT wrappers, gradient modes, hygiene, errors;
the attacks designed against a WNLL head and the torchattacks cross-checks (Square, AutoAttack)."""

import copy
import sys

import pytest
import torch
import torch.nn.functional as F
from digits_models import load_digits, plain_cnn, train, wnll_cnn
from torch import nn

from fastwnll.attacks import (
    ATTACKS,
    BPDA,
    EOT,
    NORMS,
    PROTOCOLS,
    attack_spec,
    autoattack,
    correct_mask,
    cross_entropy,
    cw_l2,
    cw_margin,
    fgsm,
    get_attack,
    gradient_mode,
    head_stand_in,
    ifgsm,
    logit_margin,
    loss_grad,
    margin_loss,
    pgd,
    robust_accuracy,
    square,
    transfer_attack,
    wnll_margin,
    wnll_margin_l2,
    wnll_smooth,
)
from fastwnll.attacks.wnll import smoothed_interpolation_scores, template_distance_scores
from fastwnll.data import DATASET_SPECS
from fastwnll.nn.head import WNLLHead

torchattacks = pytest.importorskip("torchattacks")
pytest.importorskip("sklearn.datasets")

EPS, ALPHA, STEPS = 0.15, 0.02, 10


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.fixture(scope="module")
def cnn(digits):
    return plain_cnn(*digits)


@pytest.fixture(scope="module")
def mlp(digits):
    torch.manual_seed(1)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    return train(net, *digits, seed=1)


@pytest.fixture(scope="module")
def wnll_net(digits):
    """A digits CNN read through a WNLL head (bank of 1,000 training digits)."""
    return wnll_cnn(*digits)


@pytest.fixture(scope="module")
def models(cnn, wnll_net):
    """The model each registered attack is tested on: the WNLL net for the attacks designed against a
    WNLL head, the plain CNN for the others."""
    return lambda name: wnll_net if ATTACKS[name].wnll else cnn


@pytest.fixture(scope="module")
def batch(digits):
    """100 held-out digits (not used in training)."""
    x, y = digits
    return x[1500:1600], y[1500:1600]


def _no_grads(model):
    return all(p.grad is None for p in model.parameters())


# One case per attack of the registry (checked below), with budgets small enough for these tests.
L2_EPS = 1.5
ATTACK_CASES = {
    "fgsm": lambda m, x, y: fgsm(m, x, y, EPS),
    "ifgsm": lambda m, x, y: ifgsm(m, x, y, EPS, ALPHA, STEPS),
    "pgd": lambda m, x, y: pgd(m, x, y, EPS, ALPHA, STEPS, restarts=2, generator=torch.Generator().manual_seed(0)),
    "cw_l2": lambda m, x, y: cw_l2(m, x, y, c=1.0, steps=30, lr=0.05, binary_search_steps=3),
    "wnll_margin": lambda m, x, y: wnll_margin(m, x, y, EPS, ALPHA, STEPS),
    "wnll_margin_l2": lambda m, x, y: wnll_margin_l2(m, x, y, L2_EPS, 0.3, STEPS),
    "wnll_smooth": lambda m, x, y: wnll_smooth(m, x, y, EPS, ALPHA, STEPS),
    "square": lambda m, x, y: square(m, x, y, EPS, n_queries=200, generator=torch.Generator().manual_seed(0)),
    "autoattack": lambda m, x, y: autoattack(m, x, y, EPS),
}
BOUNDED = [name for name, spec in ATTACKS.items() if not spec.minimum_norm]
GRADIENT_MODE_ATTACKS = [name for name, spec in ATTACKS.items() if spec.takes_gradient_mode]


# ---------------------------------------------------------------- the registry


def test_every_registered_attack_has_a_test_case():
    assert set(ATTACK_CASES) == set(ATTACKS)


@pytest.mark.parametrize("name", list(ATTACKS))
def test_registry_entries_describe_themselves_consistently(name):
    import inspect

    spec = ATTACKS[name]
    assert spec.name == name and attack_spec(name) is spec
    assert spec.label and [s.label for s in ATTACKS.values()].count(spec.label) == 1
    assert spec.norm in NORMS and spec.protocols and set(spec.protocols) <= set(PROTOCOLS)
    parameters = inspect.signature(spec.function).parameters
    assert set(spec.settings) <= set(parameters)
    assert ("gradient" in parameters) == spec.takes_gradient_mode
    assert not (spec.wnll and "paper" in spec.protocols)  # the paper protocol has no stand-in for the head
    assert spec.takes_generator == ("generator" in parameters)
    if spec.iterative:
        assert {"steps", "alpha"} <= set(parameters)
    # its budget binds to the function for every dataset with a paper budget, and describes itself
    eps = None if spec.minimum_norm else 0.1
    for dataset, data in DATASET_SPECS.items():
        if data.budget is None and spec.iterative:
            with pytest.raises(ValueError, match="no default attack budget"):
                spec.kwargs(eps, dataset=dataset)
            continue
        kwargs = spec.kwargs(eps, dataset=dataset)
        get_attack(name, **kwargs)
        assert spec.describe(eps, kwargs).startswith(spec.label)
    if not spec.minimum_norm:
        with pytest.raises(ValueError, match=f"needs an {NORMS[spec.norm]} radius"):
            spec.kwargs(None, dataset="digits")
    with pytest.raises(ValueError, match=f"unknown {spec.label} settings"):
        spec.kwargs(eps, dataset="digits", settings={"no_such_setting": 1})


def test_a_registry_entry_calls_its_attack(cnn, batch):
    x, y = batch
    assert torch.equal(ATTACKS["fgsm"](cnn, x, y, eps=EPS), fgsm(cnn, x, y, EPS))


def test_unknown_attack_names_the_choices():
    with pytest.raises(ValueError, match="unknown attack 'deepfool'; choose one of fgsm, ifgsm, pgd, cw_l2"):
        get_attack("deepfool")


# ---------------------------------------------------------------- budgets and effect


@pytest.fixture(scope="module")
def crafted(models, batch):
    """Every attack's adversarial batch (crafted once for the module) on its model."""
    x, y = batch
    return {name: ATTACK_CASES[name](models(name), x.clone().requires_grad_(True), y) for name in ATTACKS}


@pytest.mark.parametrize("name", BOUNDED)
def test_bounded_attacks_stay_in_their_ball_and_the_box(crafted, batch, name):
    x, _ = batch
    adv = crafted[name]
    assert adv.shape == x.shape and adv.dtype == x.dtype and adv.device == x.device and not adv.requires_grad
    assert adv.min() >= 0 and adv.max() <= 1
    if ATTACKS[name].norm == "linf":
        assert (adv - x).abs().max() <= EPS + 1e-6
        assert (adv - x).abs().max() > EPS / 2  # it did move
    else:
        distance = (adv - x).flatten(1).norm(dim=1)
        assert distance.max() <= L2_EPS * (1 + 1e-5)
        assert distance.max() > L2_EPS / 2


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attacks_reduce_accuracy_of_a_trained_model(models, crafted, batch, name):
    x, y = batch
    clean = robust_accuracy(models(name), x, y)
    assert clean > 0.85
    assert robust_accuracy(models(name), crafted[name], y) < clean - 0.25


def test_cw_returns_valid_images_fooled_with_margin_or_untouched(cnn, batch):
    x, y = batch
    kappa = 1.0
    adv = cw_l2(cnn, x, y, c=0.1, kappa=kappa, steps=20, lr=0.05, binary_search_steps=2)  # fools some, not all
    assert adv.shape == x.shape and adv.dtype == x.dtype and not adv.requires_grad
    assert adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        out = cnn(adv)
    margin = out.gather(1, y[:, None]).squeeze(1) - out.scatter(1, y[:, None], float("-inf")).amax(1)
    changed = (adv != x).flatten(1).any(1)
    assert changed.any() and not changed.all()
    assert (margin[changed] < -kappa + 1e-5).all()  # every returned perturbation fools with margin kappa
    assert torch.equal(adv[~changed], x[~changed])


def test_cw_binary_search_finds_smaller_perturbations_than_a_fixed_c(cnn, batch):
    x, y = batch
    fixed = cw_l2(cnn, x, y, c=1.0, steps=50, lr=0.02, binary_search_steps=1)
    searched = cw_l2(cnn, x, y, c=1.0, steps=50, lr=0.02, binary_search_steps=4)
    both = (fixed != x).flatten(1).any(1) & (searched != x).flatten(1).any(1)
    assert both.sum() > 50
    norm = lambda a: (a - x)[both].flatten(1).norm(dim=1)  # noqa: E731
    assert (norm(searched) <= norm(fixed) + 1e-6).all()  # the first round is the fixed-c run: it can only improve
    assert norm(searched).mean() < 0.93 * norm(fixed).mean()


# ---------------------------------------------------------------- agreement with torchattacks


def test_fgsm_matches_torchattacks(cnn, batch):
    x, y = batch
    expected = torchattacks.FGSM(copy.deepcopy(cnn), eps=EPS)(x, y)
    torch.testing.assert_close(fgsm(cnn, x, y, EPS), expected, atol=1e-6, rtol=0)


def test_ifgsm_matches_torchattacks_bim(cnn, batch):
    x, y = batch
    expected = torchattacks.BIM(copy.deepcopy(cnn), eps=EPS, alpha=ALPHA, steps=STEPS)(x, y)
    torch.testing.assert_close(ifgsm(cnn, x, y, EPS, ALPHA, STEPS), expected, atol=1e-6, rtol=0)


def test_pgd_without_random_start_matches_torchattacks(cnn, batch):
    x, y = batch
    expected = torchattacks.PGD(copy.deepcopy(cnn), eps=EPS, alpha=ALPHA, steps=STEPS, random_start=False)(x, y)
    torch.testing.assert_close(pgd(cnn, x, y, EPS, ALPHA, STEPS, random_start=False), expected, atol=1e-6, rtol=0)


def test_cw_at_fixed_c_has_the_robust_accuracy_of_torchattacks(cnn, batch):
    # torchattacks.CW has no binary search and starts from atanh of the exact image: compare loosely.
    x, y = batch
    expected = torchattacks.CW(copy.deepcopy(cnn), c=1.0, kappa=0, steps=50, lr=0.01)(x, y)
    adv = cw_l2(cnn, x, y, c=1.0, kappa=0, steps=50, lr=0.01, binary_search_steps=1, abort_early=False)
    assert abs(robust_accuracy(cnn, adv, y) - robust_accuracy(cnn, expected, y)) <= 0.1


# ---------------------------------------------------------------- PGD restarts and randomness


def test_pgd_restarts_keep_the_worst_case_per_example(cnn, batch):
    x, y = batch
    eps = 0.08
    combined = pgd(cnn, x, y, eps, 0.02, 5, restarts=3, generator=torch.Generator().manual_seed(3))
    generator = torch.Generator().manual_seed(3)  # the same random starts, one restart per call
    singles = [pgd(cnn, x, y, eps, 0.02, 5, generator=generator) for _ in range(3)]
    with torch.no_grad():
        fooled = torch.stack([cnn(a).argmax(1) != y for a in singles])
        assert torch.equal(cnn(combined).argmax(1) != y, fooled.any(0))
    matches = torch.stack([(a == combined).flatten(1).all(1) for a in singles])
    assert matches.any(0).all()


def test_pgd_random_start_is_reproducible_with_a_generator(cnn, batch):
    x, y = batch
    run = lambda seed: pgd(cnn, x, y, EPS, ALPHA, 2, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    assert torch.equal(run(5), run(5))
    assert not torch.equal(run(5), run(6))


# ---------------------------------------------------------------- hygiene


class _Recorder(nn.Module):
    """Identity that records the train flag and the value of ``gradient`` seen in each forward."""

    def __init__(self):
        super().__init__()
        self.gradient = "surrogate"
        self.training_seen, self.gradient_seen = [], []

    def forward(self, x):
        self.training_seen.append(self.training)
        self.gradient_seen.append(self.gradient)
        return x


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attacks_run_in_eval_mode_restore_modes_and_leave_no_parameter_grads(batch, name):
    x, y = batch[0][:16], batch[1][:16]
    torch.manual_seed(0)
    recorder = _Recorder()
    if ATTACKS[name].wnll:
        head = WNLLHead(256, 10, k=5, k_sigma=4, gradient="exact")
        head.set_templates(torch.randn(60, 256), torch.arange(60) % 10)
    else:
        head = nn.Linear(256, 10)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        recorder,
        nn.Flatten(),
        nn.Dropout(0.5),
        head,
    )
    model.train()
    model[1].eval()  # a mixed state: frozen batch norm inside a training model
    flags = [m.training for m in model.modules()]
    stats = model[1].running_mean.clone()
    ATTACK_CASES[name](model, x, y)
    assert [m.training for m in model.modules()] == flags
    assert recorder.training_seen and not any(recorder.training_seen)
    assert torch.equal(model[1].running_mean, stats)
    assert _no_grads(model)
    assert recorder.gradient == "surrogate"
    if ATTACKS[name].wnll:  # the stand-in is gone: the head is back in wnll mode, without hooks
        assert head.mode == "wnll" and head.gradient == "exact" and not head._forward_hooks


def test_robust_accuracy_restores_modes_and_splits_batches(cnn, batch):
    x, y = batch
    model = copy.deepcopy(cnn).train()
    assert robust_accuracy(model, x, y, batch_size=7) == robust_accuracy(model, x, y)
    assert all(m.training for m in model.modules())
    assert _no_grads(model)


def test_correct_mask_moves_batches_to_the_device_and_checks_the_output(cnn, batch):
    x, y = batch
    mask = correct_mask(cnn, x, y, 7, device="cpu")
    assert mask.dtype == torch.bool and mask.shape == (100,)
    assert torch.equal(mask, cnn(x).argmax(1) == y)
    with pytest.raises(ValueError, match="out of range"):
        correct_mask(cnn, x, torch.full_like(y, 10), 50)


# ---------------------------------------------------------------- gradient mode


def test_gradient_mode_switches_every_head_and_restores():
    first, second = _Recorder(), _Recorder()
    second.gradient = "exact"
    model = nn.Sequential(first, nn.Sequential(second, nn.Identity()))
    with gradient_mode(model, "exact"):
        assert first.gradient == "exact" and second.gradient == "exact"
    assert first.gradient == "surrogate" and second.gradient == "exact"
    with pytest.raises(KeyError):
        with gradient_mode(model, "surrogate"):
            assert second.gradient == "surrogate"
            raise KeyError("inside")
    assert first.gradient == "surrogate" and second.gradient == "exact"


def test_gradient_mode_rejects_unknown_modes_and_models_without_heads():
    with pytest.raises(ValueError, match="must be one of"):
        with gradient_mode(nn.Sequential(_Recorder()), "linear"):
            pass
    with pytest.raises(ValueError, match="no submodule"):
        with gradient_mode(nn.Linear(2, 2), "exact"):
            pass


@pytest.mark.parametrize("name", GRADIENT_MODE_ATTACKS)
def test_attacks_use_the_requested_gradient_mode(cnn, batch, name):
    x, y = batch[0][:8], batch[1][:8]
    recorder = _Recorder()
    model = nn.Sequential(recorder, copy.deepcopy(cnn))
    attack = get_attack(name, **ATTACKS[name].kwargs(EPS, dataset="digits", steps=2, alpha=ALPHA))
    attack(model, x, y, gradient="exact")
    assert recorder.gradient_seen and set(recorder.gradient_seen) == {"exact"}
    assert recorder.gradient == "surrogate"
    with pytest.raises(ValueError, match="no submodule"):
        attack(cnn, x, y, gradient="exact")


# ---------------------------------------------------------------- BPDA and EOT


def _quantize(z):
    return torch.round(z * 4) / 4  # zero gradient almost everywhere


def _input_grad(model, x, y):
    x = x.clone().requires_grad_(True)
    return torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)[0]


def test_bpda_passes_the_gradient_through_the_preprocess_as_identity(cnn, batch):
    x, y = batch
    assert _input_grad(nn.Sequential(_Lambda(_quantize), cnn), x, y).abs().max() == 0  # plain autograd: nothing
    wrapped = BPDA(_quantize, cnn)
    loss, grad, out = loss_grad(wrapped, x, y, cross_entropy)
    with torch.no_grad():
        torch.testing.assert_close(out, cnn(_quantize(x)))
    torch.testing.assert_close(grad, _input_grad(cnn, _quantize(x), y))
    torch.testing.assert_close(fgsm(wrapped, x, y, EPS), (x + EPS * grad.sign()).clamp(0, 1))
    assert robust_accuracy(wrapped, ifgsm(wrapped, x, y, EPS, ALPHA, STEPS), y) < robust_accuracy(wrapped, x, y) - 0.25


def test_bpda_registers_a_module_preprocess_and_checks_its_shape(cnn, batch):
    x, y = batch
    recorder = _Recorder()
    wrapped = BPDA(recorder, cnn)
    with gradient_mode(wrapped, "exact"):
        assert recorder.gradient == "exact"
    with pytest.raises(ValueError, match="changed the shape"):
        fgsm(BPDA(lambda z: z[:, :, :4], cnn), x, y, EPS)
    with pytest.raises(TypeError, match="callable"):
        BPDA(3, cnn)


class _Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class _CyclingScale(nn.Module):
    """Controlled randomness: multiplies the input by the next factor of a fixed cycle on each call."""

    def __init__(self, factors):
        super().__init__()
        self.factors, self.calls = factors, 0

    def forward(self, x):
        factor = self.factors[self.calls % len(self.factors)]
        self.calls += 1
        return x * factor


def test_eot_gradient_is_the_mean_of_the_individual_gradients(cnn, batch):
    x, y = batch
    factors = [0.5, 1.0, 1.7]
    model = EOT(nn.Sequential(_CyclingScale(factors), cnn), samples=3)
    loss, grad, out = loss_grad(model, x, y, cross_entropy)
    fixed = [nn.Sequential(_Lambda(lambda z, f=f: z * f), cnn) for f in factors]
    torch.testing.assert_close(grad, torch.stack([_input_grad(m, x, y) for m in fixed]).mean(0))
    with torch.no_grad():
        torch.testing.assert_close(loss, torch.stack([cross_entropy(m(x), y) for m in fixed]).mean(0))
        mean_prob = torch.stack([torch.softmax(m(x), 1) for m in fixed]).mean(0)
        torch.testing.assert_close(out, mean_prob.log())
        torch.testing.assert_close(model(x), mean_prob.log())
    torch.testing.assert_close(fgsm(model, x, y, EPS), (x + EPS * grad.sign()).clamp(0, 1))
    assert _no_grads(cnn)


def test_cw_and_pgd_are_eot_aware(cnn, batch):
    # A deterministic model under EOT has the same mean gradient, and its log-mean-probabilities have
    # the same logit margins, so both attacks must give the model's own answer.
    x, y = batch[0][:32], batch[1][:32]
    twice = EOT(cnn, samples=2)
    kwargs = dict(c=1.0, steps=20, lr=0.05, binary_search_steps=2)
    torch.testing.assert_close(cw_l2(twice, x, y, **kwargs), cw_l2(cnn, x, y, **kwargs), atol=1e-5, rtol=0)
    run = lambda m: pgd(m, x, y, EPS, ALPHA, 5, restarts=2, generator=torch.Generator().manual_seed(0))  # noqa: E731
    torch.testing.assert_close(run(twice), run(cnn), atol=1e-6, rtol=0)


def test_eot_outside_bpda_averages_over_fresh_randomness(cnn, batch):
    x, y = batch[0][:8], batch[1][:8]
    scale = _CyclingScale([0.9, 1.1])
    model = EOT(BPDA(scale, cnn), samples=4)
    _, grad, _ = loss_grad(model, x, y, cross_entropy)
    assert scale.calls == 4
    expected = torch.stack([_input_grad(cnn, x * f, y) for f in [0.9, 1.1]]).mean(0)
    torch.testing.assert_close(grad, expected)


# ---------------------------------------------------------------- transfer and registry


def test_transfer_attack_crafted_on_one_model_fools_another(cnn, mlp, batch):
    x, y = batch
    x_adv = transfer_attack(cnn, x, y, "ifgsm", eps=0.2, alpha=0.02, steps=STEPS)
    torch.testing.assert_close(x_adv, ifgsm(cnn, x, y, 0.2, 0.02, STEPS), atol=0, rtol=0)
    clean = robust_accuracy(mlp, x, y)
    assert clean > 0.85
    assert robust_accuracy(mlp, x_adv, y) < clean - 0.15
    via_callable = transfer_attack(cnn, x, y, fgsm, eps=0.2)
    torch.testing.assert_close(via_callable, fgsm(cnn, x, y, 0.2), atol=0, rtol=0)
    assert _no_grads(cnn) and _no_grads(mlp)


def test_get_attack_binds_arguments(cnn, batch):
    x, y = batch
    torch.testing.assert_close(
        get_attack("ifgsm", eps=EPS, alpha=ALPHA, steps=3)(cnn, x, y), ifgsm(cnn, x, y, EPS, ALPHA, 3), atol=0, rtol=0
    )
    with pytest.raises(ValueError, match="fgsm, ifgsm, pgd, cw_l2"):
        get_attack("deepfool")
    with pytest.raises(TypeError, match="'pgd'"):
        get_attack("pgd", epsilon=0.3)


def test_cw_margin_values():
    out = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]])
    y = torch.tensor([0, 0])
    torch.testing.assert_close(cw_margin(out, y), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(cw_margin(out, y, kappa=2.0), torch.tensor([1.0, -2.0]))
    torch.testing.assert_close(logit_margin(out, y), torch.tensor([1.0, -5.0]))


# ---------------------------------------------------------------- errors


def _bad_calls(model, x, y):
    nan = x.clone()
    nan[0, 0, 0, 0] = float("nan")
    return [
        (lambda: fgsm(model, x * 2, y, 0.1), ValueError, r"\[0, 1\]"),
        (lambda: fgsm(model, x - 0.5, y, 0.1), ValueError, r"\[0, 1\]"),
        (lambda: fgsm(model, nan, y, 0.1), ValueError, "NaN"),
        (lambda: fgsm(model, x.long(), y, 0.1), TypeError, "floating"),
        (lambda: fgsm(model, x[0, 0, 0], y[:1], 0.1), ValueError, "2 dimensions"),
        (lambda: fgsm(model, x, y[:-1], 0.1), ValueError, "shape"),
        (lambda: fgsm(model, x, y[:, None], 0.1), ValueError, "shape"),
        (lambda: fgsm(model, x, y.int(), 0.1), TypeError, "int64"),
        (lambda: fgsm(model, x, y - 20, 0.1), ValueError, ">= 0"),
        (lambda: fgsm(model, x, y + 20, 0.1), ValueError, "out of range"),
        (lambda: fgsm(model, x, y, -0.1), ValueError, "eps"),
        (lambda: fgsm(model, x, y, float("nan")), ValueError, "eps"),
        (lambda: fgsm(model, x, y, "0.1"), TypeError, "eps"),
        (lambda: fgsm(lambda z: z, x, y, 0.1), TypeError, "nn.Module"),
        (lambda: fgsm(nn.Identity(), x, y, 0.1), ValueError, r"\[B, num_classes\]"),
        (lambda: ifgsm(model, x, y, 0.1, 0.0, 5), ValueError, "alpha"),
        (lambda: ifgsm(model, x, y, 0.1, 0.01, 0), ValueError, "steps"),
        (lambda: ifgsm(model, x, y, 0.1, 0.01, 2.5), TypeError, "steps"),
        (lambda: pgd(model, x, y, -1.0, 0.01, 5), ValueError, "eps"),
        (lambda: pgd(model, x, y, 0.1, -0.01, 5), ValueError, "alpha"),
        (lambda: pgd(model, x, y, 0.1, 0.01, 0), ValueError, "steps"),
        (lambda: pgd(model, x, y, 0.1, 0.01, 5, restarts=0), ValueError, "restarts"),
        (lambda: pgd(model, x, y, 0.1, 0.01, 5, random_start=False, restarts=2), ValueError, "random_start"),
        (lambda: pgd(model, x, y, 0.1, 0.01, 1, gradient="linear"), ValueError, "must be one of"),
        (lambda: cw_l2(model, x, y, c=0.0), ValueError, "c must"),
        (lambda: cw_l2(model, x, y, kappa=-1.0), ValueError, "kappa"),
        (lambda: cw_l2(model, x, y, lr=0.0), ValueError, "lr"),
        (lambda: cw_l2(model, x, y, steps=0), ValueError, "steps"),
        (lambda: cw_l2(model, x, y, binary_search_steps=0), ValueError, "binary_search_steps"),
        (lambda: EOT(model, samples=0), ValueError, "samples"),
        (lambda: EOT(lambda z: z), TypeError, "nn.Module"),
        (lambda: transfer_attack(model, x, y, 3), TypeError, "attack"),
        (lambda: transfer_attack(model, x, y, lambda m, a, b: a[:1]), ValueError, "shape"),
        (lambda: robust_accuracy(model, x, y, batch_size=0), ValueError, "batch_size"),
    ]


def test_bad_arguments_raise_clear_errors(cnn, batch):
    x, y = batch[0][:4], batch[1][:4]
    for call, error, match in _bad_calls(cnn, x, y):
        with pytest.raises(error, match=match):
            call()
    assert _no_grads(cnn)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_generator_on_another_device_is_rejected(cnn, batch):
    x, y = batch[0][:4], batch[1][:4]
    with pytest.raises(RuntimeError, match="generator"):
        pgd(cnn, x, y, 0.1, 0.01, 1, generator=torch.Generator(device="cuda"))


def test_device_mismatch_names_both_devices(cnn, batch):
    x, y = batch[0][:4], batch[1][:4]
    on_meta = copy.deepcopy(cnn).to("meta")
    with pytest.raises(RuntimeError, match="cpu.*meta"):
        fgsm(on_meta, x, y, 0.1)
    with pytest.raises(RuntimeError, match="meta"):
        fgsm(cnn, x, y.to("meta"), 0.1)


# ---------------------------------------------------------------- attacks designed against a WNLL head


@pytest.fixture(scope="module")
def wnll_batch(digits):
    """100 held-out digits for the WNLL net."""
    x, y = digits
    return x[1600:1700], y[1600:1700]


def test_wnll_attacks_succeed_where_the_exact_gradient_masks_itself(wnll_net, wnll_batch):
    """The exact WNLL gradient is a weak attack on this net; the two attacks built against the head are
    far stronger with the same budget (a test that fails if they are not)."""
    x, y = wnll_batch
    eps, alpha, steps = 0.2, 0.03, 10
    clean = robust_accuracy(wnll_net, x, y)
    exact = robust_accuracy(wnll_net, ifgsm(wnll_net, x, y, eps, alpha, steps, gradient="exact"), y)
    margin = robust_accuracy(wnll_net, wnll_margin(wnll_net, x, y, eps, alpha, steps), y)
    smooth = robust_accuracy(wnll_net, wnll_smooth(wnll_net, x, y, eps, alpha, steps), y)
    assert clean > 0.9 and exact > 0.45  # the exact gradient fails
    assert margin < exact - 0.35 and smooth < exact - 0.3


def test_wnll_attacks_run_through_bpda_and_eot(wnll_net, wnll_batch):
    x, y = wnll_batch[0][:40], wnll_batch[1][:40]
    scale = _CyclingScale([0.95, 1.0])
    model = EOT(BPDA(scale, wnll_net), samples=2)
    adv = wnll_margin(model, x, y, 0.2, 0.03, 3)
    assert scale.calls == 2 * 3  # every step averaged two fresh draws
    assert (adv - x).abs().max() <= 0.2 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert robust_accuracy(wnll_net, adv, y) < robust_accuracy(wnll_net, x, y) - 0.3


def test_head_stand_in_replaces_the_output_and_restores_the_head(wnll_net, wnll_batch):
    x, y = wnll_batch[0][:20], wnll_batch[1][:20]
    head = wnll_net[-1]
    features = wnll_net[:-1](x)
    with torch.no_grad():
        before = wnll_net(x)
        with head_stand_in(wnll_net, template_distance_scores):
            torch.testing.assert_close(wnll_net(x), template_distance_scores(head, features))
        assert head.mode == "wnll" and not head._forward_hooks
        torch.testing.assert_close(wnll_net(x), before)
    with pytest.raises(ValueError, match="no WNLL head"):
        with head_stand_in(nn.Linear(4, 2), template_distance_scores):
            pass
    linear_mode = copy.deepcopy(wnll_net)
    linear_mode[-1].mode = "linear"
    with pytest.raises(ValueError, match="linear mode"):
        wnll_margin(linear_mode, x, y, 0.1, 0.01, 1)
    empty = copy.deepcopy(wnll_net)
    empty[-1].clear_templates()
    with pytest.raises(ValueError, match="template bank"):
        wnll_smooth(empty, x, y, 0.1, 0.01, 1)


def test_template_distance_scores_against_a_float64_brute_force():
    torch.manual_seed(0)
    head = WNLLHead(6, 4, k=3, k_sigma=3, dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 2])  # class 1 has 2 templates, class 3 none
    bank = torch.randn(11, 6, dtype=torch.float64) + 1e4  # a large common offset
    head.set_templates(bank, labels)
    features = bank[:5] + 0.3 * torch.randn(5, 6, dtype=torch.float64)
    scores = template_distance_scores(head, features.float())
    squared = ((features[:, None] - bank[None]) ** 2).sum(-1)
    scale = squared.sort(1).values[:, :3].mean(1)
    expected = torch.stack([-squared[:, labels == c].sort(1).values[:, :3].mean(1) / scale for c in range(3)], 1)
    torch.testing.assert_close(scores[:, :3].double(), expected, rtol=1e-3, atol=1e-3)
    assert torch.isinf(scores[:, 3]).all() and (scores[:, 3] < 0).all()
    assert scores.dtype == torch.float32


def test_smoothed_scores_are_the_interpolation_with_a_softer_graph(wnll_net, wnll_batch):
    from fastwnll.wnll.interpolate import wnll_interpolate

    head = wnll_net[-1]
    features = wnll_net[:-1](wnll_batch[0][:30])
    probs = wnll_interpolate(head.template_features, head.template_labels, features, k=60, k_sigma=61, num_classes=10)
    torch.testing.assert_close(smoothed_interpolation_scores(head, features), probs.clamp_min(1e-8).log())
    with pytest.raises(ValueError, match="k_sigma"):
        smoothed_interpolation_scores(head, features, k=10, k_sigma=12)


def test_margin_loss_grows_as_the_example_is_misclassified():
    out = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]])
    torch.testing.assert_close(margin_loss(out, torch.tensor([0, 0])), torch.tensor([-1.0, 5.0]))


def test_l2_margin_attack_projects_onto_the_ball(wnll_net, wnll_batch):
    x, y = wnll_batch[0][:30], wnll_batch[1][:30]
    adv = wnll_margin_l2(wnll_net, x, y, 0.5, 0.4, 5, random_start=True, generator=torch.Generator().manual_seed(1))
    distance = (adv - x).flatten(1).norm(dim=1)
    assert distance.max() <= 0.5 * (1 + 1e-5) and distance.min() > 0.25
    assert adv.min() >= 0 and adv.max() <= 1


# ---------------------------------------------------------------- torchattacks cross-checks


def test_square_is_gradient_free_and_reproducible(cnn, batch):
    x, y = batch[0][:30], batch[1][:30]

    def run(seed):
        return square(
            _Lambda(lambda z: cnn(z.detach())), x, y, EPS, n_queries=30, generator=torch.Generator().manual_seed(seed)
        )

    state = torch.random.get_rng_state()
    assert torch.equal(run(1), run(1))  # a model without a gradient path still works
    assert torch.equal(torch.random.get_rng_state(), state)  # torchattacks' global seeding was undone
    assert not torch.equal(run(1), run(2))


def test_square_attacks_a_wnll_model_as_deployed(wnll_net, wnll_batch):
    x, y = wnll_batch
    adv = square(wnll_net, x, y, 0.2, n_queries=100)
    assert (adv - x).abs().max() <= 0.2 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert robust_accuracy(wnll_net, adv, y) < robust_accuracy(wnll_net, x, y) - 0.2


def test_a_missing_torchattacks_names_the_extra(monkeypatch, cnn, batch):
    x, y = batch[0][:4], batch[1][:4]
    monkeypatch.setitem(sys.modules, "torchattacks", None)  # "import torchattacks" now raises ImportError
    for call in (
        lambda: square(cnn, x, y, EPS),
        lambda: autoattack(cnn, x, y, EPS),
        lambda: ATTACKS["square"].check_available(),
    ):
        with pytest.raises(ImportError, match=r"torchattacks.*pip install 'fastwnll\[eval\]'"):
            call()
    ATTACKS["ifgsm"].check_available()  # attacks without a library are unaffected


def test_new_attack_arguments_raise_clear_errors(cnn, wnll_net, batch):
    x, y = batch[0][:4], batch[1][:4]
    for call, error, match in [
        (lambda: wnll_margin(wnll_net, x, y, -0.1, 0.01, 2), ValueError, "eps"),
        (lambda: wnll_margin(wnll_net, x, y, 0.1, 0.01, 2, neighbours=0), ValueError, "neighbours"),
        (lambda: wnll_margin(cnn, x, y, 0.1, 0.01, 2), ValueError, "no WNLL head"),
        (lambda: wnll_smooth(wnll_net, x, y, 0.1, 0.0, 2), ValueError, "alpha"),
        (lambda: wnll_smooth(wnll_net, x, y, 0.1, 0.01, 2, k=0), ValueError, "k must"),
        (lambda: square(cnn, x, y, 0.1, n_queries=0), ValueError, "n_queries"),
        (lambda: square(cnn, x, y, 0.1, p_init=1.5), ValueError, "p_init"),
        (lambda: autoattack(cnn, x * 2, y, 0.1), ValueError, r"\[0, 1\]"),
    ]:
        with pytest.raises(error, match=match):
            call()


@pytest.mark.parametrize("inference", ["transductive", "inductive"])
def test_wnll_smooth_moves_every_image_when_whole_neighbourhoods_share_a_class(inference):
    """Templates in one tight cluster per class: even the softened graph (4 k neighbours) of every image
    holds one class, so the softened interpolation is one-hot and its own gradient exactly zero, at
    every batch size. The stand-in then follows the distance margin for those images: every image has
    a nonzero direction, and the attack crosses to another cluster within eps."""
    from digits_models import clustered_wnll

    from fastwnll.attacks.wnll import SmoothStandIn, one_hot_rows

    model, x, y = clustered_wnll(inference)
    head = model[-1]
    assert one_hot_rows(smoothed_interpolation_scores(head, model[0](x))).all()  # the case the fallback is for
    for batch in (1, 7, 40):
        with head_stand_in(model, SmoothStandIn()):
            parts = [loss_grad(model, x[s : s + batch], y[s : s + batch], margin_loss)[1] for s in range(0, 40, batch)]
        grads = torch.cat(parts)
        assert (grads.flatten(1).abs().amax(1) > 0).all(), f"zero stand-in gradients at batch {batch}"
    assert robust_accuracy(model, x, y, batch_size=1) == 1.0
    adv = wnll_smooth(model, x, y, 0.35, 0.05, 10)
    assert (adv - x).abs().max() <= 0.35 + 1e-6
    assert robust_accuracy(model, adv, y, batch_size=1) <= 0.1


def test_wnll_smooth_on_an_inductive_model_does_not_depend_on_the_batch_size(digits):
    """A model whose outputs do not depend on the batch (row-independent layers, an inductive head):
    the attack's stand-in scores each image against the bank alone too, so each image's adversarial
    example, and the robust accuracy, are the same bits at batch 1, 6 and 60 (the transductive
    stand-in gave other numbers at each batch size, its gradient exactly zero at batch 1 for many)."""
    from digits_models import row_mlp_wnll

    model = row_mlp_wnll(*digits)
    x, y = digits[0][1600:1660], digits[1][1600:1660]
    whole = wnll_smooth(model, x, y, 0.1, 0.02, 5)
    one_by_one = torch.cat([wnll_smooth(model, x[i : i + 1], y[i : i + 1], 0.1, 0.02, 5) for i in range(60)])
    sixes = torch.cat([wnll_smooth(model, x[i : i + 6], y[i : i + 6], 0.1, 0.02, 5) for i in range(0, 60, 6)])
    assert torch.equal(one_by_one, whole) and torch.equal(sixes, whole)
    assert robust_accuracy(model, whole, y) < robust_accuracy(model, x, y) - 0.2


def test_stand_in_of_a_registered_attack_is_what_it_crafts_on(wnll_net, wnll_batch):
    from fastwnll.attacks.wnll import STAND_INS, SmoothStandIn, stand_in_for

    assert set(STAND_INS) == {name for name, spec in ATTACKS.items() if spec.wnll}
    x = wnll_batch[0][:10]
    head, features = wnll_net[-1], wnll_net[:-1](x)
    torch.testing.assert_close(
        stand_in_for("wnll_margin", {"neighbours": 3, "eps": 0.1})(head, features),
        template_distance_scores(head, features, 3),
    )
    torch.testing.assert_close(
        stand_in_for("wnll_smooth", {"k": 30, "k_sigma": None})(head, features), SmoothStandIn(30)(head, features)
    )
    with pytest.raises(ValueError, match="not an attack on a WNLL stand-in"):
        stand_in_for("pgd", {})
