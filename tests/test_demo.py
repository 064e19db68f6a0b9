"""`ganaug demo` and `ganaug evaluate` end to end on a tiny budget, and the report pieces."""

import json

import ml_collections
import numpy as np
import pytest
import scipy.linalg
from PIL import Image

from ganaug_jax import cli
from ganaug_jax.data.sources import load_real
from ganaug_jax.evaluate import downstream, protocol
from ganaug_jax.train import outputs
from ganaug_jax.train.generate import generate, labels_for, load_run_state

TINY = ["--config.num_steps=2", "--config.batch_size=16", "--config.model.width=8",
        "--config.checkpoint_every=2", "--config.sample_every=0", "--config.data.per_class=3",
        "--seeds", "0", "1", "--classifier-steps", "3", "--domain-classifier-steps", "5",
        "--synthetic-per-class", "2", "--no-progress"]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("demo") / "run"
    assert cli.main(["demo", "--workdir", str(workdir), *TINY]) == 0
    return workdir


def test_demo_writes_a_complete_report(demo_dir):
    report_dir = demo_dir / "report"
    for name in ("summary.md", "report.md", "report.json", "accuracy.png", "samples.png",
                 "synthetic.npz"):
        assert (report_dir / name).is_file(), name
    report = json.loads((report_dir / "report.json").read_text())
    assert report["train_counts"] == [3] * 10                      # data.per_class=3
    assert report["synthetic_per_class"] == 2
    assert (report["classifier"]["steps"], report["domain_classifier"]["steps"]) == (3, 5)
    assert {(r["seed"], r["arm"]) for r in report["rows"]} == {
        (s, a) for s in (0, 1) for a in downstream.ARMS}
    for arm, metrics in report["summary"].items():                 # summary = the rows' stats
        values = [r["accuracy"] for r in report["rows"] if r["arm"] == arm]
        assert metrics["accuracy"]["mean"] == pytest.approx(np.mean(values))
        assert metrics["accuracy"]["std"] == pytest.approx(np.std(values))
    q = report["quality"]
    assert q["fd"] >= 0 and q["fd_floor_train_vs_test"] >= 0
    assert 0 <= q["precision"] <= 1 and 0 <= q["recall"] <= 1 and 0 <= q["memorisation"] <= 1
    with np.load(report_dir / "synthetic.npz") as data:
        assert np.bincount(data["y"], minlength=10).tolist() == [2] * 10
        assert json.loads(str(data["manifest"]))["counts"] == {str(c): 2 for c in range(10)}
    grid = np.asarray(Image.open(report_dir / "samples.png"))
    assert grid.shape[0] > 10 * 8                                  # one row per class
    table = (report_dir / "summary.md").read_text()
    for arm in downstream.ARMS:
        assert f"| {arm} |" in table


