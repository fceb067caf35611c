"""Training pipeline and the train / evaluate / demo commands, on scikit-learn's digits (CPU, fast)."""

import json

import pytest
import torch

from fastwnll.cli import main
from fastwnll.data import DATASET_SPECS, DATASETS
from fastwnll.evaluation import attack_kwargs
from fastwnll.nn.network import wnll_heads
from fastwnll.runtime import load_split
from fastwnll.train import TrainConfig, evaluate_checkpoint, load_checkpoint, load_model, train
from fastwnll.train.steps import Stage, adversarial_batch, batch_order, tvm_augment

pytestmark = pytest.mark.usefixtures("one_thread")


def config(tmp_path, name="run", **changes) -> TrainConfig:
    """A small digits run: the digits CNN, few epochs."""
    values = {"dataset": "digits", "epochs": 2, "batch_size": 64, "device": "cpu", "out": str(tmp_path / name)}
    values.update(changes)
    return TrainConfig(**values)


def read_log(path):
    return [json.loads(line) for line in (path / "log.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------------------- training


def test_natural_training_reduces_loss_and_writes_log_and_summary(tmp_path):
    summary = train(config(tmp_path, epochs=3, eval_every=2), progress=False)
    log = read_log(tmp_path / "run")
    assert [r["epoch"] for r in log] == [1, 2, 3]
    assert log[-1]["train_loss"] < log[0]["train_loss"]
    assert "test_acc" not in log[0] and "test_acc" in log[1] and "test_acc" in log[2]
    assert all(r["stage"] == "linear" and r["train_time_s"] > 0 for r in log)
    saved = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert saved == json.loads(json.dumps(summary))
    assert saved["test_accuracy"] == log[-1]["test_acc"] > 0.5
    assert saved["test_n"] == load_split(TrainConfig(dataset="digits"), "test")[0].shape[0]
    assert saved["config"]["model"] == "digits_cnn" and saved["config"]["head"] == "linear"
    assert load_checkpoint(tmp_path / "run")["finished"] is True


def test_pgd_examples_respect_budget_and_raise_the_loss(tmp_path):
    cfg = config(tmp_path, adv="pgd", eps=0.1, alpha=0.05, steps=3).resolve()
    from fastwnll.models import build

    torch.manual_seed(0)
    model = build("digits_cnn", 10)
    stage = Stage(model, "linear", cfg, None)
    x, y = load_split(cfg, "train")
    x, y = x[:64], y[:64]
    adv = adversarial_batch(model, x, y, cfg, stage, None, torch.device("cpu"), None)
    assert adv.shape == x.shape and not adv.requires_grad
    assert (adv - x).abs().max() <= 0.1 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert not torch.equal(adv, x)
    assert model.training  # the attack ran in eval mode and put the flags back
    model.eval()
    with torch.no_grad():
        clean = torch.nn.functional.cross_entropy(model(x), y)
        attacked = torch.nn.functional.cross_entropy(model(adv), y)
    assert attacked > clean


def test_pgd_training_runs_and_reduces_loss(tmp_path):
    train(config(tmp_path, epochs=3, adv="pgd", eps=0.05, alpha=0.025, steps=2, eval_every=0), progress=False)
    log = read_log(tmp_path / "run")
    assert log[-1]["train_loss"] < log[0]["train_loss"]
    # Same seed, same initial network and batches: the adversarial examples have the higher loss.
    train(config(tmp_path, "natural", epochs=1, eval_every=0), progress=False)
    assert read_log(tmp_path / "natural")[0]["train_loss"] < log[0]["train_loss"]


def test_stage2_trains_only_the_buffer(tmp_path):
    cfg = config(tmp_path, head="wnll", epochs=1, stage2_epochs=1, eval_every=0)
    first = train(cfg, stop_after_epochs=1, progress=False)
    assert first["stopped_after_epoch"] == 1
    before = load_checkpoint(tmp_path / "run")["model"]
    summary = train(cfg, resume=True, progress=False)
    after = load_checkpoint(tmp_path / "run")["model"]
    buffer_keys = [k for k in before if k.startswith("buffer.")]
    assert buffer_keys
    for key, value in before.items():
        if key.startswith("head.template"):
            continue
        changed = not torch.equal(value, after[key])
        assert changed == (key in buffer_keys and value.is_floating_point()), key
    log = read_log(tmp_path / "run")
    assert [r["stage"] for r in log] == ["linear", "wnll"]
    assert summary["templates"] > 0 and 0 <= summary["test_accuracy_linear"] <= 1


def test_stage_sets_requires_grad_and_modes(tmp_path):
    cfg = config(tmp_path, head="wnll").resolve()
    from fastwnll.models import build

    model = build("digits_cnn", 10, head="wnll")
    stage = Stage(model, "wnll", cfg, None)
    stage.set_modes(model)
    trained = {id(p) for p in model.buffer.parameters()}
    assert all(p.requires_grad == (id(p) in trained) for p in model.parameters())
    assert {id(p) for group in stage.optimizer.param_groups for p in group["params"]} == trained
    assert not any(m.training for m in model.trunk.modules())
    assert model.buffer.training and wnll_heads(model)[0].mode == "wnll"
    Stage(model, "linear", cfg, None).set_modes(model)
    assert all(p.requires_grad for p in model.parameters()) and model.trunk.training
    assert wnll_heads(model)[0].mode == "linear"


def test_resume_continues_bit_for_bit(tmp_path):
    """Stop mid stage 1 and at the stage boundary, resume: the same run as without interruption,
    PGD examples (random starts), TVM augmentation (random masks) and dropout included."""
    changes = {
        "head": "wnll",
        "epochs": 2,
        "stage2_epochs": 1,
        "adv": "pgd",
        "eps": 0.05,
        "alpha": 0.025,
        "steps": 2,
        "tvm_augment": 0.25,
        "adv_templates": 200,
        "eval_every": 0,
    }
    straight = train(config(tmp_path, "straight", **changes), progress=False)
    for stop in (1, 2):
        name = f"stop{stop}"
        assert (
            train(config(tmp_path, name, **changes), stop_after_epochs=stop, progress=False)["stopped_after_epoch"]
            == stop
        )
        resumed = train(config(tmp_path, name, **changes), resume=True, progress=False)
        a = load_checkpoint(tmp_path / "straight")
        b = load_checkpoint(tmp_path / name)
        assert a["model"].keys() == b["model"].keys()
        for key in a["model"]:
            assert torch.equal(a["model"][key], b["model"][key]), (stop, key)
        strip = [{k: v for k, v in r.items() if not k.endswith("time_s")} for r in a["history"]]
        assert strip == [{k: v for k, v in r.items() if not k.endswith("time_s")} for r in b["history"]]
        assert resumed["test_accuracy"] == straight["test_accuracy"]
        assert len(read_log(tmp_path / name)) == 3


def test_tvm_augment_replaces_the_given_fraction():
    torch.manual_seed(0)
    x = torch.rand(8, 1, 8, 8)
    out = tvm_augment(x, 0.5, torch.Generator().manual_seed(1))
    changed = [i for i in range(8) if not torch.equal(out[i], x[i])]
    assert len(changed) == 4
    assert torch.equal(tvm_augment(x, 0.0, torch.Generator()), x)
    assert out.min() >= 0 and out.max() <= 1


def test_batch_order_drops_a_short_last_batch():
    batches = batch_order(10, 4, torch.Generator().manual_seed(0))
    assert [len(b) for b in batches] == [4, 4]
    assert len(set(torch.cat(batches).tolist())) == 8
    assert [len(b) for b in batch_order(3, 4, torch.Generator())] == [3]


def test_cycles_repeat_both_stages(tmp_path):
    cfg = config(tmp_path, head="wnll", epochs=1, stage2_epochs=1, cycles=2, eval_every=0)
    assert cfg.resolve().stage_plan() == [(0, "linear", 0), (0, "wnll", 0), (1, "linear", 0), (1, "wnll", 0)]
    train(cfg, stop_after_epochs=2, progress=False)
    after_first_cycle = load_checkpoint(tmp_path / "run")["model"]
    summary = train(cfg, resume=True, progress=False)
    log = read_log(tmp_path / "run")
    assert [(r["cycle"], r["stage"]) for r in log] == [(1, "linear"), (1, "wnll"), (2, "linear"), (2, "wnll")]
    final = load_checkpoint(tmp_path / "run")["model"]
    # The second cycle's stage 1 trains the whole network again.
    assert not torch.equal(after_first_cycle["trunk.1.weight"], final["trunk.1.weight"])
    assert summary["epochs"] == 4 and "test_accuracy_linear" in summary


def test_config_defaults_per_dataset():
    mnist = TrainConfig(dataset="mnist10k", adv="pgd").resolve()
    assert (mnist.model, mnist.eps, mnist.alpha, mnist.steps) == ("mnist_cnn", 0.3, 0.01, 40)
    cifar = TrainConfig(dataset="cifar10", adv="pgd").resolve()
    assert (cifar.model, cifar.eps, cifar.alpha, cifar.steps) == ("resnet20", 0.031, 0.007, 10)
    assert TrainConfig(head="wnll").resolve().stage2_epochs == 2
    decayed = TrainConfig(lr=0.1, epochs=10, milestones=[5, 8, 12], head="wnll").resolve()
    assert decayed.stage2_lr == pytest.approx(0.001)


@pytest.mark.parametrize("name", DATASETS)
def test_training_and_attack_defaults_come_from_the_dataset_registry(name):
    """Every dataset's training defaults and its paper budget are one registry entry: PGD training and
    the evaluation's IFGSM/PGD take the same numbers from it."""
    spec = DATASET_SPECS[name]
    if "model" not in spec.defaults:
        with pytest.raises(ValueError, match=f"dataset {name!r} has no default model"):
            TrainConfig(dataset=name, adv="pgd").resolve()
        return
    config = TrainConfig(dataset=name, adv="pgd").resolve()
    assert {key: getattr(config, key) for key in spec.defaults} == dict(spec.defaults)
    budget = spec.budget
    assert (config.eps, config.alpha, config.steps) == (budget.eps, budget.alpha, budget.steps)
    for attack in ("ifgsm", "pgd"):
        kwargs = attack_kwargs(attack, budget.eps, dataset=name)
        assert kwargs["steps"] == budget.steps and kwargs["alpha"] == pytest.approx(budget.alpha)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"dataset": "imagenet"}, "dataset must be one of"),
        ({"head": "softmax"}, "head must be one of"),
        ({"epochs": -1}, "epochs must be an integer >= 0"),
        ({"epochs": 0, "stage2_epochs": 0}, "nothing to train"),
        ({"stage2_epochs": 1}, "needs head='wnll'"),
        ({"eps": 0.1}, "without adversarial training"),
        ({"adv": "pgd", "alpha": 0.0}, "alpha must be a finite number > 0"),
        ({"lr": float("nan")}, "lr must be a finite number > 0"),
        ({"milestones": [5, 3]}, "strictly increasing"),
        ({"milestones": 5}, "list of epochs"),
        ({"tvm_augment": 1.5}, "tvm_augment"),
        ({"template_fraction": 1.0}, "template_fraction"),
        ({"dataset": "npz"}, "has no default model"),
    ],
)
def test_bad_config_is_rejected(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes).resolve()


