"""Data-parallel training and sharded evaluation on PyTorch's distributed engine, on the CPU with gloo:
two spawned processes with torchrun's environment (and one real ``torchrun`` launch), checked against
one process holding the whole batch or running the whole evaluation."""

import builtins
import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from fastwnll.cli import main
from fastwnll.models import build
from fastwnll.nn import WNLLHead, wnll_batch
from fastwnll.runtime import TrainConfig, load_checkpoint
from fastwnll.runtime.distributed import (
    SINGLE,
    Processes,
    batch_seed,
    choose_backend,
    process_group,
    shard_batches,
    shard_rows,
)
from fastwnll.train import evaluate_checkpoint, train
from fastwnll.train.steps import Stage, batch_loss, tvm_augment

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = torch.device("cpu")
# A short PGD + WNLL run of a ResNet (BatchNorm) on digits whose batches, template banks and test batches
# are all shared out unevenly between two processes (shares of 48, 100, 2 + 1 test batches, 2 + 1 bank
# batches).
RUN = [
    "--dataset",
    "digits",
    "--model",
    "resnet20",
    "--head",
    "wnll",
    "--epochs",
    "1",
    "--stage2-epochs",
    "1",
    "--adv",
    "pgd",
    "--steps",
    "2",
    "--tvm-augment",
    "0.25",
    "--batch-size",
    "96",
    "--stage2-batch-size",
    "200",
    "--templates",
    "300",
    "--adv-templates",
    "200",
    "--eval-batch-size",
    "120",
    "--device",
    "cpu",
    "--quiet",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, world: int, port: int, worker, args) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    worker(rank, *args)


def spawn(worker, *args, world: int = 2) -> None:
    """``worker(rank, *args)`` in ``world`` spawned processes that see torchrun's environment variables
    (a free port on this machine); an exception in any of them fails the test."""
    mp.spawn(_entry, args=(world, free_port(), worker, args), nprocs=world, join=True)


# ----------------------------------------------------------------------------------------- (a) gradients
CASES = [(gradient, stage) for gradient in ("surrogate", "exact") for stage in ("wnll", "linear")]
ROWS = 61
SHARES = (slice(0, 40), slice(40, ROWS))  # deliberately uneven


def _step_setup(gradient: str, stage_name: str):
    """A float64 digits CNN with a WNLL head (k=6; solves to a relative residual of 1e-13, so that the
    processes' features, computed in other batches than the single process's and so equal only to
    rounding, give the same solution to 1e-12) set up for one step of ``stage_name``, dropout off, and
    the first ROWS training images."""
    from fastwnll.data.digits import load_digits

    torch.manual_seed(0)
    model = build("digits_cnn", 10, head="wnll", gradient=gradient, k=6, k_sigma=4, tol=1e-13).double()
    Stage(model, stage_name, TrainConfig(dataset="digits", head="wnll").resolve(), None).set_modes(model)
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    x, y = load_digits("train")
    return model, x[:ROWS].double(), y[:ROWS]


def _gradient_phase(rank: int, out: Path) -> None:
    """One global-graph step of every case on this process's rows (in the group of the caller)."""
    from fastwnll.runtime.distributed import current, wrap_model

    results = {}
    for gradient, stage_name in CASES:
        model, x, y = _step_setup(gradient, stage_name)
        for head in model.modules():
            if isinstance(head, WNLLHead):
                head.graph = "global"
        net = wrap_model(model, CPU, current())
        loss, _, out_rows, targets = batch_loss(
            net, x[SHARES[rank]], y[SHARES[rank]], CPU, None, current(), torch.Generator().manual_seed(5)
        )
        loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        results[gradient, stage_name] = {"grads": grads, "out": out_rows.detach(), "targets": targets}
        del net
    # (d) a global graph whose split is drawn from generators that differ between the processes
    model, x, y = _step_setup("surrogate", "wnll")
    model.head.graph = "global"
    torch.manual_seed(rank)
    try:
        with wnll_batch(model, y[SHARES[rank]]):
            model(x[SHARES[rank]])
        results["split_error"] = None
    except RuntimeError as error:
        results["split_error"] = str(error)
    torch.save(results, out / f"gradients{rank}.pt")


