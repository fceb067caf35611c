"""Feature-space geometry: the metrics against analytic values on constructed feature sets, the
projection, the worst-case choice, and the ``geometry`` command on tiny digits models."""

import json
import math
import shutil

import pytest
import torch
from torch import nn

from fastwnll.cli import main
from fastwnll.evaluation import eval_data, load_target
from fastwnll.geometry import class_geometry, feature_geometry, geometry_metrics, knn_true_share, mean_displacement
from fastwnll.geometry.adversarial import prefer_second
from fastwnll.geometry.commands import model_argument
from fastwnll.geometry.features import embed, template_bank
from fastwnll.geometry.plot import DPI, arrow_rows, figure_size, grid_shape
from fastwnll.geometry.projection import pca_2d, project, tsne_2d
from fastwnll.models.base import Classifier
from fastwnll.train import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")


def distances(a, b):
    """Euclidean distances [len(a), len(b)] by explicit differences (float64-exact, unlike cdist's matmul form)."""
    return (a[:, None] - b[None]).norm(dim=2)


def clusters(sizes, centroids, rms, *, seed=0, dtype=torch.float64):
    """Gaussian clusters moved and scaled so that class c has exactly the centroid ``centroids[c]``
    and RMS distance ``rms[c]`` to it: ``(features [sum(sizes), d], labels)``."""
    generator = torch.Generator().manual_seed(seed)
    centroids = torch.as_tensor(centroids, dtype=torch.float64)
    parts, labels = [], []
    for c, (size, radius) in enumerate(zip(sizes, rms)):
        noise = torch.randn(size, centroids.shape[1], generator=generator, dtype=torch.float64)
        noise -= noise.mean(0)
        noise *= radius / noise.pow(2).sum(1).mean().sqrt()
        parts.append(centroids[c] + noise)
        labels.append(torch.full((size,), c, dtype=torch.int64))
    return torch.cat(parts).to(dtype), torch.cat(labels)


# ------------------------------------------------------------------------------ metrics, analytic


@pytest.mark.parametrize(
    "dtype, scale, offset",
    [
        (torch.float64, 1.0, 0.0),
        (torch.float32, 1.0, 0.0),
        (torch.float64, 1e-3, 0.0),
        (torch.float64, 1e3, 0.0),
        (torch.float64, 1.0, 1e6),
        (torch.float32, 1e-4, 0.0),
    ],
)
def test_two_gaussian_clusters_have_their_analytic_spread_and_distance(dtype, scale, offset):
    d = 6
    centroids = torch.zeros(2, d)
    centroids[1, 0] = 5.0
    x, y = clusters([40, 60], centroids, [1.0, 2.0])
    x = (x * scale + offset).to(dtype)
    g = class_geometry(x, y)
    rel = 1e-6 if dtype == torch.float32 else 1e-9
    spread = math.sqrt((40 * 1.0 + 60 * 4.0) / 100)
    assert g["spread"] == pytest.approx(scale * spread, rel=rel)
    assert g["inter_class_mean"] == pytest.approx(scale * 5.0, rel=rel)
    assert g["inter_class_min"] == pytest.approx(scale * 5.0, rel=rel)
    assert g["spread_ratio"] == pytest.approx(spread / 5.0, rel=rel)
    assert g["classes"] == 2


def test_three_classes_mean_and_min_centroid_distance():
    # centroids on a 3-4-5 right triangle: distances 3, 4, 5
    x, y = clusters([10, 20, 30], [[0.0, 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, 4.0, 0.0]], [0.5, 0.5, 0.5], seed=1)
    g = class_geometry(x, y)
    assert g["inter_class_mean"] == pytest.approx(4.0, rel=1e-12)
    assert g["inter_class_min"] == pytest.approx(3.0, rel=1e-12)
    assert g["spread"] == pytest.approx(0.5, rel=1e-12)


def test_labels_need_not_be_contiguous_or_sorted():
    x, y = clusters([5, 7], [[0.0, 0.0], [0.0, 2.0]], [1.0, 1.0], seed=2)
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    g = class_geometry(x[perm], (y * 7 + 3)[perm])
    assert g["inter_class_mean"] == pytest.approx(2.0, rel=1e-12) and g["spread"] == pytest.approx(1.0, rel=1e-12)


