"""Attacks: budgets, agreement with torchattacks, BPDA/EOT wrappers, gradient modes, hygiene, errors."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastwnll.attacks import (
    ATTACKS, BPDA, EOT, NORMS, PROTOCOLS, attack_spec, correct_mask, cross_entropy, cw_l2, cw_margin, fgsm, get_attack,
    gradient_mode, ifgsm, logit_margin, loss_grad, pgd, robust_accuracy, transfer_attack,
)
from fastwnll.data import DATASET_SPECS

torchattacks = pytest.importorskip("torchattacks")
sklearn_datasets = pytest.importorskip("sklearn.datasets")

EPS, ALPHA, STEPS = 0.15, 0.02, 10


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits():
    """sklearn's 8x8 digits as images x [1797, 1, 8, 8] float32 in [0, 1] and labels y [1797] int64."""
    data = sklearn_datasets.load_digits()
    return torch.tensor(data.images, dtype=torch.float32)[:, None] / 16, torch.tensor(data.target)


def _train(net, x, y, steps=200, seed=0):
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(steps):
        idx = torch.randint(0, 1500, (128,))
        loss = F.cross_entropy(net(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return net.eval()


@pytest.fixture(scope="module")
def cnn(digits):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(128, 10))
    return _train(net, *digits)


@pytest.fixture(scope="module")
def mlp(digits):
    torch.manual_seed(1)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    return _train(net, *digits, seed=1)


@pytest.fixture(scope="module")
def batch(digits):
    """100 held-out digits (not used in training)."""
    x, y = digits
    return x[1500:1600], y[1500:1600]


def _no_grads(model):
    return all(p.grad is None for p in model.parameters())


# One case per attack of the registry (checked below), with budgets small enough for these tests.
ATTACK_CASES = {
    "fgsm": lambda m, x, y: fgsm(m, x, y, EPS),
    "ifgsm": lambda m, x, y: ifgsm(m, x, y, EPS, ALPHA, STEPS),
    "pgd": lambda m, x, y: pgd(m, x, y, EPS, ALPHA, STEPS, restarts=2, generator=torch.Generator().manual_seed(0)),
    "cw_l2": lambda m, x, y: cw_l2(m, x, y, c=1.0, steps=30, lr=0.05, binary_search_steps=3),
}
BOUNDED_LINF = [name for name, spec in ATTACKS.items() if spec.norm == "linf" and not spec.minimum_norm]
GRADIENT_ATTACKS = [name for name, spec in ATTACKS.items() if spec.gradient]


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
    assert ("gradient" in parameters) == spec.gradient
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

@pytest.mark.parametrize("name", BOUNDED_LINF)
def test_linf_attacks_stay_in_the_eps_ball_and_the_box(cnn, batch, name):
    x, y = batch
    adv = ATTACK_CASES[name](cnn, x.clone().requires_grad_(True), y)
    assert adv.shape == x.shape and adv.dtype == x.dtype and adv.device == x.device and not adv.requires_grad
    assert (adv - x).abs().max() <= EPS + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    assert (adv - x).abs().max() > EPS / 2  # it did move


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attacks_reduce_accuracy_of_a_trained_model(cnn, batch, name):
    x, y = batch
    clean = robust_accuracy(cnn, x, y)
    assert clean > 0.85
    assert robust_accuracy(cnn, ATTACK_CASES[name](cnn, x, y), y) < clean - 0.25


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
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), recorder, nn.Flatten(), nn.Dropout(0.5),
        nn.Linear(256, 10),
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


@pytest.mark.parametrize("name", GRADIENT_ATTACKS)
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
    torch.testing.assert_close(get_attack("ifgsm", eps=EPS, alpha=ALPHA, steps=3)(cnn, x, y),
                               ifgsm(cnn, x, y, EPS, ALPHA, 3), atol=0, rtol=0)
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
