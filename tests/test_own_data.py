"""A user's own data: `fdrl train FILE|DIR`, `fdrl.fit`, held-out scoring, sample files."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import fdrl
from fdrl.cli import main
from fdrl.config import load_config
from fdrl.data.scaling import Standardizer
from fdrl.evaluate import c2st_accuracy
from fdrl.evaluate.heldout import memorisation

#: enough to run every part end to end, not to train well
QUICK = ["train.steps=6", "flow.steps=3", "flow.refine_steps=1", "train.batch_size=32", "train.checkpoint_every=3",
         "train.sample_every=6", "train.sample_n=50", "train.eval_n=200", "model.params.width=16"]


def _table(path, rows=300, header="age,income,score"):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 3)) * [1.0, 100.0, 0.01] + [40.0, 5e4, 3.0]
    with open(path, "w") as f:
        if header:
            f.write(header + "\n")
        for r in x:
            f.write(",".join(f"{v:.6f}" for v in r) + "\n")
    return x


def test_train_a_csv_with_a_header_and_sample_it_back(tmp_path, monkeypatch, capsys):
    """`fdrl train table.csv` (run named after the file, held-out report with both baselines and
    the floor) and `fdrl sample --out s.csv` (same header, the user's units)."""
    monkeypatch.chdir(tmp_path)
    x = _table(tmp_path / "table.csv")
    assert main(["train", "table.csv", *QUICK, "--quiet"]) == 0
    run = tmp_path / "runs" / "table"
    out = capsys.readouterr().out
    assert "held-out part (60 samples" in out and "Gaussian mixture" in out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n"] == 60 and metrics["units"] == "standardised features"
    assert set(metrics["baselines"]) == {"gaussian", "gmm", "prior"}
    for scores in [metrics, metrics["floor"], *metrics["baselines"].values()]:
        assert 0.0 <= scores["c2st_accuracy"] <= 1.0 and np.isfinite(scores["energy_distance"])
        lo, hi = scores["c2st_accuracy_ci"]
        assert lo <= scores["c2st_accuracy"] <= hi and scores["energy_distance_se"] > 0
    assert 0.0 < metrics["memorisation"]["median_ratio"]
    # 60 held-out rows: the report says they cannot separate the models, and prints its verdict first
    assert any("the held-out part has 60 rows: too few to tell these models apart" in v for v in metrics["verdict"])
    assert out.startswith("verdict:\n") and "too few to tell these models apart" in out
    assert main(["sample", str(run), "--n", "500", "--out", "s.csv", "--quiet"]) == 0
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert lines[0] == "age,income,score" and len(lines) == 501
    samples = np.loadtxt(tmp_path / "s.csv", delimiter=",", skiprows=1)
    # the user's units: each column's location and spread are those of the data, not ~N(0, 1)
    assert np.allclose(samples.mean(0), x.mean(0), rtol=0.05, atol=0.3 * x.std(0))
    assert np.allclose(samples.std(0), x.std(0), rtol=0.5)
    assert "wrote 500 samples" in capsys.readouterr().out


def test_the_run_of_a_file_does_not_take_a_presets_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "swissroll.npy", np.random.default_rng(0).normal(size=(100, 2)).astype(np.float32))
    config = load_config("swissroll.npy")
    assert (config.name, config.data.name) == ("swissroll", "array")
    assert load_config("swissroll").data.name == "swissroll"


def test_data_test_fraction_overrides_the_presets_and_is_checked(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((50, 2), dtype=np.float32))
    assert load_config(str(tmp_path / "x.npy"), ["data.test_fraction=0.1"]).data.params["test_fraction"] == 0.1
    with pytest.raises(ValueError, match=r"data.test_fraction must be a number in \[0, 1\), got 1.5"):
        load_config(str(tmp_path / "x.npy"), ["data.test_fraction=1.5"])


