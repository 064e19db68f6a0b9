"""Filtered synthetic exports: a privacy guard and a quality filter, with replacements.

`generate_filtered` samples the requested labels, scores every sample with the domain
classifier (`train_domain_classifier`: trained on the run's real training images) and drops
  privacy  samples whose nearest real training image, in the classifier's feature space, is
           closer than `privacy_threshold` (applied first);
  quality  samples of the survivors whose probability for their own conditioning class is
           below `min_confidence`;
then generates replacements, with fresh sample indices continuing after the last one used,
until every requested slot is filled. The result is a pure function of (seed, labels, filter
options, classifier): sample index i always has the latent fold_in(key(seed), i).

Slot filling: output row n has label labels[n]. A round-0 sample that passes both filters
stays in its own row, so with no drops the output equals `generate(labels=labels)` bit for bit.
Rows whose sample was dropped are filled, class by class in row order, by later candidates of
the same class in index order. Rounds after the first draw ceil(missing_c / keep_rate_c)
candidates per class c (keep rate measured over the earlier rounds, at least 1/16), so even
a filter that drops most of a class finishes in a few rounds; kept candidates beyond what a
class still needs are not exported. Each filter's `dropped` counts the candidates it
rejected over all rounds; a candidate is dropped by at most one filter.
"""

import math

import numpy as np

from ganaug_jax.evaluate import filters
from ganaug_jax.evaluate.downstream import (
    ClassifierSpec,
    DomainClassifier,
    predict,
    train_domain_classifier,
)
from ganaug_jax.train import generate as gen

_MIN_KEEP_RATE = 1 / 16
_FLAGS = {"privacy": "--privacy-threshold", "quality": "--min-confidence"}


def _is_real(value, accept) -> bool:
    """A finite int or float (not a bool) for which accept(value) holds."""
    return (not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
            and math.isfinite(value) and bool(accept(value)))


def check_options(*, privacy_threshold: float | None = None, min_confidence: float | None = None,
                  classifier_steps: int | None = None) -> None:
    """Validates the filter options without any compute; errors name the command-line flags."""
    if privacy_threshold is not None and not _is_real(privacy_threshold, lambda t: t >= 0):
        raise ValueError(f"--privacy-threshold must be a finite distance >= 0 (in the domain "
                         f"classifier's feature space), got {privacy_threshold!r}")
    if min_confidence is not None and not _is_real(min_confidence, lambda c: 0.0 <= c <= 1.0):
        raise ValueError(f"--min-confidence must be a probability in [0, 1], got "
                         f"{min_confidence!r}")
    if classifier_steps is not None:
        if privacy_threshold is None and min_confidence is None:
            raise ValueError("--classifier-steps goes with --privacy-threshold or "
                             "--min-confidence (it sets the domain classifier's training)")
        if isinstance(classifier_steps, bool) or not isinstance(classifier_steps, (int, np.integer)) \
                or classifier_steps < 1:
            raise ValueError(f"--classifier-steps must be an int >= 1, got {classifier_steps!r}")


def _active_flags(privacy_threshold, min_confidence) -> list[str]:
    return [flag for flag, value in (("--privacy-threshold", privacy_threshold),
                                     ("--min-confidence", min_confidence)) if value is not None]


def check_filterable(run, *, privacy_threshold: float | None = None,
                     min_confidence: float | None = None) -> None:
    """The filters need a class-conditional image run with real training images."""
    flags = _active_flags(privacy_threshold, min_confidence)
    if not flags:
        return
    what = " and ".join(flags)
    if not run.num_classes or not run.source.is_image:
        kind = "an unconditional" if not run.num_classes else "a vector"
        raise ValueError(f"{what} need{'s' if len(flags) == 1 else ''} a class-conditional image "
                         f"run (the domain classifier is trained on its labelled real images); "
                         f"this is {kind} {run.source.name} run")
    real = run.source.arrays
    if "y" not in real or len(real.get("x", ())) == 0:
        raise ValueError(f"{what}: the run's data source has no labelled real training images")