def test_global_graph_step_has_the_gradients_of_one_process(processes_ran):
    ranks = [torch.load(processes_ran / f"gradients{r}.pt") for r in range(2)]
    for gradient, stage_name in CASES:
        model, x, y = _step_setup(gradient, stage_name)
        loss, _, out_rows, targets = batch_loss(model, x, y, CPU, None, SINGLE, torch.Generator().manual_seed(5))
        loss.backward()
        reference = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        trained = {"wnll": 2, "linear": 14}[stage_name]  # the buffer block; every parameter
        assert len(reference) == trained
        for rank in ranks:
            case = rank[gradient, stage_name]
            assert case["grads"].keys() == reference.keys()
            for name, grad in reference.items():
                torch.testing.assert_close(
                    case["grads"][name],
                    grad,
                    rtol=1e-9,
                    atol=1e-12 * float(grad.abs().max()),
                    msg=f"{gradient} {stage_name} {name}",
                )
        # The processes' output rows are the single process's rows, in order.
        torch.testing.assert_close(
            torch.cat([r[gradient, stage_name]["out"] for r in ranks]), out_rows.detach(), rtol=1e-9, atol=1e-12
        )
        assert torch.equal(torch.cat([r[gradient, stage_name]["targets"] for r in ranks]), targets)
    for rank in ranks:
        assert "differs between processes" in rank["split_error"]


# ----------------------------------------------------------------------------------------- (b) training
class WriteRecorder:
    """Records every file opened for writing, renamed, removed or made under ``root`` (patches
    ``open``, ``os.replace``, ``os.rename``, ``os.unlink``, ``os.remove``, ``os.mkdir``)."""

    def __init__(self, root: str):
        self.root, self.paths = os.path.realpath(root), []

    def _note(self, path) -> None:
        if isinstance(path, (str, os.PathLike)) and os.path.realpath(path).startswith(self.root):
            self.paths.append(str(path))

    @contextlib.contextmanager
    def active(self):
        real = {name: getattr(os, name) for name in ("replace", "rename", "unlink", "remove", "mkdir")}
        real_open = builtins.open

        def opened(file, mode="r", *args, **kwargs):
            if any(c in mode for c in "wax+"):
                self._note(file)
            return real_open(file, mode, *args, **kwargs)

        def wrap(name):
            def call(path, *args, **kwargs):
                self._note(path)
                return real[name](path, *args, **kwargs)

            return call

        for name in real:
            setattr(os, name, wrap(name))
        builtins.open = io.open = opened
        try:
            yield self
        finally:
            builtins.open = io.open = real_open
            for name, function in real.items():
                setattr(os, name, function)


def _training_phase(rank: int, root: Path) -> None:
    """Two-process runs of RUN (in the group of the caller): ``whole`` in one call, ``parts`` stopped
    after epoch 1 and resumed; what each process returned, printed and wrote (process 1's writes
    under ``root`` recorded)."""
    whole, parts = root / "whole", root / "parts"
    recorder = WriteRecorder(str(root))
    output, errors, codes = io.StringIO(), io.StringIO(), []
    with (
        contextlib.redirect_stdout(output),
        contextlib.redirect_stderr(errors),
        recorder.active() if rank else contextlib.nullcontext(),
    ):
        codes.append(main(["train", *RUN, "--out", str(whole)]))
        codes.append(main(["train", *RUN, "--out", str(parts), "--stop-after", "1"]))
        if rank == 0:  # the network after stage 1, for a test of the BatchNorm statistics
            shutil.copy(parts / "checkpoint.pt", root / "epoch1.pt")
        codes.append(main(["train", "--resume", "--out", str(parts), "--quiet"]))
        codes.append(main(["train", *RUN, "--out", str(whole)]))  # refused by process 0: a run is there
    (root / f"training{rank}.json").write_text(
        json.dumps({"codes": codes, "stdout": output.getvalue(), "stderr": errors.getvalue(), "writes": recorder.paths})
    )


