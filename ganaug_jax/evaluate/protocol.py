"""`ganaug evaluate`: the downstream and sample-quality protocols (PROTOCOLS.md §2-§3) for a run.

For a trained conditional image run: rebuild its real data (the regime the GAN trained on and
the held-out real test split it never saw), draw a class-balanced synthetic set from the EMA
generator, train the downstream classifier under every arm for each seed, and measure sample
quality in the feature space of a domain classifier trained on the full real training split.
"""

import dataclasses
import json
import pathlib

import jax
import ml_collections
import numpy as np

from ganaug_jax.data.sources import load_real
from ganaug_jax.evaluate import downstream, quality
from ganaug_jax.train import outputs
from ganaug_jax.train.generate import generate, labels_for, load_run_state

METRICS = ("accuracy", "macro_f1", "small_class_recall")


@dataclasses.dataclass(frozen=True)
class EvaluateOptions:
    """seeds: classifier seeds (>= 5 for reported numbers); synthetic_per_class: GAN samples
    per class drawn once (sample seed 10_000); synthetic_fraction: share of GAN samples in
    each real+gan / real+both batch; synthetic_label_smoothing: weight of the uniform
    distribution in those GAN samples' targets."""
    seeds: tuple = (0, 1, 2, 3, 4)
    arms: tuple = downstream.ARMS
    synthetic_per_class: int = 1000  # chosen on digits k = 10, seeds 5-7 (200: each sample
                                     # recurs ~12 times in the classifier's batches)
    synthetic_fraction: float = 0.5  # chosen together on digits k = 10, seeds 5-7 (not the
    synthetic_label_smoothing: float = 0.7  # reported 0-4), 4 classifier seeds each
    classifier: downstream.ClassifierSpec = downstream.ClassifierSpec()
    domain_classifier: downstream.ClassifierSpec = downstream.ClassifierSpec()  # sample quality
    sample_seed: int = 10_000

    def check(self) -> None:
        if not self.seeds:
            raise ValueError("--seeds must name at least one seed")
        unknown = [a for a in self.arms if a not in downstream.ARMS]
        if unknown or not self.arms:
            raise ValueError(f"--arms must be a subset of {downstream.ARMS}, got {list(self.arms)}")
        for flag, spec in (("--classifier-steps", self.classifier),
                           ("--domain-classifier-steps", self.domain_classifier)):
            if spec.steps < 1:
                raise ValueError(f"{flag} must be >= 1, got {spec.steps}")
        if self.synthetic_per_class < 1:
            raise ValueError(f"--synthetic-per-class must be >= 1, got {self.synthetic_per_class}")
        if not 0 < self.synthetic_fraction < 1:
            raise ValueError(f"--synthetic-fraction must be in (0, 1), got {self.synthetic_fraction}")
        if not 0 <= self.synthetic_label_smoothing <= 1:
            raise ValueError(f"--synthetic-label-smoothing must be in [0, 1], got "
                             f"{self.synthetic_label_smoothing}")


def summarise(rows: list[dict], arms) -> dict:
    """{arm: {metric: {'mean', 'std', 'values'}}} over seeds (std with ddof=0 over >= 1 seed)."""
    out = {}
    for arm in arms:
        mine = [r for r in rows if r["arm"] == arm]
        out[arm] = {m: {"mean": float(np.mean([r[m] for r in mine])),
                        "std": float(np.std([r[m] for r in mine])),
                        "values": [r[m] for r in mine]} for m in METRICS}
    return out


def sample_quality(real_full_train: dict, real_test: dict, gan_train: dict, synthetic: dict,
                   num_classes: int, *, seed: int = 0,
                   spec: downstream.ClassifierSpec = downstream.ClassifierSpec()) -> dict:
    """Fréchet distance, precision/recall (k = 3) and memorisation in the feature space of a
    domain classifier (`spec`) trained on the full real training split (fixed seed)."""
    domain = downstream.train_domain_classifier(real_full_train, num_classes, seed=seed,
                                                spec=spec)
    f_train = domain.features(real_full_train["x"])
    f_test = domain.features(real_test["x"])
    f_fake = domain.features(synthetic["x"])
    f_gan_train = domain.features(gan_train["x"])
    pr = quality.precision_recall(f_test, f_fake, k=3)
    return {"fd": quality.frechet_distance(f_fake, f_test),
            "fd_floor_train_vs_test": quality.frechet_distance(f_train, f_test),
            "precision": pr["precision"], "recall": pr["recall"],
            "memorisation": quality.memorisation_ratio(f_fake, f_gan_train),
            "memorisation_floor_test": quality.memorisation_ratio(f_test, f_gan_train),
            "domain_classifier_test_accuracy":
                float(np.mean(domain.probabilities(real_test["x"]).argmax(-1) == real_test["y"]))}


def evaluate_samples(real, synthetic: dict, options: EvaluateOptions, *, progress=None) -> list[dict]:
    """One row per (seed, arm): the downstream scores on the real test split."""
    rows = []
    for seed in options.seeds:
        for arm in options.arms:
            row = downstream.run_arm(arm, jax.random.key(seed), real.train, synthetic, real.test,
                                     num_classes=real.num_classes, spec=options.classifier,
                                     synthetic_fraction=options.synthetic_fraction,
                                     synthetic_label_smoothing=options.synthetic_label_smoothing)
            rows.append(dict(row, seed=seed))
            if progress:
                progress(f"seed {seed} {arm:<15} accuracy {row['accuracy']:.4f} "
                         f"macro-F1 {row['macro_f1']:.4f}")
    return rows


