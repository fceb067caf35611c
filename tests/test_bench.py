"""``fastwnll bench``: the timing helpers, the synthetic data, every microbenchmark at tiny sizes on the
CPU (and on a GPU when there is one), the result files, the published targets and the summary that
``scripts/gpu_check.sh`` prints (checked with made-up figures)."""

import argparse
import importlib.util
import json
import shlex

import pytest
import torch

import fastwnll
from fastwnll.bench import bank, data, knn, results, summary, targets, timing, training, tv, wnll
from fastwnll.cli import build_parser, main
from fastwnll.runtime.ranges import Range

pytestmark = pytest.mark.usefixtures("one_thread")

ENV = results.environment("cpu")


# ------------------------------------------------------------------------------------------------
# timing


class FakeClock:
    """``time.perf_counter`` that advances only when a timed function says so."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_interleaved_times_are_medians_of_calls_in_turn_after_the_warmup(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(timing.time, "perf_counter", clock)
    calls = []
    durations = {"a": iter([100.0, 5.0, 1.0, 3.0, 2.0]), "b": iter([100.0, 10.0, 30.0, 20.0, 40.0])}

    def timed(name):
        def fn():
            calls.append(name)
            clock.now += next(durations[name])

        return fn

    a, b = timing.interleaved_times([timed("a"), timed("b")], repeats=4, warmup=1)
    assert calls == ["a", "b"] * 5  # in turn, the warm-up round first
    assert (a, b) == (2.5, 25.0)  # the 100 s warm-ups are not counted


def test_wall_and_cpu_times_are_measured_together(monkeypatch):
    wall, cpu = FakeClock(), FakeClock()
    monkeypatch.setattr(timing.time, "perf_counter", wall)
    monkeypatch.setattr(timing.time, "process_time", cpu)
    work = iter([(9.0, 9.0), (4.0, 1.0), (6.0, 1.5), (5.0, 1.2)])  # (wall, cpu) of each call

    def fn():
        w, c = next(work)
        wall.now += w
        cpu.now += c

    assert timing.measure_in_turn([fn], repeats=3) == [(5.0, pytest.approx(1.2))]  # others took the rest


def test_median_time_counts_the_warmup_calls_apart(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(timing.time, "perf_counter", clock)
    seconds = iter([50.0, 50.0, 1.0, 2.0, 9.0])

    def fn():
        clock.now += next(seconds)

    assert timing.median_time(fn, repeats=3, warmup=2) == 2.0


def test_timing_rejects_no_repeats_and_waits_for_the_gpu():
    with pytest.raises(ValueError, match="repeats must be at least 1, got 0"):
        timing.median_time(lambda: None, 0)
    assert timing.synchronizer("cuda") is torch.cuda.synchronize
    assert timing.synchronizer("cuda:1") is torch.cuda.synchronize
    assert timing.synchronizer("cpu") is not torch.cuda.synchronize
    assert timing.warmup_rounds("cpu") == 1 and timing.warmup_rounds("cuda") == 3


def test_failure_reports_backends_that_cannot_run_and_lets_bugs_through():
    assert timing.failure(lambda: 1) is None

    def missing():
        raise ImportError("backend='faiss' needs the faiss package")

    assert timing.failure(missing) == "ImportError: backend='faiss' needs the faiss package"
    with pytest.raises(TypeError):
        timing.failure(lambda: None + 1)


def test_device_name_says_what_the_cpu_figures_come_from():
    assert f"{torch.get_num_threads()} torch threads" in timing.device_name("cpu")
    env = results.environment("cpu")
    assert env["device"] == timing.device_name("cpu") and env["device_type"] == "cpu"
    assert env["torch_threads"] == torch.get_num_threads()
    assert ENV["torch"] == torch.__version__ and ENV["fastwnll"] == fastwnll.__version__


# ------------------------------------------------------------------------------------------------
# synthetic data


def test_clustered_features_are_seeded_clusters_with_a_decaying_spectrum():
    x, y = data.clustered_features(2000, seed=3)
    assert x.shape == (2000, 64) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(y, torch.arange(2000) % 10)
    assert torch.equal(x, data.clustered_features(2000, seed=3)[0])
    assert not torch.equal(x, data.clustered_features(2000, seed=4)[0])
    spread = x.double().std(0)
    assert spread[0] > 4 * spread[-1]  # coordinate j scales as (j + 1) ** -0.5 (8x here)
    idx, _ = fastwnll.knn_graph(x, 15)
    assert (y[idx] == y[:, None]).float().mean() > 0.6  # neighbours mostly share the class
    x64, _ = data.clustered_features(10, dtype=torch.float64)
    assert x64.dtype == torch.float64


def test_images_are_seeded_and_in_the_unit_interval():
    x = data.images((3, 2, 5, 7), seed=1)
    assert x.shape == (3, 2, 5, 7) and x.dtype == torch.float32
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    assert torch.equal(x, data.images((3, 2, 5, 7), seed=1))


# ------------------------------------------------------------------------------------------------
# the microbenchmarks, tiny


def test_wnll_rows_forward_and_backward_with_their_ratio():
    rows = wnll.run("cpu", [90, 150], 1, ENV)
    assert [(r["case"], r["size"], r["shape"]) for r in rows] == [
        ("forward", 90, "90x64"),
        ("forward+backward", 90, "90x64"),
        ("forward", 150, "150x64"),
        ("forward+backward", 150, "150x64"),
    ]
    for fwd, both in zip(rows[::2], rows[1::2]):
        assert fwd["median_ms"] > 0 and both["ratio"] == pytest.approx(both["median_ms"] / fwd["median_ms"])
        assert fwd["ratio"] is None and both["ratio_of"] == "forward+backward / forward"
    assert all(r["dtype"] == "float32" and r["device"] == ENV["device"] and r["repeats"] == 1 for r in rows)
    assert rows[2]["note"] == "50 templates, k=15"


def test_bank_rows_compare_the_full_rebuild_with_the_index():
    rows = bank.run("cpu", [(120, 7)], 1, ENV)
    assert [(r["case"], r["size"], r["shape"]) for r in rows] == [
        ("index (once per bank)", 120, "127x64"),
        ("full rebuild", 120, "127x64"),
        ("bank", 120, "127x64"),
        ("bank, inductive", 120, "127x64"),
    ]
    full = rows[1]["median_ms"]
    assert rows[1]["ratio"] == pytest.approx(1.0)
    for row in rows[2:]:
        assert row["ratio"] == pytest.approx(full / row["median_ms"]) and row["ratio_of"] == "full rebuild / this"
    assert all(r["median_ms"] > 0 and r["note"] == "120 templates, 7 queries, k=15" for r in rows)


def test_bank_timed_calls_give_the_full_rebuilds_scores():
    """What the bank rows time is the same interpolation as the full rebuild (transductive)."""
    x, y = data.clustered_features(127)
    options = {"k": bank.K, "k_sigma": bank.K_SIGMA, "num_classes": data.CLASSES}
    indexed = fastwnll.TemplateBank(x[:120], y[:120], **options)
    assert torch.equal(indexed.interpolate(x[120:]), fastwnll.wnll_interpolate(x[:120], y[:120], x[120:], **options))


def test_wnll_timed_call_is_the_interpolation_with_its_gradient(monkeypatch):
    """The forward+backward case really backpropagates to both feature sets."""
    seen = []
    real = fastwnll.wnll_interpolate

    def spy(templates, labels, queries, **options):
        out = real(templates, labels, queries, **options)
        seen.append((templates, queries, out.requires_grad, options))
        return out

    monkeypatch.setattr(fastwnll, "wnll_interpolate", spy)
    wnll.run("cpu", [90], 1, ENV)
    with_grad = [s for s in seen if s[2]]
    assert len(with_grad) == 2 and len(seen) == 4  # warm-up + one timed round of each case
    assert all(t.grad is not None and q.grad is not None and t.grad.abs().sum() > 0 for t, q, _, _ in with_grad)
    assert seen[0][3] == {"k": 15, "k_sigma": 8, "num_classes": 10}
    assert seen[0][0].shape == (30, 64) and seen[0][1].shape == (60, 64)


def test_recall_counts_the_neighbours_found():
    reference = torch.tensor([[1, 2, 3], [0, 2, 3]])
    assert knn.recall(reference, reference) == 1.0
    assert knn.recall(torch.tensor([[3, 2, 9], [9, 8, 7]]), reference) == pytest.approx(2 / 6)


def test_knn_rows_per_backend_with_recall_and_backends_that_cannot_run(monkeypatch):
    real = fastwnll.knn_graph

    def no_faiss(x, k, *, backend="auto"):
        if backend == "faiss":
            raise ImportError("backend='faiss' needs the faiss package (pip install faiss-cpu)")
        return real(x, k, backend=backend)

    monkeypatch.setattr(fastwnll, "knn_graph", no_faiss)
    rows = knn.run("cpu", [300], 1, ENV, backends=("native", "faiss", "torch"))
    by = {r["backend"]: r for r in rows}
    assert by["native"]["recall"] == 1.0 and by["torch"]["recall"] == 1.0 and by["native"]["note"] == "exact"
    assert by["native"]["median_ms"] > 0 and by["native"]["shape"] == "300x64"
    assert by["faiss"]["median_ms"] is None and by["faiss"]["recall"] is None and by["faiss"]["repeats"] == 0
    assert by["faiss"]["note"] == (
        "did not run: ImportError: backend='faiss' needs the faiss package (pip install faiss-cpu)"
    )
    assert knn.DEFAULT_BACKENDS["cpu"][0] == "native" and "hnsw" not in knn.DEFAULT_BACKENDS["cuda"]


def test_knn_recall_of_an_approximate_graph_is_measured_against_the_exact_one(monkeypatch):
    real = fastwnll.knn_graph

    def approximate(x, k, *, backend="auto"):
        idx, dist = real(x, k, backend="native")
        if backend == "hnsw":  # every other row has its (k+1)-th neighbour in place of its nearest
            idx = idx.clone()
            idx[::2, 0] = real(x, k + 1, backend="native")[0][::2, k]
        return idx, dist

    monkeypatch.setattr(fastwnll, "knn_graph", approximate)
    for order in (("hnsw", "native"), ("native", "hnsw")):  # measured after every backend ran
        by = {r["backend"]: r for r in knn.run("cpu", [200], 1, ENV, backends=order)}
        assert by["hnsw"]["note"] == "approximate" and by["native"]["recall"] == 1.0
        assert by["hnsw"]["recall"] == pytest.approx(1 - 1 / 30)
    assert knn.run("cpu", [200], 1, ENV, backends=("hnsw",))[0]["recall"] is None  # no exact graph


def test_tv_rows_per_operation_and_backend():
    rows = tv.run("cpu", (("tiny", (2, 1, 8, 8)),), 1, ENV, iters=3, backends=("torch", "triton"))
    assert [(r["case"], r["backend"]) for r in rows] == [
        ("tv_denoise tiny", "torch"),
        ("tv_denoise tiny", "triton"),
        ("tvm tiny", "torch"),
        ("tvm tiny", "triton"),
    ]
    eager, kernel = rows[0], rows[1]
    assert eager["median_ms"] > 0 and eager["note"] == "3 iterations" and eager["iters"] == 3
    assert kernel["median_ms"] is None and kernel["ratio"] is None  # no Triton on CPU tensors here
    # why it did not run: CPU tensors, or (where triton is not installed at all) the missing package
    reason = (
        "ValueError: backend='triton' needs CUDA tensors"
        if importlib.util.find_spec("triton")
        else ("RuntimeError: backend='triton' needs the triton package, which is not installed")
    )
    assert kernel["note"].startswith(f"did not run: {reason}")
    assert tv.default_backends("cpu") == ("torch",) and tv.default_backends("cuda") == ("torch", "triton")


def test_tv_ratio_is_eager_time_over_kernel_time(monkeypatch):
    monkeypatch.setattr(tv, "interleaved_times", lambda fns, *a: [0.2, 0.01][: len(fns)])
    monkeypatch.setattr(tv, "call", lambda op, x, backend, iters: x)
    rows = tv.run("cpu", (("tiny", (1, 1, 4, 4)),), 1, ENV, backends=("torch", "triton"))
    assert rows[1]["ratio"] == pytest.approx(20.0) and rows[1]["ratio_of"] == "eager torch / this"
    assert rows[0]["ratio"] is None


@pytest.mark.filterwarnings("ignore::fastwnll.tv.denoise.TVConvergenceWarning")  # 4 iterations on purpose
def test_tv_call_runs_the_operation_with_the_backend_and_no_tolerance():
    x = data.images((1, 1, 9, 9))
    expected = fastwnll.tv_denoise(x, tv.LAM, iters=4, tol=None, backend="torch")
    assert torch.equal(tv.call("tv_denoise", x, "torch", 4), expected)
    torch.manual_seed(0)
    masked = tv.call("tvm", x, "torch", 4)
    torch.manual_seed(0)
    assert torch.equal(masked, fastwnll.tvm(x, drop_rate=0.5, lam=tv.LAM, iters=4, tol=None, backend="torch"))


def test_repeat_rows_repeats_a_small_dataset():
    x, y = torch.arange(3.0).reshape(3, 1, 1, 1), torch.tensor([0, 1, 2])
    xr, yr = training.repeat_rows(x, y, 7)
    assert xr.flatten().tolist() == [0, 1, 2, 0, 1, 2, 0] and yr.tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert training.repeat_rows(x, y, 2)[1].tolist() == [0, 1]


def test_training_rows_time_three_epochs_through_the_trainer(monkeypatch):
    from fastwnll.nn.head import WNLLHead
    from fastwnll.train import steps

    epochs, forwards = [], []
    real_epoch, real_forward = steps.train_epoch, WNLLHead.forward

    def spy_epoch(model, stage, x, y, config, generator, *args, **kwargs):
        trained = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
        epochs.append(
            (
                type(stage).__name__,
                stage.name,
                x.shape[0],
                stage.batch_size,
                config.steps,
                args[2] is not None,
                sorted(trained),
            )
        )
        return real_epoch(model, stage, x, y, config, generator, *args, **kwargs)

    def spy_forward(head, features):
        forwards.append((len(epochs), head.mode, head.training))
        return real_forward(head, features)

    monkeypatch.setattr(steps, "train_epoch", spy_epoch)
    monkeypatch.setattr(WNLLHead, "forward", spy_forward)
    rows = training.run("cpu", 16, 2, 1, ENV, pgd_steps=1, adv_templates=20)
    assert [r["backend"] for r in rows] == ["linear, stage 1", "linear, stage 2", "wnll, stage 2"]
    stage1, stage2, wnll_row = rows
    assert stage1["ratio"] is None
    assert stage2["ratio"] == pytest.approx(stage2["median_ms"] / stage1["median_ms"])
    assert wnll_row["ratio"] == pytest.approx(wnll_row["median_ms"] / stage2["median_ms"])
    assert wnll_row["ratio_of"] == "WNLL head / linear head, both stage 2"
    assert stage1["ms_per_step"] == pytest.approx(stage1["median_ms"] / 2) and stage1["pgd_steps"] == 1
    assert stage1["shape"] == "16x1x28x28" and stage1["dtype"] == "float32" and stage1["size"] == 16
    assert stage1["cpu_ms"] > 0 and stage1["cpu_ratio"] is None
    assert wnll_row["cpu_ratio"] == pytest.approx(wnll_row["cpu_ms"] / stage2["cpu_ms"])
    assert "synthetic images" in stage1["note"]
    # a warm-up and a timed epoch of each, in turn: stage 1 (everything trained, no bank) and stage 2
    # (the buffer block trained, an attack bank) with the head in linear mode, then in wnll mode
    assert (
        epochs
        == [
            ("Stage", "linear", 32, 16, 1, False, ["buffer", "head", "trunk"]),
            ("LinearHeadStage", "wnll", 32, 16, 1, True, ["buffer"]),
            ("Stage", "wnll", 32, 16, 1, True, ["buffer"]),
        ]
        * 2
    )
    modes = {(epoch % 3, mode) for epoch, mode, _ in forwards}
    assert modes == {(2, "linear"), (0, "wnll")}  # the stage-2 linear epoch never interpolates
    assert {training_ for epoch, _, training_ in forwards if epoch % 3 == 0} == {True, False}  # PGD and step


def test_training_on_real_digits(mnist_dir):
    from fastwnll.data import load_dataset

    digits = load_dataset("mnist10k", data_dir=mnist_dir, split="train")
    rows = training.run("cpu", 16, 1, 1, ENV, pgd_steps=1, adv_templates=100, data=digits, data_name="mnist10k")
    assert all(r["median_ms"] > 0 and "mnist10k images" in r["note"] for r in rows)


# ------------------------------------------------------------------------------------------------
# rows and files


def test_rows_carry_what_makes_them_comparable():
    row = results.make_row(ENV, "wnll", "forward", "auto", 6000, (6000, 64), torch.float32, 0.0015, 5, note="x")
    assert row == {
        "bench": "wnll",
        "case": "forward",
        "backend": "auto",
        "size": 6000,
        "shape": "6000x64",
        "dtype": "float32",
        "median_ms": pytest.approx(1.5),
        "ratio": None,
        "ratio_of": "",
        "repeats": 5,
        "device": ENV["device"],
        "torch": torch.__version__,
        "fastwnll": fastwnll.__version__,
        "note": "x",
    }
    assert list(row) == list(results.COLUMNS)
    assert results.make_row(ENV, "tv", "c", "b", 1, (1,), "bfloat16 autocast", None, 0)["median_ms"] is None


def test_result_files_round_trip_and_are_never_replaced_unasked(tmp_path):
    paths = results.output_paths(tmp_path / "new", "knn", "cpu")
    assert [p.name for p in paths] == ["knn_cpu.csv", "knn_cpu.json"]
    assert results.output_paths(tmp_path, "tv", torch.device("cuda", 1))[0].name == "tv_cuda.csv"
    rows = [
        results.make_row(ENV, "knn", "knn_graph", "native", 10, (10, 64), torch.float32, 0.001, 1, recall=1.0),
        results.make_row(ENV, "knn", "knn_graph", "faiss", 10, (10, 64), torch.float32, None, 0, recall=None),
    ]
    results.check_paths(paths, overwrite=False)
    results.write_results(paths, rows, ENV, "knn", "fastwnll bench knn")
    payload = results.read_results(paths[1])
    assert payload["rows"] == rows and payload["environment"] == ENV and payload["command"] == "fastwnll bench knn"
    lines = paths[0].read_text().splitlines()
    assert lines[0].split(",") == list(results.COLUMNS) + ["recall"] and lines[2].split(",")[6] == ""
    with pytest.raises(FileExistsError, match="knn_cpu.csv, .*knn_cpu.json already exist"):
        results.check_paths(paths, overwrite=False)
    results.check_paths(paths, overwrite=True)


def test_reading_a_file_that_is_not_a_result_is_an_error(tmp_path):
    (tmp_path / "a.json").write_text("{not json")
    (tmp_path / "b.json").write_text('{"rows": []}')
    with pytest.raises(ValueError, match="a.json: not a benchmark result file"):
        results.read_results(tmp_path / "a.json")
    with pytest.raises(ValueError, match="b.json: not a benchmark result file"):
        results.read_results(tmp_path / "b.json")


def test_the_printed_table_leaves_out_empty_columns_and_rounds():
    rows = [
        {"case": "forward", "median_ms": 1234.5678, "ratio": None, "note": ""},
        {"case": "fb", "median_ms": 0.012345, "ratio": 2.3456, "note": ""},
    ]
    assert results.display(rows, ("case", "median_ms", "ratio", "note")).splitlines() == [
        "| case | median_ms | ratio |",
        "|---|---|---|",
        "| forward | 1235 |  |",
        "| fb | 0.0123 | 2.35 |",
    ]
    assert results.shown(99.95) == "100" and results.shown(None) == "" and results.shown(3) == "3"


# ------------------------------------------------------------------------------------------------
# targets and the summary (made-up figures)


# key: (bench, case, backend, size, median ms, ratio) of a made-up GPU run that meets every target
GPU_FIGURES = {
    "fwd6k": ("wnll", "forward", "auto", 6000, 0.9, None),
    "fb6k": ("wnll", "forward+backward", "auto", 6000, 2.0, 2.2),
    "fwd50k": ("wnll", "forward", "auto", 50000, 4.5, None),
    "fb50k": ("wnll", "forward+backward", "auto", 50000, 10.0, 2.2),
    "tv_eager": ("tv", "tv_denoise CIFAR", "torch", 512, 50.0, None),
    "tv": ("tv", "tv_denoise CIFAR", "triton", 512, 2.0, 25.0),
    "tvm": ("tv", "tvm CIFAR", "triton", 512, 2.5, 20.0),
    "stage2": ("training", "PGD epoch", "linear, stage 2", 6000, 900.0, 0.9),
    "training": ("training", "PGD epoch", "wnll, stage 2", 6000, 1000.0, 1.1),
}


def gpu_rows(**changes) -> list[dict]:
    """Rows of the made-up GPU run; ``changes``: {key: its new figure (its ratio if it has one, else its
    time), or None to leave the row out}."""
    env = dict(ENV, device="Made-up GPU", device_type="cuda")
    rows = []
    for key, (bench, case, backend, size, ms, ratio) in GPU_FIGURES.items():
        if key in changes and changes[key] is None:
            continue
        if key in changes:
            ms, ratio = (changes[key], ratio) if ratio is None else (ms, changes[key])
        rows.append(
            dict(
                results.make_row(env, bench, case, backend, size, (size, 64), "float32", ms / 1e3, 5, ratio=ratio),
                device_type="cuda",
            )
        )
    return rows


def statuses(rows) -> dict:
    return {t["target"]: t["status"] for t in targets.check(rows)}


def test_every_target_met():
    checked = targets.check(gpu_rows())
    assert [t["status"] for t in checked] == ["met"] * len(targets.TARGETS)
    assert checked[0] == {
        "target": "WNLL forward, n = 6,000",
        "limit": "<= 1 ms",
        "value": pytest.approx(0.9),
        "shape": "6000x64",
        "device": "Made-up GPU",
        "status": "met",
    }
    assert checked[4]["limit"] == ">= 10x" and checked[4]["value"] == 25.0


@pytest.mark.parametrize(
    "key, value, target",
    [
        ("fwd6k", 1.01, "WNLL forward, n = 6,000"),
        ("fwd50k", 5.5, "WNLL forward, n = 50,000"),
        ("fb6k", 2.6, "WNLL forward+backward / forward, n = 6,000"),
        ("fb50k", 3.0, "WNLL forward+backward / forward, n = 50,000"),
        ("tv", 9.9, "TV fused kernel vs eager torch, tv_denoise, CIFAR 512x3x32x32"),
        ("tvm", 5.0, "TV fused kernel vs eager torch, tvm, CIFAR 512x3x32x32"),
        ("training", 1.25, "PGD epoch, WNLL head / linear head (stage 2)"),
    ],
)
def test_each_target_can_be_missed(key, value, target):
    found = statuses(gpu_rows(**{key: value}))
    assert found.pop(target) == "NOT MET"
    assert set(found.values()) == {"met"}
    found = statuses(gpu_rows(**{key: None}))
    assert found.pop(target) == "missing"
    assert set(found.values()) == {"met"}


def test_limits_are_inclusive_and_the_last_measurement_counts():
    assert statuses(gpu_rows(fwd6k=1.0))["WNLL forward, n = 6,000"] == "met"
    assert statuses(gpu_rows(tv=10.0))["TV fused kernel vs eager torch, tv_denoise, CIFAR 512x3x32x32"] == "met"
    rows = gpu_rows() + gpu_rows(fwd6k=3.0)[:1]
    assert statuses(rows)["WNLL forward, n = 6,000"] == "NOT MET"


def test_rows_of_other_sizes_backends_or_devices_do_not_count():
    rows = [
        dict(r, size=5000) if r["bench"] == "wnll" and r["case"] == "forward" and r["size"] == 6000 else r
        for r in gpu_rows()
    ]
    assert statuses(rows)["WNLL forward, n = 6,000"] == "missing"
    rows = [dict(r, backend="torch") if r["backend"] == "triton" else r for r in gpu_rows()]
    assert statuses(rows)["TV fused kernel vs eager torch, tvm, CIFAR 512x3x32x32"] == "missing"
    cpu = [dict(r, device_type="cpu") for r in gpu_rows(fwd6k=80.0)]
    checked = targets.check(cpu)
    assert {t["status"] for t in checked} == {"n/a on cpu"} and checked[0]["value"] == pytest.approx(80.0)
    # a GPU run of the bench that lacks the size is missing, even beside CPU rows of it
    assert statuses(cpu + [r for r in gpu_rows() if r["size"] != 6000])["WNLL forward, n = 6,000"] == "missing"
    assert {t["status"] for t in targets.check([])} == {"missing"}


def write_stages(folder, lines: list[tuple]) -> str:
    """A stages file as gpu_check.sh writes it, with a log per stage holding ``detail``."""
    text = []
    for name, code, seconds, budget, detail in lines:
        log = folder / f"{name}.log"
        log.write_text(f"first line\n{detail}\n\n")
        text.append(f"{name}\t{code}\t{seconds}\t{budget}\t{log}")
    path = folder / "stages.tsv"
    path.write_text("\n".join(text) + "\n")
    return str(path)


def test_stages_are_read_with_their_outcome(tmp_path):
    path = write_stages(
        tmp_path,
        [
            ("build", 0, 61, 100, "Successfully installed fastwnll"),
            ("tests-cuda", 1, 80, 120, "2 failed, 121 passed in 80.0s"),
            ("tests-triton", 124, 40, 40, "..."),
            ("bench-tv", 137, 30, 25, ""),
            ("bench-training", "skipped", 0, 0, ""),
        ],
    )
    stages = summary.read_stages(path)
    assert [(s["stage"], s["status"], s["ok"]) for s in stages] == [
        ("build", "passed", True),
        ("tests-cuda", "failed (exit 1)", False),
        ("tests-triton", "timed out (40 s)", False),
        ("bench-tv", "timed out (25 s)", False),
        ("bench-training", "skipped: no time left", False),
    ]
    assert stages[0]["detail"] == "Successfully installed fastwnll" and stages[1]["seconds"] == 80
    assert stages[1]["budget_s"] == 120 and stages[3]["detail"] == "first line"
    bad = tmp_path / "bad.tsv"
    bad.write_text("build\t0\t61\n")
    with pytest.raises(ValueError, match=r"bad.tsv, line 1: expected name, exit status, seconds, budget and log"):
        summary.read_stages(bad)
    assert summary.last_line(tmp_path / "absent.log") == ""


def write_run(folder, rows, device_type="cuda"):
    """Result files of a made-up run in ``folder``: one per benchmark."""
    env = dict(ENV, device="Made-up GPU" if device_type == "cuda" else ENV["device"], device_type=device_type)
    for bench in sorted({r["bench"] for r in rows}):
        mine = [{k: v for k, v in r.items() if k != "device_type"} for r in rows if r["bench"] == bench]
        results.write_results(results.output_paths(folder, bench, device_type), mine, env, bench, "made up")


def test_summary_of_a_run_that_meets_every_target(tmp_path):
    write_run(tmp_path, gpu_rows())
    stages = write_stages(tmp_path, [("build", 0, 61, 100, "ok")])
    (tmp_path / "notes.json").write_text("[]")
    s = summary.summarize(tmp_path, stages, title="GPU check")
    assert s["ok"] and s["devices"] == ["Made-up GPU"] and s["environment"]["device_type"] == "cuda"
    assert len(s["rows"]) == 9 and all(r["device_type"] == "cuda" for r in s["rows"])
    assert s["unread"] == [f"{tmp_path / 'notes.json'}: not a benchmark result file (no bench, environment and rows)"]
    text = summary.markdown(s)
    assert text.startswith("# GPU check\n\n- device: Made-up GPU\n")
    assert "- all stages passed and all targets met: yes" in text
    assert "| build | passed | 61 / 100 | ok |" in text
    assert "| WNLL forward, n = 6,000 | <= 1 ms | 0.9 | 6000x64 | met |" in text
    assert "| tv | tv_denoise CIFAR | triton | 512x64 | float32 | 2 | 25 |" in text
    assert "Not read: " in text


def test_summary_is_not_ok_when_a_stage_fails_or_a_target_is_missed(tmp_path):
    write_run(tmp_path, gpu_rows())
    assert not summary.summarize(tmp_path, write_stages(tmp_path, [("build", 2, 5, 100, "error")]))["ok"]
    write_run(tmp_path, gpu_rows(tvm=9.0))
    s = summary.summarize(tmp_path)
    assert not s["ok"] and "all targets met: NO" in summary.markdown(s)
    assert (
        "| TV fused kernel vs eager torch, tvm, CIFAR 512x3x32x32 | >= 10x | 9 | 512x64 | NOT MET |"
        in summary.markdown(s)
    )


def test_summary_of_a_cpu_run_does_not_apply_the_gpu_targets(tmp_path):
    write_run(tmp_path, [dict(r, device_type="cpu") for r in gpu_rows(fwd6k=75.0)], device_type="cpu")
    s = summary.summarize(tmp_path)
    assert s["ok"] and {t["status"] for t in s["targets"]} == {"n/a on cpu"}
    assert summary.device_slug(s) == "cpu"


def test_summary_file_names_take_the_device(tmp_path):
    write_run(tmp_path, gpu_rows())
    s = summary.summarize(tmp_path)
    s["environment"]["device"] = "NVIDIA H200 (SXM) 141GB"
    assert summary.device_slug(s) == "nvidia_h200_sxm_141gb"
    md, js = summary.summary_paths(tmp_path / "gpu_check_{device}.md", s)
    assert md.name == "gpu_check_nvidia_h200_sxm_141gb.md" and js == md.with_suffix(".json")
    with pytest.raises(ValueError, match="must end in .md"):
        summary.summary_paths(tmp_path / "summary.txt", s)
    empty = summary.summarize(tmp_path / "nothing")
    assert summary.device_slug(empty) == "unknown" and not empty["ok"]
    assert "- device: none (no result was read)" in summary.markdown(empty)
    named = summary.summarize(tmp_path / "nothing", device="cpu")  # the run's device, no result
    assert summary.device_slug(named) == "cpu" and named["devices"] == [timing.device_name("cpu")]


def test_summary_command_checks_and_never_replaces_unasked(tmp_path, capsys):
    write_run(tmp_path, gpu_rows(fwd50k=7.0))
    argv = ["bench", "summary", "--out", str(tmp_path), "--summary", str(tmp_path / "s_{device}.md")]
    assert main(argv) == 0  # a report, whatever the targets
    out = capsys.readouterr().out
    assert "| WNLL forward, n = 50,000 | <= 5 ms | 7 | 50000x64 | NOT MET |" in out
    written = json.loads((tmp_path / "s_made_up_gpu.json").read_text())
    assert not written["ok"] and written["targets"][1]["status"] == "NOT MET"
    assert main(argv + ["--check"]) == 1
    assert "s_made_up_gpu.md, " in capsys.readouterr().err  # exists: refused before writing
    assert main(argv + ["--check", "--overwrite"]) == 1  # written, and the check fails
    write_run(tmp_path, gpu_rows())
    assert main(argv + ["--check", "--overwrite"]) == 0
    assert main(["bench", "summary", "--out", str(tmp_path / "absent")]) == 1
    assert "no such folder of benchmark results" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# the command line


def bench_parsers() -> dict[str, argparse.ArgumentParser]:
    top = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["bench"]
    return dict(next(a for a in top._actions if isinstance(a, argparse._SubParsersAction)).choices)


def test_every_bench_has_help_and_every_numeric_option_a_range(capsys):
    parsers = bench_parsers()
    assert sorted(parsers) == ["bank", "knn", "summary", "training", "tv", "wnll"]
    for name, parser in parsers.items():
        assert main(["bench", name, "--help"]) == 0
        assert f"usage: fastwnll bench {name}" in capsys.readouterr().out
        for action in parser._actions:
            assert action.type not in (int, float), f"bench {name} {action.option_strings} has no range"
            if name != "summary" and action.dest in ("repeats", "sizes", "batch", "steps", "iters"):
                assert isinstance(action.type.__self__, Range)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bench"], "the following arguments are required: BENCH"),
        (["bench", "wnll", "--sizes", "10"], "argument --sizes: must be an integer >= 64, got '10'"),
        (["bench", "knn", "--repeats", "0"], "argument --repeats: must be an integer >= 1, got '0'"),
        (["bench", "knn", "--backends", "annoy"], "argument --backends: invalid choice: 'annoy'"),
        (["bench", "tv", "--sizes", "100"], "unrecognized arguments: --sizes"),
        (["bench", "training", "--pgd-steps", "0"], "argument --pgd-steps: must be an integer >= 1, got '0'"),
        (["bench", "tv", "--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
        (
            ["bench", "bank", "--cases", "5000"],
            "argument --cases: expected TEMPLATES:QUERIES such as 5000:50, got '5000'",
        ),
        (["bench", "bank", "--cases", "10:5"], "argument --cases: must be an integer >= 64, got '10'"),
    ],
)
def test_usage_errors(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_bench_command_writes_tagged_rows_and_never_replaces_them_unasked(tmp_path, capsys):
    argv = ["bench", "wnll", "--device", "cpu", "--sizes", "64", "--repeats", "1", "--out", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        f"fastwnll bench wnll on {timing.device_name('cpu')} (torch {torch.__version__}, "
        f"fastwnll {fastwnll.__version__})"
    )
    assert "| forward+backward | auto | 64x64 | float32 |" in out
    payload = json.loads((tmp_path / "wnll_cpu.json").read_text())
    assert [r["case"] for r in payload["rows"]] == ["forward", "forward+backward"]
    assert payload["environment"]["device_type"] == "cpu" and payload["bench"] == "wnll"
    recorded = shlex.split(payload["command"])
    assert recorded[:3] == ["fastwnll", "bench", "wnll"]
    assert build_parser().parse_args(recorded[1:]).sizes == [64]  # the command reproduces the run
    assert (tmp_path / "wnll_cpu.csv").read_text().splitlines()[0].startswith("bench,case,backend,size,shape")
    before = (tmp_path / "wnll_cpu.json").read_text()
    assert main(argv) == 1
    assert "already exist: replace them with overwrite=True (--overwrite)" in capsys.readouterr().err
    assert (tmp_path / "wnll_cpu.json").read_text() == before
    assert main(argv + ["--overwrite"]) == 0


@pytest.mark.parametrize(
    "argv, cases",
    [
        (["knn", "--sizes", "100", "--backends", "native", "torch"], ["knn_graph", "knn_graph"]),
        (
            ["bank", "--cases", "200:5", "100:1"],
            ["index (once per bank)", "full rebuild", "bank", "bank, inductive"] * 2,
        ),
        (["tv", "--batch", "2", "--iters", "3"], ["tv_denoise CIFAR", "tvm CIFAR", "tv_denoise MNIST", "tvm MNIST"]),
        (["training", "--batch", "16", "--steps", "1", "--pgd-steps", "1", "--adv-templates", "20"], ["PGD epoch"] * 3),
    ],
)
def test_every_bench_runs_from_the_command_line(tmp_path, argv, cases):
    assert main(["bench", *argv, "--device", "cpu", "--repeats", "1", "--out", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / f"{argv[0]}_cpu.json").read_text())
    assert [r["case"] for r in payload["rows"]] == cases
    assert all(r["median_ms"] > 0 for r in payload["rows"])


def test_tv_batch_option_keeps_every_shape_but_the_count(tmp_path):
    assert (
        main(
            [
                "bench",
                "tv",
                "--full",
                "--batch",
                "1",
                "--iters",
                "1",
                "--device",
                "cpu",
                "--repeats",
                "1",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    rows = json.loads((tmp_path / "tv_cpu.json").read_text())["rows"]
    assert sorted({r["shape"] for r in rows}) == ["1x1x28x28", "1x3x224x224", "1x3x32x32"]


@pytest.mark.cuda
def test_benchmarks_on_the_gpu(tmp_path):
    """On a GPU: rows tagged with its name; the Triton kernels timed against eager torch."""
    assert main(["bench", "wnll", "--device", "cuda", "--sizes", "300", "--repeats", "2", "--out", str(tmp_path)]) == 0
    assert (
        main(
            [
                "bench",
                "tv",
                "--device",
                "cuda",
                "--batch",
                "8",
                "--iters",
                "20",
                "--repeats",
                "2",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    rows = json.loads((tmp_path / "wnll_cuda.json").read_text())["rows"]
    assert all(r["device"] == torch.cuda.get_device_name() and r["median_ms"] > 0 for r in rows)
    tv_rows = json.loads((tmp_path / "tv_cuda.json").read_text())["rows"]
    kernels = [r for r in tv_rows if r["backend"] == "triton"]
    assert len(kernels) == 4 and all(r["ratio"] > 0 and r["ratio_of"] == "eager torch / this" for r in kernels)