def test_displacement_by_a_known_vector_and_by_known_lengths():
    x, y = clusters([30, 30], [[0.0, 0.0, 0.0], [4.0, 0.0, 0.0]], [1.0, 1.0])
    v = torch.tensor([0.6, -0.8, 0.0], dtype=torch.float64)  # length 1
    assert mean_displacement(x, x + 2.5 * v) == pytest.approx(2.5, rel=1e-12)
    directions = torch.randn(60, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    directions /= directions.norm(dim=1, keepdim=True)
    lengths = torch.linspace(0.1, 3.0, 60, dtype=torch.float64)
    assert mean_displacement(x, x + lengths[:, None] * directions) == pytest.approx(float(lengths.mean()), rel=1e-12)
    bank, bank_y = clusters([20, 20], [[0.0, 0.0, 0.0], [4.0, 0.0, 0.0]], [0.1, 0.1], seed=4)
    g = geometry_metrics(x, x + 2.5 * v, y, bank, bank_y, 5)
    assert g["relative_displacement"] == pytest.approx(2.5 / 4.0, rel=1e-12)
    assert g["relative_displacement_se"] == pytest.approx(0.0, abs=1e-12)
    # lengths 1 and 3 alternating: mean 2, sample standard deviation sqrt(60/59)
    alternating = torch.tensor([1.0, 3.0] * 30, dtype=torch.float64)
    g = geometry_metrics(x, x + alternating[:, None] * directions, y, bank, bank_y, 5)
    assert g["relative_displacement"] == pytest.approx(2.0 / 4.0, rel=1e-12)
    assert g["relative_displacement_se"] == pytest.approx(math.sqrt(60 / 59) / math.sqrt(60) / 4.0, rel=1e-12)


def test_knn_true_share_of_points_moved_past_the_midpoint():
    """Tight template clusters at 0 and D e1; the first m points of each class move 3/4 of the way to
    the other class (their nearest templates are all of the other class), the rest a quarter."""
    d, D, m = 4, 10.0, 6
    centroids = torch.zeros(2, d)
    centroids[1, 0] = D
    bank, bank_y = clusters([25, 25], centroids, [0.2, 0.2], seed=5)
    x, y = clusters([20, 20], centroids, [0.2, 0.2], seed=6)
    toward = torch.where(y[:, None] == 0, torch.tensor([1.0, 0, 0, 0]), torch.tensor([-1.0, 0, 0, 0])).double()
    rank = torch.cat([torch.arange(20), torch.arange(20)])
    step = torch.where(rank < m, 0.75 * D, 0.25 * D)
    adv = x + step[:, None] * toward
    assert knn_true_share(x, y, bank, bank_y, 15) == 1.0
    assert knn_true_share(adv, y, bank, bank_y, 15) == pytest.approx((40 - 2 * m) / 40)
    g = geometry_metrics(x, adv, y, bank, bank_y, 15)
    assert g["knn_true_clean"] == 1.0 and g["knn_true_adversarial"] == pytest.approx((40 - 2 * m) / 40)
    assert g["displacement"] == pytest.approx(float(step.mean()), rel=1e-12)


@pytest.mark.parametrize("k", [1, 4, 15])
def test_knn_true_share_matches_a_brute_force_count(k):
    generator = torch.Generator().manual_seed(7)
    bank = torch.randn(300, 8, generator=generator, dtype=torch.float64)
    bank_y = torch.randint(0, 3, (300,), generator=generator)
    bank[:, 0] += 1.5 * bank_y  # overlapping classes: the shares are neither 0 nor 1
    x = torch.randn(120, 8, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (120,), generator=generator)
    x[:, 0] += 1.5 * y
    nearest = distances(x, bank).argsort(dim=1)[:, :k]
    votes = (bank_y[nearest] == y[:, None]).sum(1)
    expected = float((votes > k / 2).double().mean())
    assert 0 < expected < 1
    assert knn_true_share(x, y, bank, bank_y, k) == pytest.approx(expected, abs=1e-12)
    assert knn_true_share(x.float(), y, bank.float(), bank_y, k) == pytest.approx(expected, abs=1e-12)


def test_ratios_do_not_depend_on_the_scale_or_position_of_the_features():
    x, y = clusters([30, 30, 30], torch.eye(3) * 3, [1.0, 0.5, 2.0], seed=8)
    adv = x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    bank, bank_y = clusters([20, 20, 20], torch.eye(3) * 3, [1.0, 1.0, 1.0], seed=10)
    reference = geometry_metrics(x, adv, y, bank, bank_y, 7)
    for scale, offset in ((1e-3, 0.0), (1e3, 0.0), (1.0, 1e6), (7.0, -250.0)):
        moved = geometry_metrics(x * scale + offset, adv * scale + offset, y, bank * scale + offset, bank_y, 7)
        for name in ("spread_ratio", "relative_displacement", "knn_true_clean", "knn_true_adversarial"):
            assert moved[name] == pytest.approx(reference[name], rel=1e-8, abs=1e-12), (name, scale, offset)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: class_geometry(torch.zeros(4, 2), torch.zeros(4, dtype=torch.int64)), "at least two classes"),
        (lambda: class_geometry(torch.zeros(4, 2), torch.tensor([0, 0, 1, 1])), "centroids coincide"),
        (lambda: class_geometry(torch.full((2, 2), float("nan")), torch.tensor([0, 1])), "NaN"),
        (lambda: class_geometry(torch.zeros(3, 2), torch.tensor([0, 1])), "2 labels for 3"),
        (lambda: mean_displacement(torch.zeros(3, 2), torch.zeros(4, 2)), "4 rows, expected 3"),
        (
            lambda: knn_true_share(
                torch.zeros(3, 2), torch.tensor([0, 1, 1]), torch.zeros(5, 2), torch.zeros(5, dtype=torch.int64), 6
            ),
            r"k must be an integer in \[1, 5\]",
        ),
        (
            lambda: knn_true_share(
                torch.zeros(3, 2), torch.tensor([0, 1, 1]), torch.zeros(5, 3), torch.zeros(5, dtype=torch.int64), 2
            ),
            "width 3 but the queries have width 2",
        ),
    ],
)
def test_metric_input_errors(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


# ------------------------------------------------------------------------------ projection, worst case


def test_pca_of_planar_features_keeps_their_distances():
    generator = torch.Generator().manual_seed(11)
    plane = torch.randn(50, 2, generator=generator, dtype=torch.float64) * torch.tensor([3.0, 1.0], dtype=torch.float64)
    rotation, _ = torch.linalg.qr(torch.randn(6, 6, generator=generator, dtype=torch.float64))
    lift = rotation[:, :2]  # an isometric embedding of the plane in 6-D
    clean = plane @ lift.T + 1e4
    shift = torch.tensor([0.5, -0.2], dtype=torch.float64)
    adv = (plane + shift) @ lift.T + 1e4
    f, g, explained = pca_2d(clean, adv)
    assert torch.allclose(distances(f, f), distances(plane, plane), atol=1e-9)
    assert torch.allclose((g - f).norm(dim=1), torch.full((50,), float(shift.norm()), dtype=torch.float64), atol=1e-8)
    assert sum(explained) == pytest.approx(1.0, abs=1e-5) and explained[0] > explained[1]
    again = project(clean, adv, "pca")
    assert torch.equal(again["clean"], f) and again["axes"][0].startswith("PC1")


def test_tsne_projection_shapes():
    x, y = clusters([15, 15], [[0.0] * 5, [5.0] + [0.0] * 4], [1.0, 1.0], seed=12)
    f, g = tsne_2d(x, x + 0.1, seed=0)
    assert f.shape == (30, 2) and g.shape == (30, 2) and torch.isfinite(torch.cat([f, g])).all()
    with pytest.raises(ValueError, match="projection must be one of"):
        project(x, x, "umap-like")


def test_worst_case_prefers_a_fooling_example_then_the_larger_loss():
    correct_a = torch.tensor([True, False, True, False, True, False, True])
    correct_b = torch.tensor([False, True, True, False, True, False, True])
    loss_a = torch.tensor([9.0, 1.0, 1.0, 1.0, 2.0, 2.0, 3.0], dtype=torch.float64)
    loss_b = torch.tensor([1.0, 9.0, 2.0, 2.0, 1.0, 1.0, 3.0], dtype=torch.float64)
    take_b = prefer_second(correct_a, loss_a, correct_b, loss_b)
    assert take_b.tolist() == [True, False, True, True, False, False, False]


def test_arrow_rows_are_a_fixed_sample():
    rows = arrow_rows(100, 30, seed=3)
    assert rows.numel() == 30 and rows.unique().numel() == 30 and torch.equal(rows, rows.sort().values)
    assert torch.equal(rows, arrow_rows(100, 30, seed=3)) and arrow_rows(10, 30, seed=0).numel() == 10
    with pytest.raises(ValueError, match="arrows must be"):
        arrow_rows(10, -1, seed=0)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("runs/a", {"name": "runs/a", "checkpoint": "runs/a", "head": "auto"}),
        ("runs/a:linear", {"name": "runs/a", "checkpoint": "runs/a", "head": "linear"}),
        ("lin=runs/a:wnll", {"name": "lin", "checkpoint": "runs/a", "head": "wnll"}),
        ("x=c:/runs/a", {"name": "x", "checkpoint": "c:/runs/a", "head": "auto"}),
    ],
)
def test_model_argument(text, expected):
    assert model_argument(text) == expected