def test_evaluate_on_the_demo_run_matches_the_demo(demo_dir, tmp_path, capsys):
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.json").write_text("an earlier report")
    (out / "notes.txt").write_text("the user's own file")
    argv = ["evaluate", "--workdir", str(demo_dir / "gan"), "--out", str(out), "--seeds", "0", "1",
            "--classifier-steps", "3", "--domain-classifier-steps", "5", "--synthetic-per-class", "2"]
    assert cli.main(argv) == 2                                     # refused before any training
    assert "already holds a report (report.json); pass --overwrite" in capsys.readouterr().err
    assert (out / "report.json").read_text() == "an earlier report"
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "report.json"]
    assert cli.main(argv + ["--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "the user's own file"
    again = json.loads((out / "report.json").read_text())
    demo = json.loads((demo_dir / "report" / "report.json").read_text())
    assert again["rows"] == demo["rows"]                           # same seeds, same bits
    assert again["quality"] == demo["quality"]


def _fd_float64(a, b):
    """Fréchet distance, float64, by a route other than the library's (eigh of
    cov_a^1/2 cov_b cov_a^1/2). Many samples: scipy.linalg.sqrtm(cov_a cov_b). Fewer samples
    n than features D (singular cov_a): with X the centred rows of `a`, cov_a = X'X / (n - 1)
    and the non-zero eigenvalues of cov_a cov_b are those of the small PSD matrix
    X cov_b X' / (n - 1) (rank <= n - 1; eigenvalues under the usual rank tolerance
    n eps max|eig| are rounding noise, set to 0), so Tr((cov_a cov_b)^1/2) needs no D x D root."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    xa = a - a.mean(0)
    cov_a, cov_b = xa.T @ xa / (len(a) - 1), np.cov(b, rowvar=False, ddof=1)
    if len(a) > a.shape[1]:
        trace_sqrt = np.trace(scipy.linalg.sqrtm(cov_a @ cov_b)).real
    else:
        small = xa @ cov_b @ xa.T / (len(a) - 1)
        eig = np.linalg.eigvalsh((small + small.T) / 2)
        eig[eig <= len(eig) * np.finfo(np.float64).eps * np.abs(eig).max()] = 0.0
        trace_sqrt = np.sqrt(eig).sum()
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b)
                 - 2 * trace_sqrt)


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # sqrtm: singular covariances
def test_demo_sample_quality_recomputed_from_the_domain_features(demo_dir):
    """The report's quality numbers from the domain classifier's features, rebuilt here: the
    same synthetic set (checked against synthetic.npz), the classifier trained as documented
    (full real training split, seed 0, the report's spec), FD in float64 by another route."""
    report = json.loads((demo_dir / "report" / "report.json").read_text())
    config, run, state = load_run_state(str(demo_dir / "gan"))
    real = load_real(config.data)
    full = ml_collections.ConfigDict(config.data.to_dict())
    full.per_class, full.class_counts = 0, ""
    real_full = load_real(full)
    assert len(real_full.train["y"]) > len(real.train["y"]) == 30
    synthetic = generate(run, state, labels=labels_for(2, run.num_classes),
                         seed=protocol.EvaluateOptions().sample_seed)
    with np.load(demo_dir / "report" / "synthetic.npz") as data:
        stored = data["x"]
    # to_uint8 by hand, float64: round((x + 1) * 127.5) clipped to [0, 255] (within 1 of it for
    # values whose float32 rounding may fall on either side of a .5)
    scaled = (synthetic["x"].astype(np.float64) + 1) * 127.5
    diff = np.abs(stored.astype(int) - np.clip(np.round(scaled), 0, 255))
    assert diff.max() <= 1 and np.all(diff[np.abs(scaled % 1 - 0.5) > 1e-4] == 0)
    spec = downstream.ClassifierSpec(**report["domain_classifier"])
    assert spec.steps == 5
    domain = downstream.train_domain_classifier(real_full.train, run.num_classes, seed=0,
                                                spec=spec)
    f_fake, f_test = domain.features(synthetic["x"]), domain.features(real.test["x"])
    f_train = domain.features(real_full.train["x"])
    q = report["quality"]
    assert q["fd"] == pytest.approx(_fd_float64(f_fake, f_test), rel=1e-6)
    assert q["fd_floor_train_vs_test"] == pytest.approx(_fd_float64(f_train, f_test), rel=1e-6)
    assert q["fd"] != pytest.approx(_fd_float64(f_fake, f_train), rel=1e-3)  # not vs train
    accuracy = np.mean(domain.probabilities(real.test["x"]).argmax(-1) == real.test["y"])
    assert q["domain_classifier_test_accuracy"] == accuracy


@pytest.mark.parametrize("flags, message", [
    (["--seeds"], "expected at least one argument"),
    (["--arms", "real", "nonsense"], "--arms must be a subset"),
    (["--synthetic-fraction", "1.5"], "--synthetic-fraction must be in (0, 1)"),
    (["--synthetic-per-class", "0"], "--synthetic-per-class must be >= 1"),
    (["--synthetic-label-smoothing", "1.5"], "--synthetic-label-smoothing must be in [0, 1]"),
    (["--classifier-steps", "0"], "--classifier-steps must be >= 1"),
    (["--domain-classifier-steps", "-2"], "--domain-classifier-steps must be >= 1"),
    (["--step", "999999"], "--step 999999: --workdir"),
])
def test_evaluate_rejects_bad_options(demo_dir, tmp_path, capsys, flags, message):
    argv = ["evaluate", "--workdir", str(demo_dir / "gan"), "--out", str(tmp_path / "r"), *flags]
    try:
        code = cli.main(argv)
    except SystemExit as stop:  # argparse's own errors
        code = stop.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_evaluate_needs_a_conditional_image_run(tmp_path, capsys):
    workdir = tmp_path / "ring"
    assert cli.main(["train", "--config", "configs/default.py", "--workdir", str(workdir),
                     "--config.num_steps=1", "--config.batch_size=8", "--config.model.width=8",
                     "--no-progress"]) == 0
    out = tmp_path / "reports" / "r"
    assert cli.main(["evaluate", "--workdir", str(workdir), "--out", str(out)]) == 2
    assert "class-conditional image run" in capsys.readouterr().err
    assert not (tmp_path / "reports").exists()  # the --out folders it made are gone again


def test_markdown_table_and_summary():
    rows = [{"arm": "real", "accuracy": a, "macro_f1": f, "small_class_recall": r}
            for a, f, r in ((0.5, 0.4, 0.3), (0.7, 0.6, 0.5))]
    summary = protocol.summarise(rows, ["real"])
    assert summary["real"]["accuracy"] == {"mean": 0.6, "std": pytest.approx(0.1),
                                           "values": [0.5, 0.7]}
    table = protocol.markdown_table(summary)
    assert "| real | 60.00 ± 10.00 | 50.00 ± 10.00 | 40.00 ± 10.00 |" in table


def test_bar_chart_draws_bars_proportional_to_values():
    pixels = outputs.bar_chart(["a", "b"], [10.0, 20.0], [0.0, 0.0], width=200, height=200)
    blue = np.all(pixels == (46, 110, 190), axis=-1)
    heights = [blue[:, :100].sum(0).max(), blue[:, 100:].sum(0).max()]
    assert heights[1] == pytest.approx(2 * heights[0], abs=2)


@pytest.mark.parametrize("command", ["evaluate", "demo"])
def test_cli_defaults_are_the_protocol_defaults(command):
    """The CLI spells the protocol's defaults out (it does not import JAX to build --help)."""
    parser = cli.build_parser()
    args = parser.parse_args([command] + (["--workdir", "w", "--out", "o"] if command == "evaluate" else []))
    defaults = protocol.EvaluateOptions()
    assert args.synthetic_per_class == defaults.synthetic_per_class
    assert args.synthetic_fraction == defaults.synthetic_fraction
    assert args.synthetic_label_smoothing == defaults.synthetic_label_smoothing


def test_demo_with_another_config_needs_force_and_takes_it(demo_dir, tmp_path, capsys):
    import shutil
    workdir = tmp_path / "run"
    shutil.copytree(demo_dir, workdir)
    changed = [*TINY, "--config.optim.g_lr=0.001"]
    assert cli.main(["demo", "--workdir", str(workdir), *changed]) == 2
    assert "or --force to resume anyway" in capsys.readouterr().err
    assert cli.main(["demo", "--workdir", str(workdir), *changed, "--force"]) == 0
    assert (workdir / "report" / "report.json").exists()