def evaluate_run(workdir: str, options: EvaluateOptions = EvaluateOptions(), *,
                 step: int | None = None, progress=None) -> dict:
    """The full report for a run's checkpoint of `step` (None: the latest; see the module
    docstring), as a JSON-able dict."""
    options.check()
    config, run, state = load_run_state(workdir, step=step)
    if not (run.source.is_image and run.num_classes):
        raise ValueError(f"--workdir {workdir!r}: evaluate needs a class-conditional image run "
                         f"(model.conditional=true on labelled images)")
    real = load_real(config.data)
    labels = labels_for(options.synthetic_per_class, run.num_classes)
    synthetic = generate(run, state, labels=labels, seed=options.sample_seed)
    return build_report(workdir, config, run, state, real, synthetic, options, progress=progress)


def build_report(workdir: str, config, run, state, real, synthetic: dict,
                 options: EvaluateOptions, *, progress=None) -> dict:
    """Downstream rows and summary for every (seed, arm), and sample quality."""
    rows = evaluate_samples(real, synthetic, options, progress=progress)
    full = ml_collections.ConfigDict(config.data.to_dict())
    full.per_class, full.class_counts = 0, ""
    real_full = load_real(full)
    return {
        "workdir": str(workdir), "checkpoint_step": int(state.step),
        "data": config.data.to_dict(),
        "train_counts": np.bincount(real.train["y"], minlength=run.num_classes).tolist(),
        "test_size": int(len(real.test["y"])),
        "synthetic_per_class": len(synthetic["y"]) // run.num_classes,
        "synthetic_fraction": options.synthetic_fraction,
        "synthetic_label_smoothing": options.synthetic_label_smoothing,
        "classifier": dataclasses.asdict(options.classifier), "seeds": list(options.seeds),
        "rows": rows, "summary": summarise(rows, options.arms),
        "domain_classifier": dataclasses.asdict(options.domain_classifier),
        "quality": sample_quality(real_full.train, real.test, real.train, synthetic,
                                  run.num_classes, spec=options.domain_classifier),
    }


def markdown_table(summary: dict) -> str:
    """arm | accuracy | macro-F1 | smallest-class recall, each 'mean ± std' in %."""
    lines = ["| arm | accuracy (%) | macro-F1 (%) | smallest-class recall (%) |",
             "|---|---:|---:|---:|"]
    for arm, metrics in summary.items():
        cells = [f"{100 * metrics[m]['mean']:.2f} ± {100 * metrics[m]['std']:.2f}" for m in METRICS]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


REPORT_FILES = ("report.json", "report.md", "accuracy.png")


def check_report_dir(out_dir, *, overwrite: bool = False) -> None:
    """Refuses an --out that holds an earlier report (any of REPORT_FILES) unless overwrite;
    other files there are left alone either way."""
    out = pathlib.Path(out_dir)
    earlier = [name for name in REPORT_FILES if (out / name).exists()]
    if earlier and not overwrite:
        raise ValueError(f"--out {str(out_dir)!r} already holds a report ({', '.join(earlier)}); "
                         "pass --overwrite to replace it")


def write_report(report: dict, out_dir: str, *, title: str = "ganaug evaluate") -> pathlib.Path:
    """report.json, report.md (tables) and accuracy.png (bar chart) under out_dir. All three
    are rendered before any is written, so a report missing a field replaces nothing."""
    text = json.dumps(report, indent=2)
    q = report["quality"]
    intro = (f"Run `{report['workdir']}` (checkpoint step {report['checkpoint_step']}); real "
             f"training images per class {report['train_counts']}; {report['test_size']} held-out "
             f"real test images; {report['synthetic_per_class']} GAN samples per class, "
             f"{100 * report['synthetic_fraction']:.0f} % of each mixed batch (label smoothing "
             f"{report['synthetic_label_smoothing']:g}); classifier seeds "
             f"{report['seeds']} (mean ± std).")
    quality_head = ("| FD | FD floor (real train vs test) | precision | recall | memorisation | "
                    "memorisation floor (real test) |")
    quality_row = (f"| {q['fd']:.3f} | {q['fd_floor_train_vs_test']:.3f} | {q['precision']:.3f} | "
                   f"{q['recall']:.3f} | {q['memorisation']:.3f} | "
                   f"{q['memorisation_floor_test']:.3f} |")
    md = [f"# {title}", "", intro, "", markdown_table(report["summary"]), "",
          "Sample quality (domain-classifier feature space):", "",
          quality_head, "|---:|---:|---:|---:|---:|---:|", quality_row, ""]
    summary = report["summary"]
    chart = outputs.bar_chart(list(summary), [100 * summary[a]["accuracy"]["mean"] for a in summary],
                              [100 * summary[a]["accuracy"]["std"] for a in summary],
                              title="test accuracy (%) on held-out real images")
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    outputs.atomic_write_text(out / "report.json", text)
    outputs.atomic_write_text(out / "report.md", "\n".join(md))
    outputs.save_png(out / "accuracy.png", chart)
    return out