# ------------------------------------------------------------------------------ features of networks


def test_features_of_the_wrong_size_are_an_error():
    trunk = nn.Flatten()
    wrong = Classifier(trunk, nn.Linear(4, 3), nn.Linear(5, 2))  # the buffer gives 3 features, the head takes 5
    with pytest.raises(ValueError, match=r"features have shape \(2, 3\) for 2 images, but its head expects \[2, 5\]"):
        embed(wrong, torch.zeros(2, 1, 2, 2), batch_size=8, name="wrong")
    with pytest.raises(ValueError, match="plain: the network .* has no penultimate features"):
        embed(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), torch.zeros(2, 1, 2, 2), batch_size=8, name="plain")


# ------------------------------------------------------------------------------ tiny digits models


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A digits CNN after stage 1 (read through its linear head; no template bank) and the same network
    after one WNLL epoch (template bank of 300), as experiments/mnist_robustness/run.py makes them."""
    root = tmp_path_factory.mktemp("geometry_runs")
    config = TrainConfig(
        dataset="digits",
        head="wnll",
        epochs=4,
        stage2_epochs=1,
        batch_size=64,
        lr=0.05,
        templates=300,
        eval_every=0,
        device="cpu",
        out=str(root / "stage1"),
    )
    train(config, stop_after_epochs=4, progress=False)
    shutil.copytree(root / "stage1", root / "wnll")
    train(TrainConfig(**{**config.to_dict(), "out": str(root / "wnll")}), resume=True, progress=False)
    return {"stage1": str(root / "stage1"), "wnll": str(root / "wnll")}


FAST = ["--attack", "ifgsm", "--eps", "0.2", "--steps", "3", "--n", "60", "--device", "cpu", "--no-progress"]


def test_command_writes_the_picture_and_the_numbers(runs, tmp_path, capsys):
    out = tmp_path / "geometry"
    assert (
        main(
            [
                "geometry",
                "--checkpoint",
                f"wnll={runs['wnll']}",
                "--compare",
                f"lin={runs['stage1']}:linear",
                *FAST,
                "--out",
                str(out),
            ]
        )
        == 0
    )
    stdout = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["geometry.json", "geometry.md", "geometry.png"]
    result = json.loads((out / "geometry.json").read_text())
    assert [m["name"] for m in result["models"]] == ["wnll", "lin"] and result["n"] == 60
    wnll, lin = result["models"]
    assert wnll["protocol"] == "worst-case" and sum(wnll["chosen"].values()) == 60 and len(wnll["attacks"]) == 2
    assert lin["protocol"] == "single" and len(lin["attacks"]) == 1 and "chosen" not in lin
    assert (wnll["template_source"], wnll["templates"]) == ("head bank", 300)
    assert (lin["template_source"], lin["templates"]) == ("training features", 300)
    assert wnll["k"] == lin["k"] == 15 and wnll["feature_width"] == 64
    for m in result["models"]:
        assert m["adversarial_accuracy"] < m["clean_accuracy"]
        assert m["metrics"]["displacement"] > 0 and 0 <= m["metrics"]["knn_true_adversarial"] <= 1
    markdown = (out / "geometry.md").read_text()
    table = [line for line in markdown.splitlines() if line.startswith("| wnll |") or line.startswith("| lin |")]
    assert len(table) == 2 and "| spread s |" in markdown and "| spread s |" in stdout
    # the picture: a PNG with two panels side by side, at the documented size
    png = (out / "geometry.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    image = matplotlib.image.imread(out / "geometry.png")
    width, height = figure_size(2)
    assert image.shape[:2] == (round(height * DPI), round(width * DPI))
    assert figure_size(2)[0] == 2 * figure_size(1)[0]


def test_panel_grid():
    assert grid_shape(4) == (1, 4) and grid_shape(5) == (2, 4)
    assert grid_shape(4, 2) == (2, 2) and grid_shape(2, 3) == (1, 2)
    assert figure_size(4, 2)[0] == figure_size(2)[0] and figure_size(4, 2)[1] > figure_size(2)[1]
    with pytest.raises(ValueError, match="columns must be an integer >= 1"):
        grid_shape(3, 0)


def test_numbers_match_an_independent_computation(runs, tmp_path):
    """clean features recomputed here with the network's own embed(), the kNN share by brute force."""
    result = feature_geometry(
        [{"name": "wnll", "checkpoint": runs["wnll"]}],
        attack="fgsm",
        eps=0.1,
        n=50,
        device="cpu",
        progress=False,
        out=tmp_path / "one",
    )
    target = load_target(runs["wnll"], device="cpu")
    x, y = eval_data(target, 50, 0)
    with torch.no_grad():
        clean = target.model.embed(x).double()
    row = result["models"][0]
    expected = class_geometry(clean, y)
    for name in ("spread", "inter_class_mean", "inter_class_min"):
        assert row["metrics"][name] == pytest.approx(expected[name], rel=1e-9)
    head = target.model.head
    bank, bank_y = head.template_features.double(), head.template_labels
    nearest = distances(clean, bank).argsort(dim=1)[:, :15]
    share = float(((bank_y[nearest] == y[:, None]).sum(1) > 7.5).double().mean())
    assert row["metrics"]["knn_true_clean"] == pytest.approx(share)
    accuracy = float((target.model(x).argmax(1) == y).double().mean())
    assert row["clean_accuracy"] == pytest.approx(accuracy)
    import matplotlib.image

    assert matplotlib.image.imread(tmp_path / "one" / "geometry.png").shape[1] == round(figure_size(1)[0] * DPI)


