"""Export filters wired into generation: the privacy guard and the quality filter drop samples,
replacements fill every requested slot, the reports and the manifest agree, and the
`ganaug generate` flags validate their values before any compute.

The runs hold their initial state as a step-0 checkpoint (no GAN training) and the domain
classifier trains for a few steps: the filters' logic does not need good models."""

import numpy as np
import pytest
from test_exports import (  # tiny-run helpers of the exports tests, float64 to_uint8 reference
    _config,
    assert_uint8_of,
    initial_run,
)

from ganaug_jax import cli
from ganaug_jax.data import exports, filtering
from ganaug_jax.evaluate import quality
from ganaug_jax.evaluate.downstream import ClassifierSpec, train_domain_classifier
from ganaug_jax.train.generate import generate, labels_for, load_run_state

STEPS = 5  # the domain classifier's training steps, here and through --classifier-steps
LABELS = labels_for(3, 10)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """(workdir, run, state, domain classifier) of a class-conditional 8x8 digits run."""
    workdir = initial_run(tmp_path_factory.mktemp("digits") / "run", _config("digits"))
    _, run, state = load_run_state(str(workdir))
    classifier = train_domain_classifier(run.source.arrays, 10, spec=ClassifierSpec(steps=STEPS))
    return workdir, run, state, classifier


@pytest.fixture(scope="module")
def ring(tmp_path_factory):
    """An unconditional ring8 run directory (initial state as a step-0 checkpoint)."""
    return initial_run(tmp_path_factory.mktemp("ring") / "run", _config("ring8"))


@pytest.fixture(scope="module")
def moderate(digits):
    """(threshold, min_confidence) that each drop some samples of every class but keep at
    least half of each class (measured on a probe of 10 samples per class, another seed)."""
    _, run, state, classifier = digits
    probe = generate(run, state, labels=labels_for(10, 10), seed=99)
    confidence = classifier.probabilities(probe["x"])[np.arange(100), probe["y"]]
    distance, _ = quality.nearest_real(classifier.features(probe["x"]),
                                       classifier.features(run.source.arrays["x"]))
    # Probe rows are class-sorted: row c of the (10, 10) reshape is class c.
    return (float(np.median(distance.reshape(10, 10), axis=1).min()),
            float(np.median(confidence.reshape(10, 10), axis=1).min()))


def _filtered(digits, **options):
    _, run, state, classifier = digits
    return filtering.generate_filtered(run, state, LABELS, seed=3, classifier=classifier, **options)


@pytest.fixture(scope="module")
def filtered(digits, moderate):
    """(samples, reports) of LABELS, seed 3, through both filters at the moderate values."""
    threshold, confidence = moderate
    return _filtered(digits, privacy_threshold=threshold, min_confidence=confidence)


# ---- the library function ----

def test_first_index_continues_the_sample_stream(digits):
    _, run, state, _ = digits
    whole = generate(run, state, labels=np.array([1, 2, 3, 4, 5]), seed=3, batch_size=4)
    tail = generate(run, state, labels=np.array([4, 5]), seed=3, first_index=3, batch_size=4)
    np.testing.assert_array_equal(tail["x"], whole["x"][3:])
    with pytest.raises(ValueError, match="first_index must be an int >= 0"):
        generate(run, state, labels=np.array([4]), seed=3, first_index=-1)


def test_zero_threshold_and_zero_confidence_drop_nothing(digits):
    _, run, state, _ = digits
    plain = generate(run, state, labels=LABELS, seed=3)
    samples, reports = _filtered(digits, privacy_threshold=0.0, min_confidence=0.0)
    assert reports == [{"name": "privacy", "threshold": 0.0, "dropped": 0},
                       {"name": "quality", "min_confidence": 0.0, "dropped": 0}]
    np.testing.assert_array_equal(samples["x"], plain["x"])  # nothing replaced: bit for bit
    np.testing.assert_array_equal(samples["y"], LABELS)
    unfiltered, none = _filtered(digits)
    assert none == [] and np.array_equal(unfiltered["x"], plain["x"])


