"""Class fidelity of the class-conditional digits GAN (configs/digits.py).

Trains the config through the real entry point (or reuses a finished workdir), draws an equal
number of samples per class from the EMA generator of the latest checkpoint, and has a
classifier trained on the real scikit-learn digits (an RBF SVM, ~99 % on held-out real digits)
label them. Reports the share labelled with the class they were conditioned on, per class and
overall, and writes the sample grid (one row per class) as a PNG.

    python benchmarks/digits_quality.py --workdir runs/digits [--seeds 0] [--grid FILE.png]
"""

import argparse
import json
import pathlib
import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.svm import SVC

from ganaug_jax import config as config_lib
from ganaug_jax.train import outputs
from ganaug_jax.train.generate import generate, load_run_state
from ganaug_jax.train.loop import train_and_evaluate


def real_classifier():
    """RBF SVM on real digits (pixels 0..16); returns (classifier, held-out accuracy)."""
    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data, digits.target, test_size=0.25, random_state=0, stratify=digits.target)
    held_out = SVC(gamma=0.001, C=10).fit(x_train, y_train).score(x_test, y_test)
    return SVC(gamma=0.001, C=10).fit(digits.data, digits.target), held_out


def evaluate(workdir: str, per_class: int, seed: int, classifier) -> dict:
    _, run, state = load_run_state(workdir)
    samples = generate(run, state, num=per_class * run.num_classes, seed=seed)
    pixels = (np.clip(samples["x"], -1, 1) + 1.0) * 8.0  # [-1, 1] -> the digits' 0..16
    predicted = classifier.predict(pixels.reshape(len(pixels), -1))
    correct = predicted == samples["y"]
    per = [float(correct[samples["y"] == c].mean()) for c in range(run.num_classes)]
    return {"step": int(state.step), "accuracy": float(correct.mean()), "per_class": per,
            "samples": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/digits")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--grid", help="write a 10 x 10 sample grid PNG (first seed)")
    args = parser.parse_args()
    classifier, held_out = real_classifier()
    print(f"# real-digit classifier: {100 * held_out:.2f} % on held-out real digits")
    for i, seed in enumerate(args.seeds):
        workdir = str(pathlib.Path(args.workdir) / f"seed{seed}")
        config = config_lib.apply_overrides(config_lib.load_config("configs/digits.py"), [f"seed={seed}"])
        start = time.perf_counter()
        train_and_evaluate(config, workdir, progress=False)
        seconds = time.perf_counter() - start
        result = evaluate(workdir, args.per_class, seed=1000 + seed, classifier=classifier)
        samples = result.pop("samples")
        print(json.dumps({"seed": seed, "train_seconds": round(seconds, 1), **result}), flush=True)
        if args.grid and i == 0:
            order = np.argsort(samples["y"], kind="stable")
            rows = [order[samples["y"][order] == c][:10] for c in range(10)]
            grid = outputs.image_grid(samples["x"][np.concatenate(rows)], 10)
            outputs.save_png(args.grid, grid.repeat(4, axis=0).repeat(4, axis=1))  # 8x8 is tiny


if __name__ == "__main__":
    main()