def test_zero_budget_moves_nothing(runs):
    result = feature_geometry(
        [runs["wnll"], {"checkpoint": runs["stage1"], "head": "linear", "name": "lin"}],
        eps=0.0,
        n=40,
        device="cpu",
        progress=False,
    )
    for m in result["models"]:
        g = m["metrics"]
        assert g["displacement"] == 0 and g["knn_true_adversarial"] == g["knn_true_clean"]
        assert m["adversarial_accuracy"] == m["clean_accuracy"]
    assert "files" not in result


def test_attacks_designed_against_wnll_run_under_their_own_protocol(runs):
    """Any registered attack: the worst case of wnll_margin is its adaptive run alone; on a network read
    through a linear head it is a clear error."""
    result = feature_geometry(
        [runs["wnll"]], attack="wnll_margin", eps=0.2, steps=3, n=40, device="cpu", progress=False
    )
    (model,) = result["models"]
    assert model["protocol"] == "worst-case" and len(model["attacks"]) == 1
    assert model["attacks"][0].startswith("WNLL-margin") and "protocol adaptive" in model["attacks"][0]
    assert model["adversarial_accuracy"] < model["clean_accuracy"]
    with pytest.raises(ValueError, match="designed against a WNLL head, and this network is read through a linear"):
        feature_geometry(
            [{"checkpoint": runs["stage1"], "head": "linear", "name": "lin"}],
            attack="wnll_margin",
            eps=0.2,
            steps=3,
            n=40,
            device="cpu",
            progress=False,
        )


