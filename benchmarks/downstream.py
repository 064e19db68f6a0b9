"""Does GAN data help a classifier? The digits low-data and imbalanced experiments (PROTOCOLS §2).

Low data: for k real images per class and seed s, train the GAN of configs/digits_lowdata.py on
those k x 10 images (data.per_class=k, data.subset_seed=s, seed=s), draw 1,000 samples per class
from its EMA generator, and train the downstream classifier under every arm with seed s; all
arms are tested on the same held-out real split (data.split_seed 0, 25 %).
Imbalanced: classes 3, 5 and 8 cut to 5 real images, the others 50; the GAN trains on that set,
`--balance-to 50` tops the cut classes up with synthetic images, and the classifier trains on
real, real + balanced, with and without classical augmentation.

    python benchmarks/downstream.py --k 5 10 20 --seeds 0 1 2 3 4 --imbalanced \
        --workdir runs/downstream --out benchmarks/results/downstream
Prints one JSON line per (experiment, k, seed, arm) and writes tables and charts to --out.
"""

import argparse
import json
import pathlib
import time

import jax
import numpy as np

from ganaug_jax import config as config_lib
from ganaug_jax.data.sources import load_real
from ganaug_jax.evaluate import downstream, protocol
from ganaug_jax.train import outputs
from ganaug_jax.train.generate import balance_to, generate, labels_for, load_run_state
from ganaug_jax.train.loop import train_and_evaluate

CUT = {3: 5, 5: 5, 8: 5}
KEPT = 50


EXTRA_OVERRIDES = []  # --set KEY=VALUE, applied to every GAN config


def train_gan(workdir: pathlib.Path, overrides: list) -> float:
    config = config_lib.apply_overrides(config_lib.load_config("configs/digits_lowdata.py"),
                                        overrides + EXTRA_OVERRIDES)
    start = time.perf_counter()
    train_and_evaluate(config, str(workdir), progress=False)
    return time.perf_counter() - start


MIXED = ("real+gan", "real+both")  # the arms whose rows depend on --synthetic-fraction


def row_key(row: dict) -> tuple:
    return (row["experiment"], row.get("k"), row["seed"], row["arm"], row["synthetic_fraction"],
            row.get("synthetic_label_smoothing", 0.0))


def arm_mixing(arm: str, args) -> tuple:
    """(synthetic fraction, label smoothing) of the arm's rows under these arguments."""
    if arm in MIXED:
        return args.synthetic_fraction, args.synthetic_label_smoothing
    return float(arm == "gan"), 0.0


def low_data(k: int, seed: int, args, emit, done) -> None:
    arms = tuple(a for a in downstream.ARMS
                 if ("low_data", k, seed, a, *arm_mixing(a, args)) not in done)
    if not arms:
        return
    workdir = pathlib.Path(args.workdir) / f"k{k}" / f"seed{seed}"
    seconds = train_gan(workdir, [f"seed={seed}", f"data.per_class={k}", f"data.subset_seed={seed}"])
    config, run, state = load_run_state(str(workdir))
    real = load_real(config.data)
    synthetic = generate(run, state, labels=labels_for(args.synthetic_per_class, run.num_classes),
                         seed=10_000 + seed)
    options = protocol.EvaluateOptions(seeds=(seed,), arms=arms,
                                       synthetic_per_class=args.synthetic_per_class,
                                       synthetic_fraction=args.synthetic_fraction,
                                       synthetic_label_smoothing=args.synthetic_label_smoothing,
                                       classifier=downstream.ClassifierSpec(steps=args.classifier_steps))
    for row in protocol.evaluate_samples(real, synthetic, options):
        emit(dict(row, experiment="low_data", k=k, gan_train_seconds=round(seconds, 1)))


def imbalanced(seed: int, args, emit) -> None:
    counts = ",".join(f"{c}:{CUT.get(c, KEPT)}" for c in range(10))
    workdir = pathlib.Path(args.workdir) / "imbalanced" / f"seed{seed}"
    seconds = train_gan(workdir, [f"seed={seed}", "data.per_class=0",
                                  f"data.class_counts={counts}", f"data.subset_seed={seed}"])
    config, run, state = load_run_state(str(workdir))
    real = load_real(config.data)
    need = balance_to(np.bincount(real.train["y"], minlength=run.num_classes), KEPT)
    synthetic = generate(run, state, labels=labels_for(need, run.num_classes), seed=10_000 + seed)
    balanced = {key: np.concatenate([real.train[key], synthetic[key]]) for key in ("x", "y")}
    spec = downstream.ClassifierSpec(steps=args.classifier_steps)
    arms = {"real": (real.train, "real"), "real+classical": (real.train, "real+classical"),
            "real+balanced": (balanced, "real"), "real+balanced+classical": (balanced, "real+classical")}
    small = np.array(sorted(CUT))
    for name, (train, arm) in arms.items():
        row = downstream.run_arm(arm, jax.random.key(seed), train, None, real.test,
                                 num_classes=run.num_classes, spec=spec)
        emit(dict(row, arm=name, experiment="imbalanced", seed=seed, cut_classes=small.tolist(),
                  cut_class_recall=float(np.mean([row["per_class_recall"][c] for c in small])),
                  synthetic_added={int(c): int(n) for c, n in need.items() if n},
                  gan_train_seconds=round(seconds, 1)))