def _worker(rank: int, root: str, ports: list[int]) -> None:
    """Everything the tests check with two processes, in one launch (starting processes is the slow part)."""
    root = Path(root)
    dist.init_process_group("gloo")  # from torchrun's environment; the next phases run in this group
    _gradient_phase(rank, root)
    _training_phase(rank, root)
    dist.destroy_process_group()
    _shares_phase(rank, root, ports[:2])  # each command joins and leaves a group of its own
    _evaluation_phase(rank, str(root / "whole"), root, ports[2:])


@pytest.fixture(scope="module")
def processes_ran(tmp_path_factory) -> Path:
    """The folder where two spawned processes left what :func:`_worker` found."""
    root = tmp_path_factory.mktemp("ddp")
    spawn(_worker, str(root), [free_port() for _ in range(4)])
    return root


@pytest.fixture(scope="module")
def runs(processes_ran):
    """The training phase: its folder and, per process, the commands' exit statuses, output and writes."""
    return processes_ran, [json.loads((processes_ran / f"training{r}.json").read_text()) for r in range(2)]


def _records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if not k.endswith("time_s")} for line in lines]


def test_two_process_training_writes_only_on_process_0(runs):
    root, ranks = runs
    assert [r["codes"] for r in ranks] == [[0, 0, 0, 1], [0, 0, 0, 1]]
    assert ranks[1]["writes"] == [] and ranks[1]["stdout"] == ""
    # Process 0's refusal to replace the run is every process's error.
    assert "already exists: resume it (--resume)" in ranks[0]["stderr"]
    assert "process 0 stopped the run: FileExistsError" in ranks[1]["stderr"]
    assert "test accuracy: WNLL head" in ranks[0]["stdout"] and "continue with" in ranks[0]["stdout"]
    summary = json.loads((root / "whole" / "summary.json").read_text())
    assert (summary["world_size"], summary["backend"], summary["graph"]) == (2, "gloo", "global")
    assert summary["config"]["batch_size"] == 96  # the global batch
    assert summary["test_accuracy"] > 0.3 and summary["test_n"] == 359 and summary["templates"] == 300
    saved = load_checkpoint(root / "whole")
    assert saved["distributed"]["world_size"] == 2 and len(saved["distributed"]["rng"]) == 2
    # The processes' own random streams differ (dropout, PGD starts); the data generator does not.
    streams = saved["distributed"]["rng"]
    assert not torch.equal(streams[0]["torch"], streams[1]["torch"])
    assert torch.equal(streams[0]["data"], streams[1]["data"])
    assert sorted(p.name for p in (root / "whole").iterdir()) == ["checkpoint.pt", "log.jsonl", "summary.json"]


def test_two_process_resume_continues_identically(runs):
    root, _ = runs
    assert _records(root / "parts") == _records(root / "whole")
    whole, parts = load_checkpoint(root / "whole"), load_checkpoint(root / "parts")
    for name, value in whole["model"].items():
        assert torch.equal(parts["model"][name], value), name
    for key in ("torch", "data"):
        pairs = zip(whole["distributed"]["rng"], parts["distributed"]["rng"])
        assert all(torch.equal(a[key], b[key]) for a, b in pairs)


def test_evaluations_during_training_use_the_saved_network(runs):
    """After stage 1 (BatchNorm in training mode, per process on the CPU) the two processes evaluated
    the test split with process 0's running statistics: the network the checkpoint holds."""
    root, _ = runs
    first = _records(root / "whole")[0]
    saved = evaluate_checkpoint(root / "epoch1.pt", head="linear", device="cpu", batch_size=120)
    assert first["stage"] == "linear" and saved["accuracy"]["linear"] == first["test_acc"]