def test_existing_output_is_not_overwritten(runs, tmp_path, capsys):
    out = tmp_path / "g"
    out.mkdir()
    (out / "geometry.md").write_text("keep me")
    argv = ["geometry", "--checkpoint", f"{runs['stage1']}:linear", *FAST, "--out", str(out)]
    assert main(argv) == 1
    assert "geometry.md already exists: replace it with overwrite=True (--overwrite)" in capsys.readouterr().err
    assert (out / "geometry.md").read_text() == "keep me"
    assert main(argv + ["--overwrite", "--projection", "tsne", "--arrows", "5", "--columns", "1"]) == 0
    assert "keep me" not in (out / "geometry.md").read_text()
    assert json.loads((out / "geometry.json").read_text())["projection"] == "tsne"


def test_bad_input_is_a_clear_error(runs, tmp_path, capsys):
    stage1 = runs["stage1"]
    cases = [
        (["--checkpoint", stage1, "--eps", "0.1"], "has no WNLL template bank"),  # auto head of a stage-1 run
        (["--checkpoint", f"{stage1}:linear"], "needs an L_inf radius"),
        (["--checkpoint", f"{stage1}:linear", "--eps", "0.1", "--n", "100000"], "exceeds the 359 images"),
        (
            ["--checkpoint", f"a={stage1}:linear", "--compare", f"a={runs['wnll']}", "--eps", "0.1"],
            "names must be unique",
        ),
        (["--checkpoint", str(tmp_path / "missing"), "--eps", "0.1"], "checkpoint not found"),
        (
            ["--checkpoint", f"{stage1}:linear", "--eps", "0.1", "--restarts", "2"],
            "unknown IFGSM settings ['restarts']",
        ),
    ]
    for args, message in cases:
        assert main(["geometry", *args, "--out", str(tmp_path / "o"), "--device", "cpu", "--no-progress"]) == 1
        assert message in capsys.readouterr().err, args
    assert main(["geometry", "--checkpoint", stage1, "--out", str(tmp_path / "o"), "--protocol", "bad"]) == 2