def test_moderate_filters_meet_the_counts_with_samples_that_pass(digits, moderate, filtered):
    _, run, state, classifier = digits
    threshold, confidence = moderate
    samples, reports = filtered
    assert [r["name"] for r in reports] == ["privacy", "quality"]
    assert reports[0]["threshold"] == threshold and reports[1]["min_confidence"] == confidence
    assert sum(r["dropped"] for r in reports) > 0
    np.testing.assert_array_equal(samples["y"], LABELS)  # every class's count exactly
    # Recomputed independently with the same classifier: every exported sample passes both.
    probabilities = classifier.probabilities(samples["x"])
    assert (probabilities[np.arange(len(LABELS)), LABELS] >= confidence).all()
    distance, _ = quality.nearest_real(classifier.features(samples["x"]),
                                       classifier.features(run.source.arrays["x"]))
    assert (distance >= threshold).all()
    # Round-0 samples that pass stay in their own rows; the others were replaced.
    plain = generate(run, state, labels=LABELS, seed=3)
    first = classifier.probabilities(plain["x"])[np.arange(len(LABELS)), LABELS] >= confidence
    first &= quality.nearest_real(classifier.features(plain["x"]),
                                  classifier.features(run.source.arrays["x"]))[0] >= threshold
    assert first.any() and not first.all()
    same = (samples["x"] == plain["x"]).reshape(len(LABELS), -1).all(axis=1)
    np.testing.assert_array_equal(same, first)


def test_an_impossible_threshold_raises_a_clear_error(digits):
    with pytest.raises(ValueError, match=r"left 30 of 30 requested samples unproduced after 2 "
                                         r"rounds .*try a lower --privacy-threshold$"):
        _filtered(digits, privacy_threshold=1e9, max_rounds=2)
    with pytest.raises(ValueError, match=r"try a lower --min-confidence$"):
        _filtered(digits, min_confidence=1.0, max_rounds=1)  # softmax never reaches 1 exactly


def test_filters_need_a_conditional_image_run(ring):
    _, run, state = load_run_state(str(ring))
    with pytest.raises(ValueError, match="--min-confidence needs a class-conditional image run"):
        filtering.generate_filtered(run, state, np.zeros(3, np.int32), seed=0, min_confidence=0.5)


# ---- the command ----

def _main(capsys, *args):
    code = cli.main(["generate", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_filters_report_their_drops_in_the_summary_and_manifest(digits, moderate, filtered,
                                                                    tmp_path, capsys, monkeypatch):
    workdir, run, _, classifier = digits
    threshold, confidence = moderate
    trained = []

    def train(real, num_classes, *, spec):  # the fixture's classifier, trained the same way
        trained.append(spec)
        np.testing.assert_array_equal(real["x"], run.source.arrays["x"])
        np.testing.assert_array_equal(real["y"], run.source.arrays["y"])
        assert num_classes == 10
        return classifier

    monkeypatch.setattr(filtering, "train_domain_classifier", train)
    out = tmp_path / "filtered.npz"
    code, stdout, _ = _main(capsys, "--workdir", workdir, "--out", out, "--per-class", 3,
                            "--seed", 3, "--privacy-threshold", repr(threshold),
                            "--min-confidence", repr(confidence), "--classifier-steps", STEPS)
    assert code == 0 and trained == [ClassifierSpec(steps=STEPS)]
    expected, reports = filtered  # and a second computation: the same bits (deterministic)
    samples, manifest = exports.read_export(out)
    assert manifest["filters"] == reports
    assert manifest["dropped"] == sum(r["dropped"] for r in reports) > 0
    assert_uint8_of(samples["x"], expected["x"])
    np.testing.assert_array_equal(samples["y"], LABELS)
    assert stdout.rstrip().endswith(f"ema generator; privacy filter dropped "
                                    f"{reports[0]['dropped']}; quality filter dropped "
                                    f"{reports[1]['dropped']})")


@pytest.mark.parametrize("args, message", [
    (["--privacy-threshold", "-0.5"], "--privacy-threshold must be a finite distance >= 0"),
    (["--privacy-threshold", "nan"], "--privacy-threshold must be a finite distance >= 0"),
    (["--min-confidence", "1.5"], "--min-confidence must be a probability in [0, 1], got 1.5"),
    (["--min-confidence", "-0.1"], "--min-confidence must be a probability in [0, 1]"),
    (["--min-confidence", "0.5", "--classifier-steps", "0"],
     "--classifier-steps must be an int >= 1, got 0"),
    (["--classifier-steps", "5"], "--classifier-steps goes with --privacy-threshold or"),
])
def test_cli_rejects_bad_filter_values(args, message, tmp_path, capsys):
    # Checked before the run is read: a directory that holds no run is never reached.
    out = tmp_path / "out"
    code, stdout, stderr = _main(capsys, "--workdir", tmp_path / "missing", "--out", out,
                                 "--num", 4, *args)
    assert code == 2 and stdout == ""
    assert stderr.startswith("ganaug generate: error: ") and message in stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_rejects_filters_on_an_unconditional_run(ring, tmp_path, capsys):
    code, stdout, stderr = _main(capsys, "--workdir", ring, "--out", tmp_path / "r.npz",
                                 "--num", 4, "--privacy-threshold", 0.1)
    assert code == 2 and stdout == "" and not (tmp_path / "r.npz").exists()
    assert "--privacy-threshold needs a class-conditional image run" in stderr
    assert "unconditional ring8 run" in stderr