def generate_filtered(run, state, labels, *, seed: int, truncation: float | None = None,
                      use_ema: bool = True, privacy_threshold: float | None = None,
                      min_confidence: float | None = None, classifier=None,
                      classifier_spec: ClassifierSpec | None = None, max_rounds: int = 10,
                      batch_size: int = 256) -> tuple[dict, list[dict]]:
    """(samples {'x': (N, ...) float32 in [-1, 1], 'y': labels as int32}, filter reports).

    labels: (N,) ints in [0, num_classes), one requested sample each (e.g. from `labels_for`).
    privacy_threshold / min_confidence: None switches that filter off; with both off this is
    `generate` and the reports are []. classifier: a trained `DomainClassifier` for the run's
    classes; None trains one (seed 0) with `classifier_spec` (None: ClassifierSpec()) on
    run.source.arrays, the run's real training images.
    max_rounds: generation rounds in all (the first included) before giving up with a
    ValueError that says how many samples are missing.
    Reports, in order, for the filters that are on: {'name': 'privacy', 'threshold': T,
    'dropped': n} and {'name': 'quality', 'min_confidence': C, 'dropped': m}.
    """
    check_options(privacy_threshold=privacy_threshold, min_confidence=min_confidence)
    if isinstance(max_rounds, bool) or not isinstance(max_rounds, (int, np.integer)) or max_rounds < 1:
        raise ValueError(f"max_rounds must be an int >= 1, got {max_rounds!r}")
    options = {"seed": seed, "truncation": truncation, "use_ema": use_ema,
               "batch_size": batch_size}
    if privacy_threshold is None and min_confidence is None:
        return gen.generate(run, state, labels=labels, **options), []
    check_filterable(run, privacy_threshold=privacy_threshold, min_confidence=min_confidence)
    labels = np.asarray(labels)
    k = run.num_classes
    if labels.ndim != 1 or not len(labels) or not np.issubdtype(labels.dtype, np.integer) or \
            ((labels < 0) | (labels >= k)).any():
        raise ValueError(f"labels must be a non-empty 1-D int array with values in [0, {k})")
    labels = labels.astype(np.int32)
    gen.check_truncation(truncation)

    real = run.source.arrays
    if classifier is None:
        classifier = train_domain_classifier(
            {"x": np.asarray(real["x"]), "y": np.asarray(real["y"])}, k,
            spec=ClassifierSpec() if classifier_spec is None else classifier_spec)
    if not isinstance(classifier, DomainClassifier) or classifier.num_classes != k:
        raise ValueError(f"classifier must be a DomainClassifier for the run's {k} classes")
    real_features = None
    if privacy_threshold is not None:
        real_features = classifier.features(np.asarray(real["x"]))

    n = len(labels)
    x = None
    filled = np.zeros(n, bool)
    made, kept = np.zeros(k, np.int64), np.zeros(k, np.int64)
    dropped = {"privacy": 0, "quality": 0}
    next_index = 0
    for round_ in range(max_rounds):
        if round_ == 0:
            candidates = labels
        else:
            missing = np.bincount(labels[~filled], minlength=k)
            rate = np.maximum(kept / np.maximum(made, 1), _MIN_KEEP_RATE)
            candidates = np.repeat(np.arange(k, dtype=np.int32),
                                   np.ceil(missing / rate).astype(np.int64))
        out = gen.generate(run, state, labels=candidates, first_index=next_index, **options)
        next_index += len(candidates)
        keep = np.ones(len(candidates), bool)
        probabilities, features = predict(classifier.params, out["x"], k, classifier.spec)
        if privacy_threshold is not None:
            verdict = filters.privacy_filter(features, real_features, threshold=privacy_threshold)
            keep &= verdict.keep
            dropped["privacy"] += verdict.dropped
        if min_confidence is not None and keep.any():
            survivors = np.flatnonzero(keep)
            verdict = filters.quality_filter(probabilities[survivors], candidates[survivors],
                                             min_confidence=min_confidence)
            keep[survivors] = verdict.keep
            dropped["quality"] += verdict.dropped
        made += np.bincount(candidates, minlength=k)
        kept += np.bincount(candidates[keep], minlength=k)
        if x is None:
            x = np.zeros((n, *out["x"].shape[1:]), out["x"].dtype)
        if round_ == 0:
            x[keep], filled[keep] = out["x"][keep], True
        else:
            for c in np.unique(candidates[keep]):
                rows = np.flatnonzero(~filled & (labels == c))
                got = np.flatnonzero(keep & (candidates == c))[:len(rows)]
                x[rows[:len(got)]], filled[rows[:len(got)]] = out["x"][got], True
        if filled.all():
            break
    else:
        missing = np.bincount(labels[~filled], minlength=k)
        per_class = ", ".join(f"{c}: {int(m)}" for c, m in enumerate(missing) if m)
        flags = _active_flags(privacy_threshold, min_confidence)
        counts = ", ".join(f"{name} dropped {dropped[name]}" for name, flag in _FLAGS.items()
                           if flag in flags)
        raise ValueError(
            f"the export filters left {int((~filled).sum())} of {n} requested samples unproduced "
            f"after {max_rounds} rounds ({next_index} generated, {counts}; missing per class: "
            f"{per_class}); try " + " or ".join(f"a lower {flag}" for flag in flags))

    reports = []
    if privacy_threshold is not None:
        reports.append({"name": "privacy", "threshold": float(privacy_threshold),
                        "dropped": int(dropped["privacy"])})
    if min_confidence is not None:
        reports.append({"name": "quality", "min_confidence": float(min_confidence),
                        "dropped": int(dropped["quality"])})
    return {"x": x, "y": labels}, reports