@pytest.mark.parametrize("content, message", [
    # a text cell in a column of numbers is a typo (a column of text is labels, and trains)
    ("a,b\n" + "".join(f"{i},{'1.2.3' if i == 17 else i / 3}\n" for i in range(40)),
     "line 19: column 'b' holds '1.2.3' where 98% of its cells are numbers"),
    ("1,2\n3\n", "line 2: 1 values where the first row has 2"),
    ("a,b\n", "has a header row but no data rows"),
    ("", "is empty"),
])
def test_a_bad_csv_is_one_line_naming_where(tmp_path, capsys, content, message):
    (tmp_path / "bad.csv").write_text(content)
    assert main(["train", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("write, message", [
    (lambda p: p.write_text("1 2\n3 4\n"), "is not a NumPy .npy file"),
    (lambda p: np.save(p, np.array([{"a": 1}, {"b": 2}], dtype=object)), "holds Python objects"),
    (lambda p: np.save(p, np.array(["a", "b"])), "not numbers"),
    (lambda p: p.write_bytes(open(np.lib.format.__file__, "rb").read()[:0] + b"\x93NUMPY\x01\x00"), "damaged"),
    (lambda p: np.save(p, np.zeros((5, 0), dtype=np.float32)), "at least one row and one column"),
])
def test_a_bad_npy_is_one_line(tmp_path, capsys, write, message):
    path = tmp_path / "bad.npy"
    write(path)
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_too_few_rows_and_a_run_directory_as_data_are_one_line(tmp_path, capsys):
    np.save(tmp_path / "tiny.npy", np.ones((3, 2), dtype=np.float32))
    assert main(["train", str(tmp_path / "tiny.npy"), "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert "too few to hold out a fraction of 0.2" in capsys.readouterr().err
    (tmp_path / "old_run").mkdir()
    (tmp_path / "old_run" / "config.yaml").write_text("name: x\n")
    assert main(["train", str(tmp_path / "old_run")]) == 2
    assert "is a run directory, not data; continue it with: fdrl train --resume" in capsys.readouterr().err


def test_a_spreadsheet_or_a_file_of_another_kind_is_named_as_such(tmp_path, capsys):
    (tmp_path / "sales.xls").write_bytes(b"\xd0\xcf\x11\xe0 an old workbook")
    assert main(["train", str(tmp_path / "sales.xls")]) == 2
    assert "is a spreadsheet in a format fdrl does not read: save it as .xlsx or CSV" in capsys.readouterr().err
    (tmp_path / "sales.xlsx").write_bytes(b"PK\x03\x04 not really a workbook")
    assert main(["train", str(tmp_path / "sales.xlsx")]) == 2
    err = capsys.readouterr().err
    assert "sales.xlsx' is damaged or not an Excel workbook" in err and len(err.splitlines()) == 1
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)))
    assert main(["train", str(tmp_path / "blob.bin")]) == 2
    err = capsys.readouterr().err
    assert "is neither a config (YAML) nor a data file fdrl reads (.npy, .csv" in err and len(err.splitlines()) == 1


def test_a_missing_data_file_is_one_line(tmp_path, capsys):
    assert main(["train", str(tmp_path / "nope.npy")]) == 2
    assert "data file" in capsys.readouterr().err


def test_standardizer_round_trip_and_constant_columns():
    x = torch.tensor([[1.0, 5.0, 1e6], [3.0, 5.0, 2e6], [5.0, 5.0, 3e6]])
    scaler = Standardizer.fit(x)
    z = scaler.forward(x)
    assert torch.allclose(z.mean(0), torch.zeros(3), atol=1e-5)
    assert torch.allclose(z[:, [0, 2]].std(0, correction=0), torch.ones(2), atol=1e-5)
    assert torch.equal(z[:, 1], torch.zeros(3)) and scaler.scale[1] == 1.0  # constant: kept, not divided by 0
    assert torch.allclose(scaler.inverse(z), x, rtol=1e-6)


def test_fit_an_array_returns_a_model_in_the_users_units(tmp_path):
    x = np.random.default_rng(1).normal(size=(400, 3)) * [1, 10, 100] + [0, 50, -500]
    overrides = {key.replace(".", "__"): yaml.safe_load(value) for key, value in (q.split("=") for q in QUICK)}
    model = fdrl.fit(x, out=tmp_path / "run", progress=False, **overrides)
    samples = model.sample(300)
    assert isinstance(samples, np.ndarray) and samples.shape == (300, 3)  # NumPy in, NumPy out
    assert np.allclose(samples.mean(0), x.mean(0), atol=0.5 * x.std(0))
    assert model.metrics["reference"].startswith("held-out part (80 samples")
    assert (tmp_path / "run" / "data.npy").is_file() and (tmp_path / "run" / "metrics.json").is_file()
    assert np.allclose(fdrl.FDRL.load(tmp_path / "run").sample(300), samples)  # reopens from disk, NumPy again
    # log_ratio takes the user's units: the same as the standardised rows it was trained on
    rows = torch.tensor(x[:50], dtype=torch.float32)
    assert np.allclose(model.log_ratio(rows), model.log_ratio(model.scaler.forward(rows), standardized=True))


def test_fit_again_on_the_same_out_resumes_and_other_data_is_refused(tmp_path):
    x = np.random.default_rng(2).normal(size=(100, 2)).astype(np.float32)
    quick = {"train__steps": 3, "flow__steps": 2, "train__eval_n": 50, "model__params__width": 8}
    first = fdrl.fit(x, out=tmp_path / "run", progress=False, **quick)
    again = fdrl.fit(x, out=tmp_path / "run", progress=False, **quick)  # the finished run, reopened
    assert np.allclose(first.sample(20, seed=1), again.sample(20, seed=1))
    with pytest.raises(ValueError, match="already holds a run trained on other data"):
        fdrl.fit(x + 1.0, out=tmp_path / "run", progress=False, **quick)
    assert np.array_equal(np.load(tmp_path / "run" / "data.npy"), x)  # the run's data is untouched
    # a DataFrame whose dtypes parquet does not keep (object text, number categories, periods) is
    # the same data when it comes again: it was refused as "other data"
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": x[:, 0], "city": pd.Series(rng.choice(["a", "b"], 100), dtype=object),
                          "grade": pd.Categorical(rng.integers(0, 3, 100)), "code": [1, "a"] * 50,
                          "month": pd.period_range("2020-01", periods=100, freq="M")})
    with pytest.warns(UserWarning):
        fdrl.fit(frame, out=tmp_path / "frame", progress=False, **quick)
        fdrl.fit(frame, out=tmp_path / "frame", progress=False, **quick)