def table(rows: list, experiment: str, key: str, metrics) -> str:
    groups = sorted({r[key] for r in rows if r["experiment"] == experiment})
    present = {r["arm"] for r in rows if r["experiment"] == experiment}
    order = list(downstream.ARMS) + [r["arm"] for r in rows]  # protocol order, then any others
    arms = [a for a in dict.fromkeys(order) if a in present]
    head = f"| {key} | arm | " + " | ".join(f"{m} (%)" for m in metrics) + " | seeds |"
    lines = [head, "|---|---|" + "---:|" * len(metrics) + "---:|"]
    for g in groups:
        for arm in arms:
            mine = [r for r in rows if r["experiment"] == experiment and r[key] == g and r["arm"] == arm]
            cells = [f"{100 * np.mean([r[m] for r in mine]):.2f} ± {100 * np.std([r[m] for r in mine]):.2f}"
                     for m in metrics]
            lines.append(f"| {g} | {arm} | " + " | ".join(cells) + f" | {len(mine)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, nargs="*", default=[5, 10, 20])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--imbalanced", action="store_true")
    parser.add_argument("--synthetic-per-class", type=int,
                        default=protocol.EvaluateOptions().synthetic_per_class)
    parser.add_argument("--synthetic-fraction", type=float,
                        default=protocol.EvaluateOptions().synthetic_fraction,
                        help="share of GAN samples in each real+gan / real+both batch")
    parser.add_argument("--synthetic-label-smoothing", type=float,
                        default=protocol.EvaluateOptions().synthetic_label_smoothing,
                        help="label smoothing of those GAN samples")
    parser.add_argument("--classifier-steps", type=int, default=downstream.ClassifierSpec().steps)
    parser.add_argument("--workdir", default="runs/downstream")
    parser.add_argument("--out", default="benchmarks/results/downstream")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every GAN, e.g. --set loss.mode_seeking=0")
    args = parser.parse_args()
    EXTRA_OVERRIDES.extend(args.set)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    done_path = out / "rows.jsonl"  # rows of earlier invocations: their units are not rerun
    rows = [json.loads(line) for line in done_path.read_text().splitlines()] if done_path.exists() else []
    done = {row_key(r) for r in rows}

    def emit(row):
        rows.append(row)
        print(json.dumps(row), flush=True)
        outputs.atomic_write_text(out / "rows.jsonl", "".join(json.dumps(r) + "\n" for r in rows))

    for k in args.k:
        for seed in args.seeds:
            low_data(k, seed, args, emit, done)
    if args.imbalanced:
        for seed in args.seeds:
            if not any(r["experiment"] == "imbalanced" and r["seed"] == seed for r in rows):
                imbalanced(seed, args, emit)
    rows_all = rows
    rows = [r for r in rows_all if r["experiment"] != "low_data"
            or row_key(r)[-2:] == arm_mixing(r["arm"], args)]
    parts = []
    ks = sorted({r["k"] for r in rows if r["experiment"] == "low_data"})
    if ks:
        parts.append(table(rows, "low_data", "k", ("accuracy", "macro_f1")))
        arms = list(downstream.ARMS)
        means = [[100 * np.mean([r["accuracy"] for r in rows if r.get("k") == k and r["arm"] == a])
                  for a in arms] for k in ks]
        stds = [[100 * np.std([r["accuracy"] for r in rows if r.get("k") == k and r["arm"] == a])
                 for a in arms] for k in ks]
        outputs.save_png(out / "low_data_accuracy.png", outputs.bar_chart(
            [f"k = {k}" for k in ks], means, stds, series=arms,
            title="digits: test accuracy (%) on held-out real images, mean ± std over seeds"))
    if any(r["experiment"] == "imbalanced" for r in rows):
        for r in rows:
            if r["experiment"] == "imbalanced":
                r["setting"] = "3,5,8 cut to 5"
        parts.append(table(rows, "imbalanced", "setting",
                           ("accuracy", "macro_f1", "cut_class_recall")))
    outputs.atomic_write_text(out / "tables.md", "\n\n".join(parts) + "\n")
    print("\n\n".join(parts))


if __name__ == "__main__":
    main()
