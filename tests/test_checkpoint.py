"""Checkpoint files: the checksum, atomic saves, one clear error (naming the file and the problem) for
every kind of damaged file, and Ctrl-C during training (on scikit-learn's digits, CPU)."""

import os
import signal
import subprocess
import sys
import time
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

from fastwnll.cli import main
from fastwnll.runtime import CheckpointError, load_checkpoint, load_model, save_checkpoint
from fastwnll.runtime.checkpoint import temporary_path
from fastwnll.train import TrainConfig, evaluate_checkpoint, train

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished one-epoch digits run with a WNLL head (its checkpoint holds a template bank)."""
    out = tmp_path_factory.mktemp("checkpoint") / "run"
    train(
        TrainConfig(
            dataset="digits",
            head="wnll",
            epochs=1,
            stage2_epochs=1,
            batch_size=64,
            templates=300,
            eval_every=0,
            device="cpu",
            out=str(out),
        ),
        progress=False,
    )
    return out / "checkpoint.pt"


def damaged(tmp_path, data: bytes, name="damaged.pt") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def resaved(tmp_path, run, change) -> Path:
    """A copy of ``run``'s checkpoint whose payload ``change`` altered, saved with a valid checksum."""
    payload = load_checkpoint(run)
    change(payload)
    path = tmp_path / "changed.pt"
    save_checkpoint(path, {k: v for k, v in payload.items() if k != "format"})
    return path


def test_checkpoint_is_a_torch_archive_with_its_digest(run):
    assert zipfile.ZipFile(run).comment.startswith(b"fastwnll sha256 ")
    plain = torch.load(run, weights_only=True)  # still a file torch reads by itself
    assert plain["finished"] is True and torch.equal(
        plain["model"]["head.linear.weight"], load_checkpoint(run)["model"]["head.linear.weight"]
    )


def check_error(path, problem):
    """Loading ``path`` raises one CheckpointError naming the file and ``problem``, through every
    reader: the loader, the model rebuilder and the ``evaluate`` command (exit status 1)."""
    for read in (load_checkpoint, load_model):
        with pytest.raises(CheckpointError) as info:
            read(path)
        assert str(path) in str(info.value) and problem in str(info.value), str(info.value)
        assert "weights_only" not in str(info.value) and "WNLL" not in str(info.value)
    return info.value


def test_empty_file(tmp_path):
    check_error(damaged(tmp_path, b""), "the file is empty (0 bytes)")


def test_random_bytes(tmp_path):
    check_error(damaged(tmp_path, os.urandom(4096)), "not a torch archive")


def test_random_bytes_after_a_zip_signature(tmp_path):
    check_error(damaged(tmp_path, b"PK\x03\x04" + os.urandom(4096)), "truncated or damaged")


