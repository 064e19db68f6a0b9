"""Mode coverage of the shipped 2-D mixture configs over seeds (PROTOCOLS.md section 1).

For each seed: train the config through the real entry point, draw 2,500 samples from the EMA
generator of the final checkpoint, and count captured modes, the share of high-quality
samples and the reverse KL to uniform. Prints one JSON line per run and a markdown table with
mean +- standard error.

    python benchmarks/mode_coverage.py --mixture ring8 --seeds 0 1 2 3 4 [--workdir runs/cov]
"""

import argparse
import json
import pathlib
import time

import numpy as np

from ganaug_jax import config as config_lib
from ganaug_jax.data import mixtures
from ganaug_jax.evaluate.mode_coverage import mode_coverage
from ganaug_jax.train.generate import generate, load_run_state
from ganaug_jax.train.loop import train_and_evaluate

CONFIGS = {"ring8": "configs/ring8.py", "grid25": "configs/grid25.py"}


def run_seed(mixture: str, seed: int, workdir: pathlib.Path, overrides: list) -> dict:
    config = config_lib.apply_overrides(config_lib.load_config(CONFIGS[mixture]),
                                        [f"seed={seed}", *overrides])
    start = time.perf_counter()
    train_and_evaluate(config, str(workdir), progress=False)
    seconds = time.perf_counter() - start
    _, run, state = load_run_state(str(workdir))
    samples = generate(run, state, num=2500, seed=10_000 + seed)["x"]
    means, std = mixtures.mixture(mixture)
    return dict(mixture=mixture, seed=seed, train_seconds=round(seconds, 1),
                **mode_coverage(samples, means, std))


def summary(rows: list) -> str:
    lines = ["| mixture | seeds | modes (mean ± SE) | min modes | high quality % (mean ± SE) | min HQ % | reverse KL |",
             "|---|---|---|---|---|---|---|"]
    for mixture in sorted({r["mixture"] for r in rows}):
        rs = [r for r in rows if r["mixture"] == mixture]
        modes = np.array([r["modes"] for r in rs], float)
        hq = np.array([r["high_quality"] for r in rs]) * 100
        kl = np.array([r["reverse_kl"] for r in rs])
        se = lambda v: v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else 0.0
        lines.append(f"| {mixture} | {len(rs)} | {modes.mean():.2f} ± {se(modes):.2f} / {rs[0]['num_modes']} "
                     f"| {int(modes.min())} | {hq.mean():.2f} ± {se(hq):.2f} | {hq.min():.2f} "
                     f"| {kl.mean():.4f} ± {se(kl):.4f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mixture", choices=sorted(CONFIGS), nargs="+", default=sorted(CONFIGS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--workdir", default="runs/mode_coverage")
    parser.add_argument("--json", help="append one JSON line per run to this file")
    parser.add_argument("--override", nargs="*", default=[], help="extra KEY=VALUE config overrides")
    args = parser.parse_args()
    rows = []
    for mixture in args.mixture:
        for seed in args.seeds:
            workdir = pathlib.Path(args.workdir) / f"{mixture}_seed{seed}"
            row = run_seed(mixture, seed, workdir, args.override)
            rows.append(row)
            print(json.dumps(row), flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(row) + "\n")
    print(summary(rows))


if __name__ == "__main__":
    main()
