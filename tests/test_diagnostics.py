"""Masking diagnostics (zero gradients, randomness without EOT, an attack much weaker than another of its
cell) and the worst case over every attack of a cell, on small digits models built here."""

import pytest
import torch
from digits_models import HardArgmax, load_digits, plain_cnn, wnll_cnn

from fastwnll.evaluation import Evaluator, Target, resolve
from fastwnll.evaluation.diagnostics import (
    WEAKER_MIN_IMAGES,
    MaskingWarning,
    diagnose,
    gradient_checks,
    row_diagnostics,
    warn,
    weaker_attacks,
)
from fastwnll.evaluation.grid import WORST, with_worst_case
from fastwnll.train import TrainConfig

pytest.importorskip("torchattacks")
pytest.importorskip("sklearn.datasets")

pytestmark = pytest.mark.usefixtures("one_thread")

FAST_TVM = {"iters": 20}
SQUARE = {"n_queries": 300}


def _target(name, model, head="linear"):
    return Target(
        name=name, model=model, config=TrainConfig(dataset="digits"), head=head, num_classes=10, path="-", finished=True
    )


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.fixture(scope="module")
def cnn(digits):
    return plain_cnn(*digits)


@pytest.fixture(scope="module")
def evaluator(digits):
    x, y = digits
    return Evaluator(x[1500:1600], y[1500:1600], dataset="digits", tvm=FAST_TVM, batch_size=100)


def _cell(evaluator, target, attacks, defense="none", protocols=("paper",), eot=None, eps=0.2):
    entries = []
    for attack in attacks:
        for protocol in protocols:
            setting = resolve(protocol, target.model, defense, eot=eot)
            settings = SQUARE if attack == "square" else None
            entries.append(
                evaluator.evaluate_with_mask(target, attack, eps, defense, setting, steps=10, settings=settings)
            )
    return entries


def test_diagnostics_fire_on_a_hard_argmax_model(cnn, evaluator):
    masked = _target("masked", HardArgmax(cnn))
    entries = _cell(evaluator, masked, ["ifgsm", "square"])
    ifgsm_row, square_row = entries[0][0], entries[1][0]
    assert ifgsm_row["zero_gradient_share"] == 1.0 and "zero_gradient_share" not in square_row
    assert ifgsm_row["robust_accuracy"] > square_row["robust_accuracy"] + 0.15  # the gradient attack cannot move
    found = diagnose(entries)
    assert [d["check"] for d in found] == ["zero-gradients", "weaker-attack"]
    assert "exactly zero for 100 %" in found[0]["message"] and "hard decision" in found[0]["message"]
    assert found[1]["attack"] == "ifgsm" and found[1]["stronger"] == "square (paper)"
    assert "gradient-free Square succeeds where the gradient fails" in found[1]["message"]
    with pytest.warns(MaskingWarning, match="exactly zero"):
        warn(found)


def test_diagnostics_stay_silent_on_a_plain_cnn(cnn, evaluator):
    entries = _cell(evaluator, _target("cnn", cnn), ["fgsm", "ifgsm", "square"])
    assert entries[1][0]["zero_gradient_share"] == 0.0 and entries[1][0]["prediction_changes"] == 0.0
    assert entries[1][0]["robust_accuracy"] < 0.2  # the attacks work
    assert diagnose(entries) == []


def test_randomness_without_eot_is_reported_and_eot_silences_it(cnn, evaluator):
    target = _target("cnn", cnn)
    ((row, _),) = _cell(evaluator, target, ["ifgsm"], defense="tvm", protocols=("adaptive",), eot=1)
    assert row["eot"] == 1 and row["prediction_changes"] > 0
    assert [d["check"] for d in row_diagnostics(row)] == ["randomness-without-eot"]
    ((row, _),) = _cell(evaluator, target, ["ifgsm"], defense="tvm", protocols=("adaptive",), eot=2)
    assert row["prediction_changes"] is None and row_diagnostics(row) == []
    # the paper protocol crafts on the undefended (deterministic) network: nothing random to average
    ((row, _),) = _cell(evaluator, target, ["ifgsm"], defense="tvm", protocols=("paper",))
    assert row["prediction_changes"] == 0.0


def test_gradient_checks_count_examples(cnn, digits):
    x, y = digits[0][:30], digits[1][:30]
    checks = gradient_checks(HardArgmax(cnn), x, y, 7, gradient=None, eot=1)
    assert checks == {"zero_gradient_share": 1.0, "prediction_changes": 0.0}
    assert gradient_checks(cnn, x, y, 30, gradient=None, eot=4)["prediction_changes"] is None


def test_the_exact_wnll_gradient_is_named_as_the_cause(digits, evaluator):
    target = _target("wnll", wnll_cnn(*digits), head="wnll")
    entries = _cell(evaluator, target, ["ifgsm"], protocols=("paper", "adaptive"))
    entries += _cell(evaluator, target, ["wnll_margin"], protocols=("adaptive",))
    assert entries[2][0]["gradient"] is None  # the stand-in attack has no WNLL gradient mode
    found = [d for d in diagnose(entries) if d["check"] == "weaker-attack"]
    assert [d["gradient"] for d in found] == ["exact"]
    assert "exact gradient through the WNLL interpolation vanishes" in found[0]["message"]