def test_resume_needs_the_same_number_of_processes(runs, tmp_path):
    root, _ = runs
    run = tmp_path / "run"
    run.mkdir()
    payload = load_checkpoint(root / "parts")
    payload.update(finished=False)
    from fastwnll.runtime import save_checkpoint

    save_checkpoint(run / "checkpoint.pt", payload)
    config = TrainConfig.from_dict({**payload["config"], "out": str(run)})
    with pytest.raises(ValueError, match="written by a run of 2"):
        train(config, resume=True, progress=False)


def test_single_process_run_writes_what_it_always_wrote(tmp_path):
    config = TrainConfig(
        dataset="digits",
        head="wnll",
        epochs=1,
        stage2_epochs=1,
        batch_size=128,
        stage2_batch_size=200,
        templates=200,
        device="cpu",
        out=str(tmp_path),
    )
    summary = train(config, progress=False)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [set(r) for r in records] == [
        {
            "epoch",
            "cycle",
            "stage",
            "epoch_in_stage",
            "lr",
            "train_loss",
            "train_acc",
            "train_time_s",
            "test_acc",
            "eval_time_s",
        },
        {
            "epoch",
            "cycle",
            "stage",
            "epoch_in_stage",
            "lr",
            "train_loss",
            "train_acc",
            "train_time_s",
            "test_acc",
            "test_acc_linear",
            "eval_time_s",
        },
    ]
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written == summary and summary["world_size"] == 1
    assert not {"backend", "graph"} & set(summary)
    assert "distributed" not in load_checkpoint(tmp_path)
    assert "graph" not in summary["config"]


# ----------------------------------------------------------------------------------------- (c) evaluation
EVALUATE = ["evaluate", "--templates", "300", "--batch-size", "70", "--json", "--device", "cpu"]
ATTACK = [
    "attack",
    "--attack",
    "pgd",
    "--eps",
    "0.1",
    "--steps",
    "3",
    "--defense",
    "tvm",
    "--tvm-iters",
    "10",
    "--protocol",
    "paper",
    "--n",
    "250",
    "--batch-size",
    "60",
    "--no-progress",
    "--device",
    "cpu",
]


def _evaluation_phase(rank: int, checkpoint: str, root: Path, ports: list[int]) -> None:
    output, codes = io.StringIO(), []
    with contextlib.redirect_stdout(output):
        # Each command joins a group from torchrun's environment and leaves it again.
        os.environ["MASTER_PORT"] = str(ports[0])
        codes.append(main([*EVALUATE, "--checkpoint", checkpoint]))
        os.environ["MASTER_PORT"] = str(ports[1])
        codes.append(main([*ATTACK, "--checkpoint", checkpoint, "--json", str(root / "attack-sharded.json")]))
    (root / f"evaluation{rank}.json").write_text(json.dumps({"codes": codes, "stdout": output.getvalue()}))


def test_sharded_evaluation_equals_one_process(runs, tmp_path, capsys):
    root, _ = runs
    checkpoint = str(root / "whole")
    ranks = [json.loads((root / f"evaluation{r}.json").read_text()) for r in range(2)]
    assert [r["codes"] for r in ranks] == [[0, 0], [0, 0]] and ranks[1]["stdout"] == ""
    sharded = json.loads(ranks[0]["stdout"].splitlines()[0])
    capsys.readouterr()
    assert main([*EVALUATE, "--checkpoint", checkpoint]) == 0
    single = json.loads(capsys.readouterr().out.splitlines()[0])
    assert sharded == single and set(single["accuracy"]) == {"linear", "wnll"}
    # The accuracies the two processes measured at the end of training are those of the saved network
    # (process 0's BatchNorm statistics) with its saved bank, in one process.
    summary = json.loads((root / "whole" / "summary.json").read_text())
    saved = evaluate_checkpoint(checkpoint, device="cpu", batch_size=120)["accuracy"]
    assert (saved["wnll"], saved["linear"]) == (summary["test_accuracy"], summary["test_accuracy_linear"])
    assert main([*ATTACK, "--checkpoint", checkpoint, "--json", str(tmp_path / "attack.json")]) == 0
    one = json.loads((tmp_path / "attack.json").read_text())
    two = json.loads((root / "attack-sharded.json").read_text())
    for key in ("n", "clean_accuracy", "robust_accuracy", "budget"):
        assert one[key] == two[key], key
    assert 0 < one["robust_accuracy"] < one["clean_accuracy"]