def test_run_directory_errors(tmp_path):
    cfg = config(tmp_path, epochs=1, eval_every=0)
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        train(cfg, resume=True, progress=False)
    train(cfg, progress=False)
    with pytest.raises(FileExistsError, match="already exists"):
        train(cfg, progress=False)
    with pytest.raises(ValueError, match="finished run"):
        train(cfg, resume=True, progress=False)
    train(config(tmp_path, "other", epochs=2, eval_every=0), stop_after_epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"differs in \['lr'"):
        train(config(tmp_path, "other", epochs=2, eval_every=0, lr=0.5), resume=True, progress=False)


def test_model_that_does_not_fit_the_data(tmp_path):
    with pytest.raises(ValueError, match="cannot take 'digits' inputs"):
        train(config(tmp_path, model="mnist_cnn"), progress=False)


# ---------------------------------------------------------------------------------------- evaluation


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A linear-head and a WNLL-head digits run (natural, short)."""
    root = tmp_path_factory.mktemp("runs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(
            TrainConfig(dataset="digits", epochs=3, device="cpu", eval_every=0, out=str(root / "linear")),
            progress=False,
        )
        wnll = train(
            TrainConfig(
                dataset="digits",
                head="wnll",
                epochs=3,
                stage2_epochs=1,
                device="cpu",
                eval_every=0,
                out=str(root / "wnll"),
            ),
            progress=False,
        )
    finally:
        torch.set_num_threads(threads)
    return root, wnll


def test_evaluate_checkpoint_heads(runs):
    root, summary = runs
    both = evaluate_checkpoint(root / "wnll", device="cpu")
    assert both["accuracy"] == {"linear": summary["test_accuracy_linear"], "wnll": summary["test_accuracy"]}
    assert both["templates"] == summary["templates"]
    # the evaluation graph is recorded with the result and in the training summary
    assert both["wnll_graph"]["templates"] == summary["templates"] == summary["wnll_graph"]["templates"]
    assert both["wnll_graph"]["inference"] == "transductive" and both["wnll_graph"]["queries_per_graph"] == 500
    linear = evaluate_checkpoint(root / "linear", device="cpu")
    assert set(linear["accuracy"]) == {"linear"} and "wnll_graph" not in linear
    as_wnll = evaluate_checkpoint(root / "linear", device="cpu", head="wnll", templates=400)
    assert as_wnll["templates"] == 400 and 0.5 < as_wnll["accuracy"]["wnll"] <= 1
    rebuilt = evaluate_checkpoint(root / "wnll", device="cpu", head="wnll", templates=300, split="train")
    assert rebuilt["templates"] == 300 and rebuilt["split"] == "train"


def test_evaluate_checkpoint_inductive_does_not_depend_on_the_batch(runs):
    root, _ = runs
    small = evaluate_checkpoint(root / "wnll", device="cpu", head="wnll", inference="inductive", batch_size=7)
    large = evaluate_checkpoint(root / "wnll", device="cpu", head="wnll", inference="inductive", batch_size=500)
    assert small["accuracy"] == large["accuracy"] and 0.5 < small["accuracy"]["wnll"] <= 1
    assert small["wnll_graph"]["inference"] == "inductive" and small["wnll_graph"]["queries_per_graph"] == 1
    with pytest.raises(ValueError, match="inference must be one of transductive, inductive, got 'both'"):
        evaluate_checkpoint(root / "wnll", device="cpu", inference="both")


def test_load_model_restores_the_bank(runs):
    root, summary = runs
    model, cfg, payload = load_model(root / "wnll")
    heads = wnll_heads(model)
    assert cfg.head == "wnll" and heads[0].mode == "wnll" and heads[0].num_templates == summary["templates"]
    assert not model.training and payload["num_classes"] == 10


def test_evaluate_without_templates_is_an_error(runs, tmp_path):
    root, _ = runs
    with pytest.raises(RuntimeError, match="no WNLL template bank"):
        evaluate_checkpoint(root / "linear", device="cpu", head="wnll")
    train(config(tmp_path, head="wnll", epochs=2, stage2_epochs=1, eval_every=0), stop_after_epochs=1, progress=False)
    with pytest.raises(RuntimeError, match="has no WNLL template bank"):
        evaluate_checkpoint(tmp_path / "run", device="cpu", head="wnll")
    assert set(evaluate_checkpoint(tmp_path / "run", device="cpu", head="linear")["accuracy"]) == {"linear"}


# ---------------------------------------------------------------------------------------- CLI


def test_cli_train_resume_and_evaluate(tmp_path, capsys):
    out = str(tmp_path / "cli")
    assert (
        main(
            [
                "train",
                "--dataset",
                "digits",
                "--epochs",
                "2",
                "--batch-size",
                "64",
                "--device",
                "cpu",
                "--out",
                out,
                "--quiet",
                "--stop-after",
                "1",
            ]
        )
        == 0
    )
    assert "continue with: fastwnll train --resume" in capsys.readouterr().out
    assert main(["train", "--out", out, "--resume", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "test accuracy" in printed and "checkpoint.pt" in printed
    assert len(read_log(tmp_path / "cli")) == 2
    assert main(["evaluate", "--checkpoint", out, "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["accuracy"]["linear"] == json.loads((tmp_path / "cli" / "summary.json").read_text())["test_accuracy"]
    assert main(["evaluate", "--checkpoint", out, "--head", "both", "--templates", "300", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "linear head accuracy" in printed and "wnll   head accuracy" in printed and "300 templates" in printed


def test_cli_train_wnll_flags(tmp_path, capsys):
    out = tmp_path / "wnll"
    assert (
        main(
            [
                "train",
                "--dataset",
                "digits",
                "--head",
                "wnll",
                "--epochs",
                "1",
                "--stage2-epochs",
                "1",
                "--adv",
                "pgd",
                "--eps",
                "0.05",
                "--alpha",
                "0.025",
                "--steps",
                "1",
                "--adv-templates",
                "100",
                "--adv-gradient",
                "exact",
                "--tvm-augment",
                "0.1",
                "--templates",
                "500",
                "--milestones",
                "1",
                "--lr",
                "0.05",
                "--seed",
                "3",
                "--device",
                "cpu",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    assert "WNLL head" in capsys.readouterr().out
    saved = json.loads((out / "summary.json").read_text())
    assert saved["templates"] == 500
    assert {k: saved["config"][k] for k in ("adv_gradient", "eps", "steps", "seed", "tvm_augment", "milestones")} == {
        "adv_gradient": "exact",
        "eps": 0.05,
        "steps": 1,
        "seed": 3,
        "tvm_augment": 0.1,
        "milestones": [1],
    }


def test_cli_demo_tiny(tmp_path, capsys):
    assert (
        main(
            [
                "demo",
                "--epochs",
                "1",
                "--stage2-epochs",
                "1",
                "--steps",
                "1",
                "--attack-steps",
                "1",
                "--device",
                "cpu",
                "--out",
                str(tmp_path / "demo"),
                "--quiet",
            ]
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "digits test set, 359 images" in table and "IFGSM (eps 0.1, 1 steps)" in table
    linear_row = next(line for line in table.splitlines() if line.startswith("linear head"))
    wnll_row = next(line for line in table.splitlines() if line.startswith("WNLL head"))
    assert linear_row.count("%") == 2 and wnll_row.count("%") == 3
    assert (tmp_path / "demo" / "linear.pt").exists()
    assert json.loads((tmp_path / "demo" / "wnll" / "summary.json").read_text())["epochs"] == 2
    assert main(["demo", "--out", str(tmp_path / "demo"), "--quiet"]) == 1
    assert "is not empty" in capsys.readouterr().err
    assert main(["demo", "--stage2-epochs", "0", "--quiet"]) == 2
    assert "argument --stage2-epochs: must be an integer >= 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--dataset", "digits", "--eps", "0.1"], "without adversarial training"),
        (["evaluate", "--checkpoint", "/nonexistent/run"], "no checkpoint at /nonexistent/run"),
        (["train", "--resume", "--out", "/nonexistent/run"], "no checkpoint at /nonexistent/run"),
    ],
)
def test_cli_bad_input_exits_1(argv, message, capsys):
    assert main(argv) == 1
    assert message in capsys.readouterr().err


def test_cli_evaluate_without_templates_exits_1(runs, capsys):
    root, _ = runs
    assert main(["evaluate", "--checkpoint", str(root / "linear"), "--head", "wnll", "--device", "cpu"]) == 1
    assert "no WNLL template bank: pass templates=N (--templates N)" in capsys.readouterr().err


def test_cli_resume_with_other_flags_exits_1(tmp_path, capsys):
    out = str(tmp_path / "r")
    assert main(["train", "--epochs", "2", "--device", "cpu", "--out", out, "--quiet", "--stop-after", "1"]) == 0
    assert main(["train", "--epochs", "3", "--device", "cpu", "--out", out, "--quiet", "--resume"]) == 1
    assert "the configuration differs in ['epochs']" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only messages")
def test_cuda_options_without_a_gpu(tmp_path):
    with pytest.raises(RuntimeError, match="no CUDA device"):
        train(config(tmp_path, device="cuda"), progress=False)
    with pytest.raises(ValueError, match="amp='on' needs a CUDA device"):
        train(config(tmp_path, amp="on"), progress=False)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_with_amp_and_evaluation(tmp_path):
    summary = train(
        config(
            tmp_path,
            head="wnll",
            epochs=2,
            stage2_epochs=1,
            adv="pgd",
            eps=0.05,
            alpha=0.025,
            steps=2,
            tvm_augment=0.25,
            device="cuda",
            amp="on",
        ),
        progress=False,
    )
    assert summary["device"].startswith("cuda") and summary["test_accuracy"] > 0.3
    result = evaluate_checkpoint(tmp_path / "run", device="cuda")
    assert result["accuracy"]["wnll"] == pytest.approx(summary["test_accuracy"], abs=0.02)