def test_a_template_bank_of_another_width_is_an_error(runs, tmp_path, capsys):
    target = load_target(runs["wnll"], device="cpu")
    target.model.head.template_features = torch.zeros(300, 3)
    with pytest.raises(
        ValueError,
        match=r"bank holds features of shape \(300, 3\), but the network's features have "
        "width 64",
    ):
        template_bank(target, templates=10, batch_size=100)
    payload = torch.load(f"{runs['wnll']}/checkpoint.pt", weights_only=True)
    payload["model"]["head.template_features"] = torch.zeros(300, 3)
    bad = tmp_path / "bad"
    bad.mkdir()
    torch.save(payload, bad / "checkpoint.pt")
    assert main(["geometry", "--checkpoint", str(bad), *FAST, "--out", str(tmp_path / "o")]) == 1
    assert "size mismatch for head.template_features" in capsys.readouterr().err


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_geometry_on_cuda_matches_cpu(runs, tmp_path):
    models = [
        {"name": "wnll", "checkpoint": runs["wnll"]},
        {"name": "lin", "checkpoint": runs["stage1"], "head": "linear"},
    ]
    options = {"attack": "fgsm", "eps": 0.1, "n": 60, "progress": False}
    cuda = feature_geometry(models, device="cuda", out=tmp_path / "cuda", **options)
    cpu = feature_geometry(models, device="cpu", **options)
    assert cuda["device"].startswith("cuda") and (tmp_path / "cuda" / "geometry.png").is_file()
    for on_cuda, on_cpu in zip(cuda["models"], cpu["models"]):
        a, b = on_cuda["metrics"], on_cpu["metrics"]
        for name in ("spread", "inter_class_mean", "spread_ratio"):  # clean features: round-off (TF32) only
            assert a[name] == pytest.approx(b[name], rel=1e-2), name
        assert a["knn_true_clean"] == pytest.approx(b["knn_true_clean"], abs=0.04)
        # FGSM takes the sign of the gradient: a few pixels may flip where it is near zero
        assert a["relative_displacement"] == pytest.approx(b["relative_displacement"], rel=0.1)
        assert a["knn_true_adversarial"] == pytest.approx(b["knn_true_adversarial"], abs=0.1)