def test_torchrun_launch(runs, tmp_path):
    """The README's command: ``torchrun --nproc-per-node 2 -m fastwnll evaluate ...`` (here the
    interpreter's ``-m torch.distributed.run`` with a standalone rendezvous)."""
    root, _ = runs
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "fastwnll",
        *EVALUATE,
        "--checkpoint",
        str(root / "whole"),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert done.returncode == 0, done.stderr
    printed = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(printed) == 1  # process 0 only
    assert json.loads(printed[0])["n"] == 359


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_two_gpus_with_nccl_and_sync_batchnorm(tmp_path):
    """The run of RUN on two GPUs (nccl, SyncBatchNorm), and its checkpoint evaluated on two GPUs and on
    one: the same accuracies, up to the GPUs' non-deterministic rounding (two images)."""
    out = tmp_path / "run"
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "fastwnll"]
    on_cuda = ["cuda" if a == "cpu" else a for a in RUN]
    done = subprocess.run([*launch, "train", *on_cuda, "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["world_size"], summary["backend"], summary["graph"], summary["device"]) == (
        2,
        "nccl",
        "global",
        "cuda:0",
    )
    done = subprocess.run(
        [*launch, "evaluate", "--checkpoint", str(out), "--batch-size", "120", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    sharded = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("{")))["accuracy"]
    single = evaluate_checkpoint(out, device="cuda", batch_size=120)["accuracy"]
    for head, accuracy in single.items():
        assert sharded[head] == pytest.approx(accuracy, abs=2 / 359 + 1e-9)
    assert single["wnll"] == pytest.approx(summary["test_accuracy"], abs=2 / 359 + 1e-9)


# ----------------------------------------------------------------------------------------- (d) errors
def _shares_phase(rank: int, root: Path, ports: list[int]) -> None:
    """Two commands whose batches are too small for two processes: their exit statuses and errors."""
    codes, errors = [], io.StringIO()
    with contextlib.redirect_stderr(errors):
        for port, argv in zip(ports, (["--batch-size", "1"], ["--stage2-batch-size", "20", "--graph", "local"])):
            os.environ["MASTER_PORT"] = str(port)  # each command joins and leaves its own group
            codes.append(
                main(
                    [
                        "train",
                        "--dataset",
                        "digits",
                        "--head",
                        "wnll",
                        "--epochs",
                        "1",
                        "--device",
                        "cpu",
                        "--quiet",
                        "--out",
                        str(root / "small"),
                        *argv,
                    ]
                )
            )
    (root / f"small{rank}.json").write_text(json.dumps({"codes": codes, "stderr": errors.getvalue()}))


def test_batches_too_small_for_the_processes(processes_ran):
    for rank in range(2):
        found = json.loads((processes_ran / f"small{rank}.json").read_text())
        assert found["codes"] == [1, 1]
        assert "batch_size=1 is the global batch, shared out between 2 processes" in found["stderr"]
        assert "stage2_batch_size=20" in found["stderr"] and "k=15" in found["stderr"]
        assert "--graph global" in found["stderr"]
    assert not (processes_ran / "small").exists()


def test_global_graph_without_a_process_group_is_an_error():
    head = WNLLHead(4, 3, k=3, k_sigma=3, graph="global").train()
    with wnll_batch(head, torch.tensor([0, 1, 2, 0, 1, 2])):
        with pytest.raises(RuntimeError, match="initialized torch.distributed process group"):
            head(torch.randn(6, 4))
    with pytest.raises(ValueError, match="graph must be one of"):
        WNLLHead(4, 3, graph="everywhere")
    head.eval().set_templates(torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2]))
    assert head(torch.randn(2, 4)).shape == (2, 3)  # the graph option is for training only


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"graph": "global"}, "this run is a single process"),
        ({"backend": "gloo"}, "needs a distributed launch"),
        ({"graph": "sideways"}, "graph must be one of"),
        ({"backend": "mpi"}, "backend must be one of"),
    ],
)
def test_distributed_options_in_a_single_process_are_errors(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        train(TrainConfig(dataset="digits", epochs=1, device="cpu", out=str(tmp_path)), progress=False, **kwargs)
    assert not any(tmp_path.iterdir())


def test_cli_backend_without_torchrun_exits_1(tmp_path, capsys):
    assert (
        main(
            [
                "train",
                "--dataset",
                "digits",
                "--epochs",
                "1",
                "--device",
                "cpu",
                "--backend",
                "gloo",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 1
    )
    assert "needs a distributed launch" in capsys.readouterr().err
    assert main(["train", "--graph", "diagonal"]) == 2


@pytest.mark.parametrize("argv", [["demo"], ["report", "--model", "a=b", "--out", "x"], ["info"]])
def test_commands_of_one_process_refuse_a_torchrun_launch(argv, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(argv) == 1
    assert "runs in one process, but torchrun launched 2" in capsys.readouterr().err


def test_backend_choice():
    assert choose_backend(torch.device("cpu")) == "gloo"
    assert choose_backend(torch.device("cuda"), "auto") == "nccl"
    assert choose_backend(torch.device("cuda"), "gloo") == "gloo"
    with pytest.raises(ValueError, match="nccl' needs CUDA"):
        choose_backend(torch.device("cpu"), "nccl")
    with process_group(CPU) as processes:
        assert processes is SINGLE and not processes.enabled and processes.is_main


# ----------------------------------------------------------------------------------------- sharing out
@pytest.mark.parametrize("rows, world", [(7, 2), (96, 2), (5, 3), (2, 4), (1000, 7)])
def test_shares_partition_a_batch(rows, world):
    slices = [shard_rows(rows, Processes(rank=r, world_size=world)) for r in range(world)]
    assert [s.start for s in slices[1:]] == [s.stop for s in slices[:-1]] and slices[0].start == 0
    assert slices[-1].stop == rows
    sizes = [s.stop - s.start for s in slices]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("n, batch_size, world", [(359, 120, 2), (250, 60, 2), (100, 100, 3), (10, 3, 2)])
def test_batch_shares_are_whole_batches_in_order(n, batch_size, world):
    shares = [shard_batches(n, batch_size, Processes(rank=r, world_size=world)) for r in range(world)]
    everything = [item for share in shares for item in share]
    assert everything == shard_batches(n, batch_size, SINGLE)
    assert [(start, stop) for _, start, stop in everything] == [
        (s, min(s + batch_size, n)) for s in range(0, n, batch_size)
    ]


def test_batch_seeds():
    assert batch_seed(7, 0) == 7
    seeds = {batch_seed(s, b) for s in range(4) for b in range(2000)}
    assert len(seeds) == 8000 and all(0 <= v < 2**32 for v in seeds)


def test_tvm_augment_of_shares_changes_the_rows_of_the_whole_batch():
    x = torch.rand(10, 1, 8, 8)
    whole = tvm_augment(x, 0.3, torch.Generator().manual_seed(3))
    changed = (whole != x).flatten(1).any(1)
    assert int(changed.sum()) == 3
    parts = [tvm_augment(x[s], 0.3, torch.Generator().manual_seed(3), 10, s.start) for s in (slice(0, 4), slice(4, 10))]
    assert torch.equal(
        torch.cat([(p != x[s]).flatten(1).any(1) for p, s in zip(parts, (slice(0, 4), slice(4, 10)))]), changed
    )