def test_fit_a_dataset_of_pairs_and_save_pretrained(tmp_path):
    x = torch.randn(200, 2)
    pairs = torch.utils.data.TensorDataset(x, torch.zeros(200))
    model = fdrl.fit(pairs, out=tmp_path / "run", progress=False, train__steps=4, flow__steps=2,
                     **{"train.eval_n": 100, "model.params.width": 8})
    saved = model.save_pretrained(tmp_path / "saved")
    assert json.loads((saved / "fdrl.json").read_text())["fdrl_version"] == fdrl.__version__
    again = fdrl.FDRL.from_pretrained(saved)
    assert again.scaler is not None and again.sample(10, seed=3).allclose(model.sample(10, seed=3))


def test_fit_from_the_command_in_the_issue():
    """The one-liner users paste: default settings, 2000 rows of 3-D data."""
    code = "import numpy as np, fdrl; m = fdrl.fit(np.random.randn(2000, 3), progress=False); print(m.sample(5).shape)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("(5, 3)")


def test_memorisation_tells_copies_from_fresh_samples():
    g = torch.Generator().manual_seed(0)
    train, heldout, fresh = (torch.randn(500, 4, generator=g) for _ in range(3))
    copies = memorisation(train[:300] + 1e-4 * torch.randn(300, 4, generator=g), train, heldout)
    honest = memorisation(fresh, train, heldout)
    assert copies["median_ratio"] < 0.01 and copies["share_closer_than_heldout_1pct"] > 0.9
    assert 0.8 < honest["median_ratio"] < 1.25 and honest["share_closer_than_heldout_1pct"] < 0.05


