"""Robustness evaluation: the attack and report commands, defended models (TVM with BPDA and EOT),
protocols, transfer attacks, the report files, and the errors. Tiny digits models trained here."""

import dataclasses
import json
import re
from types import SimpleNamespace

import pytest
import torch

from fastwnll.attacks import ATTACKS, BPDA, EOT, cross_entropy, gradient_mode, ifgsm, loss_grad
from fastwnll.cli import main
from fastwnll.evaluation import (
    DEFENSES,
    PROTOCOLS,
    Evaluator,
    GridConfig,
    TVMDefense,
    attack_target,
    defended,
    eval_data,
    load_target,
    resolve,
    run_grid,
    write_report,
)
from fastwnll.evaluation.budgets import attack_kwargs
from fastwnll.evaluation.grid import cells
from fastwnll.evaluation.report import column_label
from fastwnll.evaluation.targets import check_same_data
from fastwnll.nn.head import WNLLHead
from fastwnll.train import TrainConfig, train

pytest.importorskip("sklearn.datasets")

FAST_TVM = {"iters": 20}


pytestmark = pytest.mark.usefixtures("one_thread")


def _train(out, **kwargs):
    config = TrainConfig(dataset="digits", epochs=15, lr=0.05, batch_size=64, device="cpu", out=str(out), **kwargs)
    return train(config, progress=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A WNLL-head digits CNN (stage 1 + one WNLL epoch) and a separately trained linear-head one."""
    root = tmp_path_factory.mktemp("runs")
    wnll = _train(root / "wnll", head="wnll", stage2_epochs=1, templates=500)
    linear = _train(root / "linear", head="linear", seed=1)
    assert wnll["test_accuracy"] > 0.8 and linear["test_accuracy"] > 0.8
    return {"wnll": str(root / "wnll"), "linear": str(root / "linear"), "wnll_summary": wnll}


@pytest.fixture(scope="module")
def wnll(runs):
    return load_target(runs["wnll"], name="wnll", device="cpu")


@pytest.fixture(scope="module")
def linear(runs):
    return load_target(runs["linear"], name="linear", device="cpu")


def _robust(stdout: str) -> float:
    match = re.search(r"robust accuracy\s+([0-9.]+)", stdout)
    assert match, stdout
    return float(match.group(1))


def _clean(stdout: str) -> float:
    return float(re.search(r"clean accuracy\s+([0-9.]+)", stdout).group(1))


# ------------------------------------------------------------------------------------------- CLI attack


def test_attack_cli_prints_robust_accuracy(runs, tmp_path, capsys):
    out = tmp_path / "row.json"
    assert (
        main(
            [
                "attack",
                "--checkpoint",
                runs["linear"],
                "--attack",
                "ifgsm",
                "--eps",
                "0.1",
                "--steps",
                "5",
                "--n",
                "80",
                "--device",
                "cpu",
                "--no-progress",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    stdout = capsys.readouterr().out
    row = json.loads(out.read_text())
    assert _robust(stdout) == pytest.approx(row["robust_accuracy"], abs=1e-4)
    assert row["n"] == 80 and row["attack"] == "ifgsm" and row["eps"] == 0.1 and row["gradient"] is None
    assert row["robust_accuracy"] < row["clean_accuracy"]  # 5 steps at eps 0.1 fool some digits
    # the printed number is the accuracy of the model on the attack's own examples
    target = load_target(runs["linear"], device="cpu")
    x, y = eval_data(target, 80)
    x_adv = ifgsm(target.model, x, y, 0.1, 0.02, 5)
    assert row["robust_accuracy"] == pytest.approx(float((target.model(x_adv).argmax(1) == y).float().mean()))


def test_attack_cli_eps_zero_is_clean_accuracy(runs, capsys):
    assert (
        main(
            [
                "attack",
                "--checkpoint",
                runs["wnll"],
                "--attack",
                "fgsm",
                "--eps",
                "0",
                "--n",
                "60",
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == 0
    )
    stdout = capsys.readouterr().out
    assert _robust(stdout) == _clean(stdout)
    assert "exact WNLL gradient" in stdout and "surrogate WNLL gradient" in stdout  # worst-case runs both


def test_attack_cli_worst_case_is_the_default_and_bounds_both_protocols(runs, tmp_path, capsys):
    out = tmp_path / "row.json"
    assert (
        main(
            [
                "attack",
                "--checkpoint",
                runs["wnll"],
                "--attack",
                "ifgsm",
                "--eps",
                "0.15",
                "--steps",
                "5",
                "--n",
                "60",
                "--device",
                "cpu",
                "--no-progress",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    stdout = capsys.readouterr().out
    row = json.loads(out.read_text())
    assert row["protocol"] == "worst-case" and set(row["protocols"]) == {"paper", "adaptive"}
    assert row["wnll_graph"]["templates"] == 500 and row["wnll_graph"]["queries_per_graph"] == 500
    assert "WNLL graphs: 500 templates + up to 500 queries per graph (transductive" in stdout
    per_protocol = [r["robust_accuracy"] for r in row["protocols"].values()]
    assert row["robust_accuracy"] <= min(per_protocol)
    assert _robust(stdout) == pytest.approx(row["robust_accuracy"], abs=1e-4)
    for protocol in ("paper", "adaptive"):
        assert (
            main(
                [
                    "attack",
                    "--checkpoint",
                    runs["wnll"],
                    "--attack",
                    "ifgsm",
                    "--eps",
                    "0.15",
                    "--steps",
                    "5",
                    "--n",
                    "60",
                    "--device",
                    "cpu",
                    "--no-progress",
                    "--protocol",
                    protocol,
                ]
            )
            == 0
        )
        assert _robust(capsys.readouterr().out) == pytest.approx(
            row["protocols"][protocol]["robust_accuracy"], abs=1e-4
        )


def test_attack_cli_worst_case_rejects_one_gradient(runs, capsys):
    assert (
        main(
            [
                "attack",
                "--checkpoint",
                runs["wnll"],
                "--attack",
                "fgsm",
                "--eps",
                "0.1",
                "--device",
                "cpu",
                "--no-progress",
                "--gradient",
                "exact",
            ]
        )
        == 1
    )
    assert "worst-case runs both" in capsys.readouterr().err
    assert (
        main(
            [
                "attack",
                "--checkpoint",
                runs["wnll"],
                "--attack",
                "fgsm",
                "--eps",
                "0.1",
                "--device",
                "cpu",
                "--no-progress",
                "--protocol",
                "best",
            ]
        )
        == 1
    )
    assert "unknown protocol 'best'" in capsys.readouterr().err


def test_attack_cli_wnll_smooth_on_an_inductive_model_does_not_depend_on_the_batch_size(runs, tmp_path, capsys):
    """``attack --attack wnll_smooth --inference inductive`` gives the same robust accuracy at
    --batch-size 1 and 40 (its softened stand-in used to be transductive, with an exactly zero gradient
    for most images at small batches: a far higher robust accuracy at batch 1), and its stand-in
    gradient is checked: nonzero for every image. (The network's own matrix products round a few ulps
    differently with the batch size: one image may differ on another machine.)"""
    rows = []
    for batch in ("1", "40"):
        out = tmp_path / f"smooth_{batch}.json"
        argv = ["attack", "--checkpoint", runs["wnll"], "--attack", "wnll_smooth", "--inference", "inductive"]
        argv += ["--eps", "0.2", "--steps", "4", "--n", "40", "--batch-size", batch, "--device", "cpu", "--no-progress"]
        assert main(argv + ["--json", str(out)]) == 0
        capsys.readouterr()
        rows.append(json.loads(out.read_text()))
    assert abs(rows[0]["robust_accuracy"] - rows[1]["robust_accuracy"]) <= 1 / 40
    assert rows[0]["zero_gradient_share"] == rows[1]["zero_gradient_share"] == 0.0
    assert not rows[0]["diagnostics"] and rows[0]["robust_accuracy"] < 0.5


def test_attack_cli_transfer_between_checkpoints(runs, wnll, linear, capsys):
    assert (
        main(
            [
                "attack",
                "--checkpoint",
                runs["wnll"],
                "--transfer-from",
                runs["linear"],
                "--attack",
                "ifgsm",
                "--eps",
                "0.15",
                "--steps",
                "5",
                "--n",
                "60",
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == 0
    )
    stdout = capsys.readouterr().out
    assert "transfer from" in stdout
    # same number as crafting on the linear source and evaluating the WNLL target by hand
    x, y = eval_data(wnll, 60)
    x_adv = ifgsm(linear.model, x, y, 0.15, 0.03, 5)
    with torch.no_grad():
        expected = float((wnll.model(x_adv).argmax(1) == y).float().mean())
    assert _robust(stdout) == pytest.approx(expected, abs=1e-4)


def test_attack_cli_cw_reports_distance(runs, capsys):
    assert (
        main(
            [
                "attack",
                "--checkpoint",
                runs["linear"],
                "--attack",
                "cw_l2",
                "--steps",
                "30",
                "--lr",
                "0.05",
                "--n",
                "30",
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == 0
    )
    stdout = capsys.readouterr().out
    assert "median L2" in stdout and _robust(stdout) < _clean(stdout)


def test_attack_cli_tvm_adaptive_runs(runs, capsys):
    assert (
        main(
            [
                "attack",
                "--checkpoint",
                runs["wnll"],
                "--attack",
                "fgsm",
                "--eps",
                "0.1",
                "--defense",
                "tvm",
                "--eot",
                "2",
                "--tvm-iters",
                "10",
                "--n",
                "40",
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == 0
    )
    stdout = capsys.readouterr().out
    assert "BPDA through TVM + EOT over 2 masks" in stdout and 0 <= _robust(stdout) <= 1


def test_attack_cli_runs_a_wnll_attack_under_the_adaptive_protocol(runs, tmp_path, capsys):
    out = tmp_path / "row.json"
    assert (
        main(
            [
                "attack",
                "--checkpoint",
                runs["wnll"],
                "--attack",
                "wnll_margin",
                "--eps",
                "0.15",
                "--steps",
                "5",
                "--n",
                "40",
                "--device",
                "cpu",
                "--no-progress",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    stdout = capsys.readouterr().out
    row = json.loads(out.read_text())
    assert row["protocol"] == "adaptive" and row["gradient"] is None and row["diagnostics"] == []
    assert "WNLL-margin, L_inf eps 0.15, 5 steps" in stdout and row["robust_accuracy"] < row["clean_accuracy"]
    assert (
        main(
            [
                "attack",
                "--checkpoint",
                runs["linear"],
                "--attack",
                "wnll_smooth",
                "--eps",
                "0.1",
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == 1
    )
    assert "no WNLL head" in capsys.readouterr().err


def test_attack_cli_square_takes_registry_settings_and_reports_diagnostics(runs, tmp_path, capsys):
    out = tmp_path / "row.json"
    assert (
        main(
            [
                "attack",
                "--checkpoint",
                runs["wnll"],
                "--attack",
                "square",
                "--eps",
                "0.2",
                "--set",
                "n_queries=20",
                "--n",
                "40",
                "--device",
                "cpu",
                "--no-progress",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    stdout = capsys.readouterr().out
    row = json.loads(out.read_text())
    assert "20 queries" in stdout and row["gradient"] is None and isinstance(row["diagnostics"], list)
    # the two protocols are the same gradient-free attack: crafted once
    assert row["protocols"]["adaptive"]["reused"]
    assert (
        main(
            [
                "attack",
                "--checkpoint",
                runs["wnll"],
                "--attack",
                "square",
                "--eps",
                "0.2",
                "--set",
                "queries=20",
                "--device",
                "cpu",
                "--no-progress",
            ]
        )
        == 1
    )
    assert "unknown Square settings ['queries']" in capsys.readouterr().err


def test_inductive_inference_from_the_attack_command_and_grids(runs, capsys):
    argv = ["attack", "--checkpoint", runs["wnll"], "--attack", "fgsm", "--eps", "0.1", "--n", "30", "--device", "cpu"]
    assert main([*argv, "--no-progress", "--protocol", "paper", "--inference", "inductive"]) == 0
    assert "WNLL graphs: 500 templates + 1 query per graph (inductive)" in capsys.readouterr().out
    assert main([*argv, "--inference", "batch"]) == 2
    grid = {
        "models": [{"name": "w", "checkpoint": runs["wnll"], "inference": "inductive"}],
        "defenses": ["none"],
        "attacks": ["fgsm"],
        "eps": [0.1],
        "n": 30,
        "protocols": ["paper"],
        "device": "cpu",
    }
    rows = run_grid(GridConfig.from_dict(grid), progress=False)["rows"]
    assert {r["wnll_graph"]["inference"] for r in rows} == {"inductive"}
    grid["models"][0]["inference"] = "batch"
    with pytest.raises(ValueError, match="inference must be one of transductive, inductive, got 'batch'"):
        run_grid(GridConfig.from_dict(grid), progress=False)


def test_report_takes_every_attack_into_the_worst_case(runs, tmp_path, capsys):
    grid = {
        "models": [{"name": "wnll", "checkpoint": runs["wnll"]}, {"name": "lin", "checkpoint": runs["linear"]}],
        "defenses": ["none"],
        "attacks": ["ifgsm", "wnll_margin", "square"],
        "eps": [0.15],
        "n": 40,
        "steps": 4,
        "attack_settings": {"square": {"n_queries": 20}},
        "attack_n": {"square": 30},
        "device": "cpu",
    }
    result = run_grid(GridConfig.from_dict(grid), progress=False)
    rows = {(r["model"], r["protocol"], r["attack"]): r for r in result["rows"]}
    assert ("lin", "adaptive", "wnll_margin") not in rows and ("wnll", "paper", "wnll_margin") not in rows
    assert rows[("wnll", "adaptive", "square")]["n"] == 30
    # every row says which WNLL graph produced it (None for a linear head)
    assert rows[("wnll", "paper", "ifgsm")]["wnll_graph"] == {
        "inference": "transductive",
        "templates": 500,
        "template_batches": 1,
        "queries_per_graph": 500,
        "k": 15,
        "k_sigma": 8,
        "knn_backend": "auto",
        "exact_knn": True,
    }
    assert rows[("lin", "paper", "ifgsm")]["wnll_graph"] is None
    for model, attacks in (("wnll", ["ifgsm", "wnll_margin", "square"]), ("lin", ["ifgsm", "square"])):
        worst = rows[(model, "worst-case", "worst-linf")]
        assert worst["n"] == 30 and {run.split("/")[0] for run in worst["runs"]} == set(attacks)
        # on the first 30 images: the 30 Square attacked (the other attacks' rows are on 40)
        assert worst["robust_accuracy"] <= rows[(model, "worst-case", "square")]["robust_accuracy"]
        assert worst["clean_accuracy"] == rows[(model, "paper", "square")]["clean_accuracy"]
    write_report(result, tmp_path)
    markdown = (tmp_path / "results.md").read_text()
    assert "| clean | IFGSM 0.15 | WNLL-margin 0.15 | Square 0.15 | worst case 0.15 |" in markdown
    assert "- Square on the first 30 images" in markdown


# ------------------------------------------------------------------------------------------- heads, protocols


def test_wnll_checkpoint_read_through_linear_head(runs):
    target = load_target(runs["wnll"], head="linear", device="cpu")
    assert target.head == "linear"
    x, y = eval_data(target)
    with torch.no_grad():
        accuracy = float((target.model(x).argmax(1) == y).float().mean())
    assert accuracy == pytest.approx(runs["wnll_summary"]["test_accuracy_linear"])


def test_protocols_choose_gradient_and_tvm_handling(wnll, linear):
    assert resolve("paper", wnll.model, "none").gradient == "surrogate"
    assert resolve("adaptive", wnll.model, "none").gradient == "exact"
    assert resolve("paper", linear.model, "none").gradient is None
    paper = resolve("paper", wnll.model, "tvm")
    assert (paper.tvm_attack, paper.eot) == ("ignored", 1)
    adaptive = resolve("adaptive", linear.model, "tvm", eot=3)
    assert (adaptive.tvm_attack, adaptive.eot, adaptive.gradient) == ("bpda", 3, None)
    assert resolve("adaptive", wnll.model, "none", gradient="surrogate").gradient == "surrogate"


def test_exact_and_surrogate_gradients_differ(wnll):
    x, y = eval_data(wnll, 60)
    evaluator = Evaluator(x, y, dataset="digits", batch_size=60)
    kwargs = {"n": 60, "steps": 3}
    surrogate, info_s = evaluator.craft(wnll, "ifgsm", 0.1, resolve("paper", wnll.model, "none"), **kwargs)
    exact, info_e = evaluator.craft(wnll, "ifgsm", 0.1, resolve("adaptive", wnll.model, "none"), **kwargs)
    assert not info_s["reused"] and not info_e["reused"]
    assert (surrogate - exact).abs().max() > 0.05
    with gradient_mode(wnll.model, "surrogate"):
        g_s = loss_grad(wnll.model, x, y, cross_entropy)[1]
    with gradient_mode(wnll.model, "exact"):
        g_e = loss_grad(wnll.model, x, y, cross_entropy)[1]
    assert (g_s.sign() != g_e.sign()).float().mean() > 0.05


def test_paper_protocol_with_tvm_reuses_the_undefended_attack(linear):
    x, y = eval_data(linear, 40)
    evaluator = Evaluator(x, y, dataset="digits", tvm=FAST_TVM, batch_size=40)
    plain, first = evaluator.craft(linear, "fgsm", 0.1, resolve("paper", linear.model, "none"))
    ignored, second = evaluator.craft(linear, "fgsm", 0.1, resolve("paper", linear.model, "tvm"))
    assert not first["reused"] and second["reused"] and torch.equal(plain, ignored)
    bpda, third = evaluator.craft(linear, "fgsm", 0.1, resolve("adaptive", linear.model, "tvm", eot=2))
    assert not third["reused"] and not torch.equal(plain, bpda)


@pytest.mark.parametrize("defense", DEFENSES)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_every_defence_and_protocol_runs_an_attack(linear, defense, protocol):
    x, y = eval_data(linear, 20)
    evaluator = Evaluator(x, y, dataset="digits", tvm=FAST_TVM, batch_size=20)
    setting = resolve(protocol, linear.model, defense, eot=2 if (defense, protocol) == ("tvm", "adaptive") else None)
    row = evaluator.evaluate(linear, "fgsm", 0.1, defense, setting)
    assert (row["defense"], row["protocol"], row["n"]) == (defense, protocol, 20)
    assert 0 <= row["robust_accuracy"] <= row["clean_accuracy"] + 0.25


# ------------------------------------------------------------------------------------------- TVM, BPDA, EOT


def test_defended_model_is_the_model_on_tvm_images(linear):
    x, _ = eval_data(linear, 20)
    defence = defended(linear.model, "tvm", TVMDefense(iters=10, seed=3))
    assert isinstance(defence, BPDA)
    with torch.no_grad():
        expected = linear.model(TVMDefense(iters=10, seed=3)(x))
        assert torch.allclose(defence(x), expected)
        assert not torch.allclose(defence(x), expected)  # the next call draws new masks
    assert defended(linear.model, "none") is linear.model


def test_bpda_passes_the_gradient_at_the_tvm_image(linear):
    x, y = eval_data(linear, 20)
    target = attack_target(linear.model, "tvm", "bpda", 1, tvm=TVMDefense(iters=10, seed=5))
    _, grad, _ = loss_grad(target, x, y, cross_entropy)
    z = TVMDefense(iters=10, seed=5)(x).requires_grad_(True)
    (expected,) = torch.autograd.grad(cross_entropy(linear.model(z), y).sum(), z)
    assert grad.abs().sum() > 0
    assert torch.allclose(grad, expected, atol=1e-6)


def test_eot_averages_the_bpda_gradient_over_fresh_masks(linear):
    x, y = eval_data(linear, 20)
    target = attack_target(linear.model, "tvm", "bpda", 3, tvm=TVMDefense(iters=10, seed=7))
    assert isinstance(target, EOT) and isinstance(target.model, BPDA)
    _, grad, _ = loss_grad(target, x, y, cross_entropy)
    reference = BPDA(TVMDefense(iters=10, seed=7), linear.model)
    grads = [loss_grad(reference, x, y, cross_entropy)[1] for _ in range(3)]
    assert torch.allclose(grad, sum(grads) / 3, atol=1e-6)
    assert not torch.allclose(grads[0], grads[1])  # the masks differ, so averaging is not a no-op
    assert attack_target(linear.model, "tvm", "ignored") is linear.model


def test_cw_radius_interpolates_between_clean_and_unbounded(linear):
    x, y = eval_data(linear, 30)
    evaluator = Evaluator(x, y, dataset="digits", batch_size=30)
    setting = resolve("paper", linear.model, "none")
    cw = {"steps": 30, "lr": 0.05}
    results = [
        evaluator.evaluate(linear, "cw_l2", eps, "none", setting, settings=cw)["robust_accuracy"]
        for eps in (0.0, 0.5, 1.5, None)
    ]
    assert results[0] == evaluator.clean_accuracy(linear, "none")
    assert results == sorted(results, reverse=True) and results[-1] < results[0]


# ------------------------------------------------------------------------------------------- report


def test_report_writes_markdown_json_and_png(runs, tmp_path, capsys):
    grid = {
        "models": [
            {"name": "wnll", "checkpoint": runs["wnll"]},
            {"name": "wnll-linear", "checkpoint": runs["wnll"], "head": "linear"},
        ],
        "attacks": ["fgsm", "ifgsm", "cw_l2"],
        "eps": [0.05, 0.1],
        "cw_eps": [1.0, None],
        "n": 40,
        "cw_n": 20,
        "steps": 3,
        "cw": {"steps": 10, "lr": 0.05},
        "eot": 2,
        "tvm": FAST_TVM,
        "device": "cpu",
        "title": "test grid",
        "transfer": [{"source": {"name": "oracle", "checkpoint": runs["linear"]}, "attacks": ["fgsm"], "eps": [0.1]}],
    }
    path = tmp_path / "grid.json"
    path.write_text(json.dumps(grid))
    out = tmp_path / "report"
    assert main(["report", "--config", str(path), "--out", str(out), "--no-progress"]) == 0
    assert "wrote" in capsys.readouterr().out
    result = json.loads((out / "results.json").read_text())
    rows = result["rows"]
    white = [r for r in rows if r["protocol"] != "transfer"]
    # 2 models x 2 defences x (3 protocols (paper, adaptive, worst-case) x (2 FGSM + 2 IFGSM + 2 CW) cells
    # + the worst case over all attacks at the 2 L_inf radii; CW is alone at its radii)
    assert len(white) == 2 * 2 * (3 * 6 + 2)
    assert {(r["model"], r["defense"], r["protocol"]) for r in white} == {
        (m, d, p) for m in ("wnll", "wnll-linear") for d in ("none", "tvm") for p in ("paper", "adaptive", "worst-case")
    }
    transfer = [r for r in rows if r["protocol"] == "transfer"]
    assert {(r["model"], r["defense"], r["source"]) for r in transfer} == {
        (m, d, "oracle") for m in ("wnll", "wnll-linear") for d in ("none", "tvm")
    }
    by_key = {(r["model"], r["defense"], r["protocol"], r["attack"], r["eps"]): r for r in white}
    for (model, defense, protocol, attack, eps), row in by_key.items():
        if protocol == "worst-case" and attack != "worst-linf":
            assert row["robust_accuracy"] <= min(
                by_key[(model, defense, p, attack, eps)]["robust_accuracy"] for p in ("paper", "adaptive")
            )
        if attack == "worst-linf":
            assert row["runs"] == ["fgsm/paper", "ifgsm/paper", "fgsm/adaptive", "ifgsm/adaptive"]
            assert row["robust_accuracy"] <= min(
                by_key[(model, defense, "worst-case", a, eps)]["robust_accuracy"] for a in ("fgsm", "ifgsm")
            )
    assert isinstance(result["diagnostics"], list)
    # linear head, no defence: both protocols are the same attack, crafted once
    assert by_key[("wnll-linear", "none", "adaptive", "ifgsm", 0.1)]["reused"]
    assert by_key[("wnll", "none", "adaptive", "ifgsm", 0.1)]["gradient"] == "exact"

    markdown = (out / "results.md").read_text()
    table = [line for line in markdown.splitlines() if line.startswith("| wnll")]
    assert len(table) == 2 * 2 * 3 + 2 * 2  # white-box lines + transfer lines
    assert (
        "| model | head | defence | protocol | clean | FGSM 0.05 | FGSM 0.1 | IFGSM 0.05 | IFGSM 0.1 | "
        "CW-L2 L2<=1 | CW-L2 unbounded | worst case 0.05 | worst case 0.1 |" in markdown
    )
    assert "## Masking diagnostics" in markdown
    assert "FGSM 0.1 from oracle" in markdown
    png = (out / "robustness.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_report_from_flags(runs, tmp_path, capsys):
    out = tmp_path / "flags"
    assert (
        main(
            [
                "report",
                "--model",
                f"lin={runs['linear']}",
                "--model",
                f"w={runs['wnll']}:linear",
                "--defenses",
                "none",
                "--attacks",
                "fgsm",
                "--eps",
                "0.1",
                "--protocols",
                "paper",
                "--n",
                "30",
                "--device",
                "cpu",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [(r["model"], r["head"], r["attack"], r["eps"]) for r in rows] == [
        ("lin", "linear", "fgsm", 0.1),
        ("w", "linear", "fgsm", 0.1),
    ]


def test_write_report_from_python(wnll, tmp_path):
    result = run_grid(
        GridConfig(
            models=[{"name": "w", "checkpoint": wnll.path}],
            defenses=["none"],
            attacks=["fgsm"],
            eps=[0.1],
            protocols=["paper"],
            n=20,
            device="cpu",
        ),
        progress=False,
    )
    paths = write_report(result, tmp_path)
    assert all((tmp_path / name).is_file() for name in ("results.md", "results.json", "robustness.png"))
    assert paths["json"].endswith("results.json") and len(result["rows"]) == 1


# ------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "args, message",
    [
        (["--attack", "deepfool", "--eps", "0.1"], "unknown attack 'deepfool'"),
        (["--attack", "ifgsm"], "needs an L_inf radius"),
        (["--attack", "fgsm", "--eps", "0.1", "--defense", "jpeg"], "unknown defence 'jpeg'"),
        (["--attack", "fgsm", "--eps", "0.1", "--eot", "4"], "EOT (4 samples) needs a randomized defence"),
        (
            ["--attack", "fgsm", "--eps", "0.1", "--defense", "tvm", "--protocol", "paper", "--eot", "4"],
            "EOT has nothing to average",
        ),
        (
            ["--attack", "fgsm", "--eps", "0.1", "--protocol", "adaptive", "--gradient", "exact"],
            "applies to WNLL heads",
        ),
        (["--attack", "fgsm", "--eps", "0.1", "--head", "wnll"], "cannot be read through a WNLL head"),
        (["--attack", "fgsm", "--eps", "0.1", "--protocol", "strong"], "unknown protocol 'strong'"),
        (["--attack", "fgsm", "--eps", "0.1", "--n", "100000"], "exceeds the 359 images"),
    ],
)
def test_attack_cli_errors(runs, capsys, args, message):
    assert main(["attack", "--checkpoint", runs["linear"], "--device", "cpu", "--no-progress"] + args) == 1
    assert message in capsys.readouterr().err


def test_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert main(["attack", "--checkpoint", str(tmp_path / "nothing"), "--attack", "fgsm", "--eps", "0.1"]) == 1
    assert "checkpoint not found" in capsys.readouterr().err


def test_transfer_between_datasets_is_refused(runs, wnll, tmp_path, capsys):
    payload = torch.load(f"{runs['linear']}/checkpoint.pt", weights_only=True)
    payload["config"]["dataset"] = "mnist10k"
    other = tmp_path / "other.pt"
    torch.save(payload, other)
    with pytest.raises(ValueError, match="mismatched datasets"):
        check_same_data(load_target(other, device="cpu"), wnll)
    assert (
        main(
            [
                "attack",
                "--checkpoint",
                runs["wnll"],
                "--transfer-from",
                str(other),
                "--attack",
                "fgsm",
                "--eps",
                "0.1",
                "--device",
                "cpu",
            ]
        )
        == 1
    )
    assert "mismatched datasets" in capsys.readouterr().err


def test_wnll_head_without_template_bank_is_refused(runs, tmp_path):
    payload = torch.load(f"{runs['wnll']}/checkpoint.pt", weights_only=True)
    for key in [k for k in payload["model"] if k.endswith("template_features") or k.endswith("template_labels")]:
        payload["model"][key] = payload["model"][key][:0]
    path = tmp_path / "no_bank.pt"
    torch.save(payload, path)
    with pytest.raises(ValueError, match="no WNLL template bank"):
        load_target(path, device="cpu")
    assert load_target(path, head="linear", device="cpu").head == "linear"


@pytest.mark.parametrize(
    "values, message",
    [
        ({}, "at least one model"),
        ({"models": [{"name": "a", "checkpoint": "x"}], "colour": 1}, "unknown grid configuration fields"),
        ({"models": [{"name": "a", "checkpoint": "x"}, {"name": "a", "checkpoint": "y"}], "eps": [0.1]}, "unique"),
        ({"models": [{"name": "a", "checkpoint": "x"}], "eps": [-1.0]}, "eps must be >= 0"),
        ({"models": [{"name": "a", "checkpoint": "x"}], "attacks": ["fgsm"]}, "no eps values"),
        ({"models": [{"name": "a", "checkpoint": "x"}], "eps": [0.1], "protocols": ["strong"]}, "unknown protocol"),
        ({"models": [{"name": "a", "checkpoint": "x"}], "eps": [0.1], "defenses": ["jpeg"]}, "unknown defence"),
        ({"models": [{"name": "a", "checkpoint": "x"}], "eps": [0.1], "n": 10, "cw_n": 20}, "cw_n must be"),
        ({"models": [{"name": "a", "checkpoint": "x", "head": "softmax"}], "eps": [0.1]}, "head must be one of"),
        (
            {
                "models": [{"name": "a", "checkpoint": "x"}],
                "eps": [0.1],
                "attacks": ["wnll_margin"],
                "protocols": ["paper"],
            },
            "'wnll_margin' does not run under the paper protocol (only adaptive)",
        ),
        (
            {"models": [{"name": "a", "checkpoint": "x"}], "attacks": ["wnll_margin_l2"], "cw_eps": [None]},
            "bounded while crafting",
        ),
        (
            {
                "models": [{"name": "a", "checkpoint": "x"}],
                "eps": [0.1],
                "attacks": ["square"],
                "attack_settings": {"square": {"queries": 1}},
            },
            "attack_settings['square'] must be an object of Square",
        ),
        (
            {"models": [{"name": "a", "checkpoint": "x"}], "eps": [0.1], "attack_settings": {"square": {}}},
            "not one of the grid's attacks",
        ),
        (
            {
                "models": [{"name": "a", "checkpoint": "x"}],
                "eps": [0.1],
                "attacks": ["fgsm"],
                "n": 10,
                "attack_n": {"fgsm": 11},
            },
            "attack_n['fgsm'] must be an integer in [1, n=10]",
        ),
    ],
)
def test_grid_config_errors(values, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        GridConfig.from_dict(values)


def test_grid_refuses_an_attack_whose_library_is_missing(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torchattacks", None)
    with pytest.raises(ImportError, match=r"pip install 'fastwnll\[eval\]'"):
        GridConfig.from_dict({"models": [{"name": "a", "checkpoint": "x"}], "eps": [0.1], "attacks": ["square"]})


def test_grid_exclude_skips_matching_cells():
    config = GridConfig.from_dict(
        {
            "models": [{"name": "a", "checkpoint": "x"}, {"name": "b", "checkpoint": "y"}],
            "attacks": ["fgsm", "cw_l2"],
            "eps": [0.1, 0.3],
            "cw_eps": [None],
            "exclude": [{"defense": "tvm", "protocol": "adaptive", "eps": [0.1]}, {"model": "b", "attack": "cw_l2"}],
        }
    )
    targets = [SimpleNamespace(name="a"), SimpleNamespace(name="b")]
    kept = {(t.name, d, p, a, e) for t, d, p, a, e in cells(config, targets)}
    assert len(kept) == 2 * 2 * 2 * 3 - 2 - 4
    assert ("a", "tvm", "adaptive", "fgsm", 0.1) not in kept and ("a", "tvm", "paper", "fgsm", 0.1) in kept
    assert ("a", "tvm", "adaptive", "fgsm", 0.3) in kept and not any(k[0] == "b" and k[3] == "cw_l2" for k in kept)
    with pytest.raises(ValueError, match="unknown exclude keys"):
        GridConfig.from_dict({"models": [{"name": "a", "checkpoint": "x"}], "eps": [0.1], "exclude": [{"size": 1}]})


def test_report_needs_models(tmp_path, capsys):
    assert main(["report", "--out", str(tmp_path)]) == 1
    assert "--config FILE or the models" in capsys.readouterr().err


@pytest.mark.parametrize("name", list(ATTACKS))
def test_report_columns_and_grid_radii_come_from_the_registry(name):
    spec = ATTACKS[name]
    assert column_label(name, None) == f"{spec.label} unbounded"
    assert column_label(name, 1.5) == (f"{spec.label} L2<=1.5" if spec.norm == "l2" else f"{spec.label} 1.5")
    config = GridConfig.from_dict(
        {
            "models": [{"name": "a", "checkpoint": "x"}],
            "attacks": [name],
            "eps": [0.1, 0.3],
            "cw_eps": [2.0, None],
            "protocols": list(PROTOCOLS),
        }
    )
    wnll_model, linear_model = WNLLHead(4, 2), torch.nn.Linear(4, 2)
    grid = cells(config, [SimpleNamespace(name="a", model=wnll_model), SimpleNamespace(name="b", model=linear_model)])
    assert {eps for *_, eps in grid} == (
        {2.0, None} if spec.minimum_norm else {2.0} if spec.norm == "l2" else {0.1, 0.3}
    )
    # each attack runs under the protocols it declares, and the ones built against a WNLL head only on WNLL models
    assert {protocol for _, _, protocol, _, _ in grid} == set(spec.protocols)
    assert {target.name for target, *_ in grid} == ({"a"} if spec.wnll else {"a", "b"})


def test_a_new_attack_is_one_registry_entry(monkeypatch):
    """An entry added to the registry alone is known to the grid, the budgets and the report, and is
    refused under a protocol it does not declare."""
    from fastwnll.attacks import registry

    smooth = dataclasses.replace(registry.ATTACKS["ifgsm"], name="smooth", label="SMOOTH", protocols=("adaptive",))
    monkeypatch.setattr(registry, "ATTACKS", {**registry.ATTACKS, "smooth": smooth})
    entry = {"models": [{"name": "a", "checkpoint": "x"}], "attacks": ["smooth"], "eps": [0.3]}
    with pytest.raises(ValueError, match="'smooth' does not run under the paper protocol"):
        GridConfig.from_dict({**entry, "protocols": ["paper"]})
    config = GridConfig.from_dict(entry)  # both protocols: it runs under the adaptive one only
    assert {protocol for _, _, protocol, _, _ in cells(config, [SimpleNamespace(name="a")])} == {"adaptive"}
    assert attack_kwargs("smooth", 0.3, dataset="mnist") == attack_kwargs("ifgsm", 0.3, dataset="mnist")
    assert column_label("smooth", 0.3) == "SMOOTH 0.3"


def test_budget_defaults_follow_the_paper():
    assert attack_kwargs("ifgsm", 0.3, dataset="mnist10k") == {"eps": 0.3, "alpha": pytest.approx(0.01), "steps": 40}
    assert attack_kwargs("ifgsm", 0.031, dataset="cifar10")["alpha"] == pytest.approx(0.007)
    assert attack_kwargs("ifgsm", 0.3, dataset="mnist", steps=10)["alpha"] == pytest.approx(0.03)
    assert attack_kwargs("cw_l2", None, dataset="mnist")["c"] == 10.0
    with pytest.raises(ValueError, match="no default attack budget"):
        attack_kwargs("ifgsm", 0.1, dataset="npz")
    with pytest.raises(ValueError, match="unknown CW-L2 settings"):
        attack_kwargs("cw_l2", None, dataset="mnist", settings={"confidence": 1})
    with pytest.raises(ValueError, match="TVM drop_rate"):
        TVMDefense(drop_rate=1.0)