def test_square_queries_a_tvm_defended_wnll_model_as_deployed(digits, evaluator):
    target = _target("wnll", wnll_cnn(*digits), head="wnll")
    row = evaluator.evaluate(
        target, "square", 0.2, "tvm", resolve("adaptive", target.model, "tvm", eot=4), n=40, settings=SQUARE
    )
    assert (row["tvm_attack"], row["eot"], row["gradient"]) == ("deployed", 1, None)
    assert row["robust_accuracy"] < row["clean_accuracy"]
    assert "zero_gradient_share" not in row and "n_queries" not in row and "300 queries" in row["budget"]


class _Quantize(torch.nn.Module):
    """Flatten, then round to a grid of 1/4: a hard step whose input gradient is exactly zero."""

    def forward(self, x):
        return torch.round(x.flatten(1) * 4) / 4


def test_stand_in_zero_gradients_of_wnll_attacks_are_counted_and_named():
    """The attacks on a stand-in for the head get the zero-gradient check of their own gradient: none
    on a model whose neighbourhoods are all of one class (wnll_smooth's fallback), all on a model
    whose trunk quantizes its input, each attack named."""
    from digits_models import clustered_wnll

    model, x, y = clustered_wnll("inductive")
    evaluator = Evaluator(x, y, dataset="digits", batch_size=8)
    healthy = _target("clustered", model, head="wnll")
    setting = resolve("adaptive", model, "none")
    row = evaluator.evaluate(healthy, "wnll_smooth", 0.35, "none", setting, steps=5)
    assert row["zero_gradient_share"] == 0.0 and row["prediction_changes"] == 0.0
    assert row["robust_accuracy"] <= 0.1 and not row_diagnostics(row)
    quantized = _target("quantized", clustered_wnll("inductive", trunk=_Quantize())[0], head="wnll")
    entries = [
        evaluator.evaluate_with_mask(quantized, attack, 0.05, "none", setting, steps=3)
        for attack in ("wnll_smooth", "wnll_margin", "wnll_margin_l2")
    ]
    assert [row["zero_gradient_share"] for row, _ in entries] == [1.0, 1.0, 1.0]
    found = [d for d in diagnose(entries) if d["check"] == "zero-gradients"]
    assert [d["attack"] for d in found] == ["wnll_smooth", "wnll_margin", "wnll_margin_l2"]
    assert (
        "the stand-in of WNLL-smooth has an exactly zero input gradient for 100 % of the images (40 of 40)"
        in (found[0]["message"])
    )
    assert "stand-in of WNLL-margin-L2" in found[2]["message"]


def _row(attack, protocol, gradient=None, tvm_attack=None, n=40, robust=0.5):
    return {
        "model": "m",
        "defense": "none",
        "protocol": protocol,
        "attack": attack,
        "norm": "linf",
        "eps": 0.3,
        "gradient": gradient,
        "tvm_attack": tvm_attack,
        "eot": 1,
        "n": n,
        "clean_accuracy": 0.9,
        "robust_accuracy": robust,
        "budget": attack,
    }


def test_worst_case_rows_take_every_attack_of_a_cell_on_the_common_prefix():
    paper = torch.tensor([True, True, False, True] * 10)
    adaptive = torch.tensor([True, False, True, True] * 10)
    square = torch.tensor([False, True, True, True] * 5)  # 20 images: the first half
    entries = [
        (_row("ifgsm", "paper", "surrogate"), paper),
        (_row("ifgsm", "adaptive", "exact"), adaptive),
        (_row("square", "paper", n=20), square),
    ]
    rows = with_worst_case(entries)
    assert [r["protocol"] for r in rows] == ["paper", "adaptive", "paper", "worst-case", "worst-case", "worst-case"]
    ifgsm, square_worst, worst = rows[3:]
    assert ifgsm["attack"] == "ifgsm" and ifgsm["n"] == 40 and ifgsm["gradient"] == "surrogate|exact"
    assert ifgsm["robust_accuracy"] == pytest.approx(0.5)
    assert square_worst["robust_accuracy"] == pytest.approx(0.75) and square_worst["n"] == 20
    assert worst["attack"] == WORST["linf"] and worst["n"] == 20 and worst["budget"] is None
    assert worst["runs"] == ["ifgsm/paper", "ifgsm/adaptive", "square/paper"]
    assert worst["robust_accuracy"] == pytest.approx(float((paper & adaptive)[:20].logical_and(square).float().mean()))


def test_weaker_attack_check_ignores_small_counts_single_steps_and_tvm_ignored():
    strong = torch.zeros(40, dtype=torch.bool)
    weak = torch.zeros(40, dtype=torch.bool)
    weak[: WEAKER_MIN_IMAGES - 1] = True  # too few images
    assert weaker_attacks([(_row("ifgsm", "adaptive", "exact"), weak), (_row("ifgsm", "paper"), strong)]) == []
    weak[:20] = True
    assert len(weaker_attacks([(_row("ifgsm", "adaptive", "exact"), weak), (_row("ifgsm", "paper"), strong)])) == 1
    assert weaker_attacks([(_row("fgsm", "paper"), weak), (_row("ifgsm", "paper"), strong)]) == []
    assert weaker_attacks([(_row("square", "paper"), weak), (_row("ifgsm", "paper"), strong)]) == []
    ignored = _row("ifgsm", "paper", tvm_attack="ignored")
    assert weaker_attacks([(ignored, weak), (_row("ifgsm", "adaptive", tvm_attack="bpda"), strong)]) == []