def _moons(n, noise, seed):
    """Two half circles at uniformly random angles (scikit-learn's make_moons spaces them evenly,
    so two of its draws are not independent samples) plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    t, upper = rng.uniform(0, np.pi, n), rng.integers(0, 2, n).astype(bool)
    x = np.where(upper[:, None], np.c_[np.cos(t), np.sin(t)], np.c_[1 - np.cos(t), 0.5 - np.sin(t)])
    return torch.tensor(x + rng.normal(scale=noise, size=x.shape), dtype=torch.float32)


def test_c2st_sees_a_visible_difference_and_not_an_absent_one():
    """The held-out scores rest on the two-sample test: it must call noisier moons different
    (the early-stopped MLP it replaced said 0.53 for samples like these) and equal sets equal."""
    a, b, blurred = _moons(1000, 0.05, 0), _moons(1000, 0.05, 1), _moons(1000, 0.15, 2)
    assert abs(c2st_accuracy(a, b) - 0.5) < 0.04
    assert c2st_accuracy(blurred, b) > 0.65


def _image_folder(root, count=240):
    """Digits written as a folder of mixed PNG / JPEG, grayscale / RGB, of several sizes."""
    from PIL import Image
    from sklearn.datasets import load_digits

    images = load_digits().images[:count]
    root.mkdir()
    for i, img in enumerate(images):
        pixels = (img * 255 / 16).astype(np.uint8)
        picture = Image.fromarray(pixels).resize((24 + 8 * (i % 3), 24 + 8 * (i % 3)))
        if i % 2:
            picture = picture.convert("RGB")
        picture.save(root / (f"d{i}.jpg" if i % 4 == 3 else f"d{i}.png"))
    (root / "notes.txt").write_text("not an image")


@pytest.mark.parametrize("source, estimator, pca, prior", [
    # a CPU's choice: FDRL in a principal space with the mixture prior (docs/images-cpu.md)
    (["digits_folder"], "mlp", "auto", "data_mixture"),
    (["images_resnet", "data.params.root=digits_folder", "model.params.width=0.0625"], "resnet", None,
     "data_gaussian"),  # pixels
])
def test_train_an_image_folder_with_no_yaml(tmp_path, monkeypatch, capsys, source, estimator, pca, prior):
    monkeypatch.chdir(tmp_path)
    _image_folder(tmp_path / "digits_folder")
    quick = ["train.steps=3", "flow.steps=2", "flow.refine_steps=1", "train.batch_size=8", "train.eval_n=40",
             "train.sample_n=16"]
    run = tmp_path / "runs" / "digits_folder"
    assert main(["train", *source, *quick, "--out", str(run), "--quiet", "--device", "cpu"]) == 0
    config = load_config(str(run / "config.yaml"))
    assert (config.data.name, config.model.name, config.prior.name) == ("folder", estimator, prior)
    assert config.data.params.get("pca") == pca
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["reference"].startswith("held-out part (48 samples") and metrics["n"] == 40
    assert "gmm" not in metrics["baselines"]  # 3072 features: no mixture baseline
    assert main(["sample", str(run), "--n", "5", "--out", "pngs/", "--quiet"]) == 0
    assert sorted(p.name for p in (tmp_path / "pngs").iterdir()) == [f"{i}.png" for i in range(5)]
    assert main(["sample", str(run), "--n", "70", "--out", "grid.png", "--quiet"]) == 0
    assert "a grid of the first 64 of 70 images" in capsys.readouterr().out
    assert main(["sample", str(run), "--n", "30", "--out", "s.npy", "--quiet"]) == 0
    arr = np.load(tmp_path / "s.npy")
    assert arr.shape == (30, 3, 32, 32) and arr.min() >= -1.0 and arr.max() <= 1.0
    assert main(["evaluate", str(run), "--n", "40"]) == 0
    assert "held-out part" in capsys.readouterr().out


def test_sample_checks_out_before_sampling(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    assert main(["train", "swissroll", *QUICK, "--out", str(run), "--quiet", "--device", "cpu"]) == 0
    from fdrl.model import FDRL

    monkeypatch.setattr(FDRL, "sample", lambda *a, **k: pytest.fail("sampled before checking --out"))
    (tmp_path / "file").write_text("x")
    for out, message in [(f"{tmp_path}/file/s.npy", "which is a file"), (f"{tmp_path}/s.xyz", "--out must end in"),
                         (f"{tmp_path}/d/", "this run samples vectors"), (str(tmp_path), "this run samples vectors"),
                         (f"{tmp_path}/images.csv/", "this run samples vectors")]:
        assert main(["sample", str(run), "--out", out, "--quiet"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1


def test_pt_samples_load_with_weights_only(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "swissroll", *QUICK, "--out", str(run), "--quiet", "--device", "cpu"]) == 0
    assert main(["sample", str(run), "--n", "7", "--quiet"]) == 0
    samples = torch.load(run / "samples.pt", weights_only=True)
    assert isinstance(samples, torch.Tensor) and samples.shape == (7, 2)


def test_a_short_swissroll_runs_ema_is_no_worse_than_the_prior(tmp_path):
    """EMA warm-up: after 40 steps of the swiss-roll preset the EMA samples are closer to the data
    than the prior (with a fixed 0.99 decay 67% of the EMA was still the untrained network)."""
    from fdrl.train import ema_decay

    assert ema_decay(0.99, 0) == pytest.approx(0.1) and ema_decay(0.99, 10_000) == 0.99
    run = tmp_path / "run"
    assert main(["train", "swissroll", "train.steps=40", "train.eval_n=2000", "--out", str(run), "--quiet",
                 "--device", "cpu"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["energy_distance"] < metrics["energy_distance_prior"]


def test_cli_commands_that_need_no_torch_do_not_import_it(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "swissroll", *QUICK, "--out", str(run), "--quiet", "--device", "cpu"]) == 0
    probe = ("import sys\nfrom fdrl.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
             "print('HEAVY', [m for m in ('torch', 'sklearn', 'matplotlib') if m in sys.modules])")
    for argv in (["--help"], ["presets"], ["config", "swissroll", "train.steps=9"], ["info", str(run)],
                 ["train", "--help"]):
        result = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=120)
        assert "HEAVY []" in result.stdout, (argv, result.stdout[-500:], result.stderr[-500:])
