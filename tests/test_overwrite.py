"""Nothing is overwritten silently: every command and function that writes files refuses existing ones
unless told to overwrite (``--overwrite`` / ``overwrite=True``), and refuses before doing any work."""

import json

import pytest

from fastwnll.cli import main
from fastwnll.evaluation import GridConfig, run_grid, write_report
from fastwnll.runtime import load_checkpoint
from fastwnll.train import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--epochs", "1", "--eval-every", "0", "--batch-size", "64", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("overwrite") / "run"
    train(TrainConfig(epochs=1, eval_every=0, batch_size=64, device="cpu", out=str(out)), progress=False)
    return str(out)


@pytest.mark.parametrize("leftover", ["log.jsonl", "summary.json"])
def test_train_refuses_a_directory_with_a_log_or_summary(tmp_path, capsys, leftover):
    out = tmp_path / "run"
    out.mkdir()
    (out / leftover).write_text("an earlier run\n")
    assert main(["train", "--out", str(out)] + TINY) == 1
    err = capsys.readouterr().err
    assert f"{out / leftover} already exists: replace it with overwrite=True (--overwrite)" in err
    assert (out / leftover).read_text() == "an earlier run\n" and not (out / "checkpoint.pt").exists()
    with pytest.raises(FileExistsError, match=leftover):
        train(TrainConfig(epochs=1, device="cpu", out=str(out)), progress=False)


def test_train_overwrite_replaces_the_earlier_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--stop-after", "1", "--epochs", "2"] + TINY[2:]) == 0
    assert main(["train", "--out", str(out)] + TINY) == 1
    assert (
        "checkpoint.pt already exists: resume it (--resume), start afresh (overwrite=True, --overwrite)"
        in capsys.readouterr().err
    )
    assert main(["train", "--out", str(out), "--overwrite"] + TINY) == 0
    assert load_checkpoint(out)["finished"] and load_checkpoint(out)["config"]["epochs"] == 1
    assert len((out / "log.jsonl").read_text().splitlines()) == 1
    assert json.loads((out / "summary.json").read_text())["epochs"] == 1


def test_train_overwrite_removes_a_stale_summary_first(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    config = TrainConfig(epochs=2, eval_every=0, batch_size=64, device="cpu", out=str(out))
    train(config, overwrite=True, stop_after_epochs=1, progress=False)
    assert not (out / "summary.json").exists()  # no summary of another run beside the unfinished one


def test_resume_and_overwrite_exclude_each_other(tmp_path, capsys):
    with pytest.raises(ValueError, match="pass one of them"):
        train(TrainConfig(device="cpu", out=str(tmp_path)), resume=True, overwrite=True, progress=False)
    assert main(["train", "--resume", "--overwrite", "--out", str(tmp_path)]) == 2
    assert "argument --overwrite: not allowed with argument --resume" in capsys.readouterr().err


def report_args(checkpoint, out):
    return [
        "report",
        "--model",
        f"lin={checkpoint}",
        "--defenses",
        "none",
        "--attacks",
        "fgsm",
        "--eps",
        "0.1",
        "--protocols",
        "paper",
        "--n",
        "20",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--no-progress",
    ]


def test_report_refuses_an_existing_report_before_running(tmp_path, capsys):
    out = tmp_path / "report"
    out.mkdir()
    (out / "results.md").write_text("the earlier report\n")
    # The model does not exist: a refusal that came after the grid ran would complain about it instead.
    assert main(report_args(tmp_path / "missing", out)) == 1
    assert (
        f"{out / 'results.md'} already exists: replace it with overwrite=True (--overwrite)" in capsys.readouterr().err
    )
    assert (out / "results.md").read_text() == "the earlier report\n"


def test_report_overwrite(tmp_path, checkpoint):
    out = tmp_path / "report"
    assert main(report_args(checkpoint, out)) == 0
    first = json.loads((out / "results.json").read_text())
    assert main(report_args(checkpoint, out)) == 1
    assert main(report_args(checkpoint, out) + ["--overwrite", "--title", "again"]) == 0
    assert json.loads((out / "results.json").read_text())["title"] == "again" != first["title"]


def test_write_report_refuses_unless_overwrite(tmp_path, checkpoint):
    result = run_grid(
        GridConfig(
            models=[{"name": "lin", "checkpoint": checkpoint}],
            defenses=["none"],
            attacks=["fgsm"],
            eps=[0.1],
            protocols=["paper"],
            n=10,
            device="cpu",
        ),
        progress=False,
    )
    (tmp_path / "robustness.png").write_bytes(b"an earlier plot")
    with pytest.raises(FileExistsError, match="robustness.png already exists"):
        write_report(result, tmp_path)
    assert (tmp_path / "robustness.png").read_bytes() == b"an earlier plot"
    assert not (tmp_path / "results.md").exists()
    write_report(result, tmp_path, overwrite=True)
    assert (tmp_path / "robustness.png").read_bytes().startswith(b"\x89PNG")


def test_attack_json_refuses_an_existing_file_before_attacking(tmp_path, checkpoint, capsys):
    target = tmp_path / "result.json"
    target.write_text("keep me")
    argv = [
        "attack",
        "--checkpoint",
        checkpoint,
        "--attack",
        "fgsm",
        "--eps",
        "0.1",
        "--n",
        "10",
        "--device",
        "cpu",
        "--no-progress",
        "--json",
        str(target),
    ]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "result.json already exists" in captured.err and "robust accuracy" not in captured.out
    assert target.read_text() == "keep me"
    assert main(argv + ["--overwrite"]) == 0
    assert json.loads(target.read_text())["attack"] == "fgsm"


def test_a_directory_where_a_file_goes_is_refused_even_with_overwrite(tmp_path, checkpoint, capsys):
    (tmp_path / "result.json").mkdir()
    assert (
        main(
            [
                "attack",
                "--checkpoint",
                checkpoint,
                "--attack",
                "fgsm",
                "--eps",
                "0.1",
                "--device",
                "cpu",
                "--json",
                str(tmp_path / "result.json"),
                "--overwrite",
            ]
        )
        == 1
    )
    assert "a directory where the result writes a file" in capsys.readouterr().err


def test_demo_refuses_a_non_empty_directory(tmp_path, capsys):
    (tmp_path / "something").write_text("x")
    assert main(["demo", "--out", str(tmp_path), "--quiet"]) == 1
    assert "exists and is not empty" in capsys.readouterr().err