def test_truncated_file(tmp_path, run):
    data = run.read_bytes()
    check_error(damaged(tmp_path, data[: len(data) // 2]), "truncated or damaged")


@pytest.mark.parametrize("where", [0.3, 0.6, 0.9])
def test_flipped_byte_is_a_checksum_mismatch(tmp_path, run, where):
    """torch alone loads such a file without complaint (the flipped byte lands in a tensor or in the
    pickle); the digest catches it."""
    data = bytearray(run.read_bytes())
    data[int(len(data) * where)] ^= 0x20
    check_error(damaged(tmp_path, bytes(data)), "checksum mismatch")


def test_file_without_config(tmp_path, run):
    check_error(resaved(tmp_path, run, lambda p: p.pop("config")), "it lacks config")


def test_file_of_other_contents(tmp_path):
    path = tmp_path / "weights.pt"
    save_checkpoint(path, {"weight": torch.ones(3)})
    check_error(path, "it lacks config, num_classes")


def test_python_objects_are_refused_without_torch_advice(tmp_path):
    path = tmp_path / "objects.pt"
    torch.save({"format": 1, "config": {}, "value": zipfile.ZipInfo("x")}, path)  # pickled Python object
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no checksum: the legacy warning
        error = check_error(path, "holds Python objects other than tensors")
    assert "weights_only" not in str(error)


@pytest.mark.parametrize(
    "change, problem",
    [
        (
            lambda p: p["model"].__setitem__("head.linear.weight", torch.full((10, 32), float("nan"))),
            "parameter 'head.linear.weight' holds NaN or infinite values",
        ),
        (
            lambda p: p["model"].__setitem__("head.linear.weight", torch.zeros(7, 3)),
            "size mismatch for head.linear.weight",
        ),
        (lambda p: p["model"].pop("head.linear.bias"), 'Missing key(s) in state_dict: "head.linear.bias"'),
        (
            lambda p: p["model"].__setitem__("extra.weight", torch.zeros(2)),
            'Unexpected key(s) in state_dict: "extra.weight"',
        ),
        (
            lambda p: p["model"].__setitem__("head.template_labels", p["model"]["head.template_labels"] + 50),
            "template bank of 'head' has labels outside [0, 10)",
        ),
        (
            lambda p: p["model"].__setitem__("head.template_labels", p["model"]["head.template_labels"][:5]),
            "template bank of 'head' has 300 feature rows but 5 labels",
        ),
        (lambda p: p["config"].__setitem__("model", "vgg"), "its configuration does not make a network"),
    ],
)
def test_corrupted_weights_name_file_and_parameter(tmp_path, run, change, problem):
    path = resaved(tmp_path, run, change)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    assert str(path) in str(info.value) and problem in str(info.value), str(info.value)
    assert main(["evaluate", "--checkpoint", str(path), "--device", "cpu"]) == 1


def test_evaluate_command_reports_a_damaged_checkpoint_in_one_line(tmp_path, capsys):
    path = damaged(tmp_path, b"")
    assert main(["evaluate", "--checkpoint", str(path), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert (
        err.strip() == f"fastwnll evaluate: error: {path}: the file is empty (0 bytes), not a checkpoint; "
        "it was truncated or never written"
    )


def test_old_checkpoint_without_checksum_loads_with_a_warning(tmp_path, run):
    payload = torch.load(run, weights_only=True)
    old = tmp_path / "old.pt"
    torch.save(payload, old)  # how checkpoints were written before they carried a digest
    with pytest.warns(UserWarning, match="has no checksum .* loaded without verification"):
        model, config, _ = load_model(old)
    assert config.head == "wnll" and model.head.num_templates == 300


def test_interrupted_save_leaves_the_previous_checkpoint(tmp_path, run, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(run.read_bytes())
    before = path.read_bytes()

    def interrupted_fsync(fd):
        raise KeyboardInterrupt  # Ctrl-C while the new bytes are being written

    monkeypatch.setattr(os, "fsync", interrupted_fsync)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"config": {}, "model": {}})
    assert path.read_bytes() == before and not temporary_path(path).exists()
    assert load_checkpoint(path)["finished"] is True


def test_saved_checkpoint_round_trips_exactly(tmp_path):
    payload = {
        "config": {"a": [1, 2]},
        "model": {"w": torch.randn(4, 5, dtype=torch.float64)},
        "epoch": 3,
        "num_classes": 2,
        "in_channels": 1,
        "history": [],
        "stage": None,
        "rng": {},
        "finished": False,
    }
    path = tmp_path / "c.pt"
    save_checkpoint(path, payload)
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["model"]["w"], payload["model"]["w"]) and loaded["config"] == {"a": [1, 2]}
    assert sorted(os.listdir(tmp_path)) == ["c.pt"]


# ------------------------------------------------------------------------------------------ Ctrl-C


def test_ctrl_c_during_training_says_how_to_resume(tmp_path):
    """SIGINT to ``fastwnll train`` after its first checkpoint: exit status 130, one line saying how to
    resume, no traceback, an intact checkpoint; the resumed run continues from it."""
    out = tmp_path / "run dir"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fastwnll",
            "train",
            "--dataset",
            "digits",
            "--epochs",
            "500",
            "--eval-every",
            "0",
            "--batch-size",
            "64",
            "--device",
            "cpu",
            "--quiet",
            "--out",
            str(out),
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C's default action, even when the tests run in the background (where a shell ignores it)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 240
        while not (out / "checkpoint.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert (
        stderr.strip().splitlines()[-1] == f"fastwnll train: interrupted; resume with: fastwnll train --resume "
        f"--out '{out}'"
    )
    saved = load_checkpoint(out)
    assert not saved["finished"] and saved["epoch"] >= 1
    assert not temporary_path(out / "checkpoint.pt").exists()
    assert main(["train", "--resume", "--out", str(out), "--quiet", "--stop-after", "1"]) == 0
    assert load_checkpoint(out)["epoch"] == saved["epoch"] + 1


def test_ctrl_c_before_the_first_checkpoint(tmp_path, monkeypatch, capsys):
    """Interrupted in its first epoch, a run leaves nothing behind, and the same command starts it again."""
    from fastwnll.train import steps, trainer

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    out = tmp_path / "run"
    argv = ["train", "--epochs", "1", "--eval-every", "0", "--device", "cpu", "--quiet", "--out", str(out)]
    monkeypatch.setattr(trainer, "train_epoch", interrupted)
    assert main(argv) == 130
    assert capsys.readouterr().err.strip() == (
        "fastwnll train: interrupted before the first epoch ended; nothing to resume: run the command again"
    )
    assert not out.exists() or not any(out.iterdir())
    with pytest.raises(trainer.TrainingInterrupted, match="before its first epoch ended") as info:
        train(TrainConfig(epochs=1, device="cpu", out=str(out)), progress=False)
    assert isinstance(info.value, KeyboardInterrupt) and info.value.checkpoint is None
    monkeypatch.setattr(trainer, "train_epoch", steps.train_epoch)
    assert main(argv) == 0


def test_ctrl_c_in_a_later_epoch_from_python(tmp_path, monkeypatch):
    from fastwnll.train import steps, trainer

    calls = []

    def second_epoch_interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return steps.train_epoch(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_epoch", second_epoch_interrupted)
    config = TrainConfig(epochs=3, eval_every=0, batch_size=64, device="cpu", out=str(tmp_path / "run"))
    with pytest.raises(
        trainer.TrainingInterrupted,
        match=r"after epoch 1/3; .* is complete: continue with "
        r"train\(config, resume=True\)",
    ) as info:
        train(config, progress=False)
    assert info.value.epoch == 1 and info.value.checkpoint == tmp_path / "run" / "checkpoint.pt"
    monkeypatch.setattr(trainer, "train_epoch", steps.train_epoch)
    summary = train(config, resume=True, progress=False)
    assert summary["epochs"] == 3
    assert evaluate_checkpoint(tmp_path / "run", device="cpu")["accuracy"]["linear"] == summary["test_accuracy"]
