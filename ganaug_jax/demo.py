"""`ganaug demo`: the whole product on the embedded digits in a low-data regime, in one command.

Trains the class-conditional GAN (configs/digits_lowdata.py: 10 real images per class,
DiffAugment, mode seeking), draws a class-balanced synthetic set, runs the downstream
protocol (every arm, several classifier seeds, held-out real test images) and sample quality,
and writes a report folder: summary.md, samples.png (one row per class: real, then GAN),
accuracy.png, report.json and the synthetic set (synthetic.npz, with its manifest).
"""

import pathlib

import numpy as np

from ganaug_jax import config as config_lib
from ganaug_jax.data import exports
from ganaug_jax.data.sources import load_real
from ganaug_jax.evaluate import protocol
from ganaug_jax.train import outputs
from ganaug_jax.train.generate import generate, labels_for, load_run_state
from ganaug_jax.train.loop import train_and_evaluate

DEFAULT_CONFIG = config_lib.bundled_configs() / "digits_lowdata.py"


def _sample_grid(real: dict, synthetic: dict, num_classes: int, per_row: int = 10) -> np.ndarray:
    """One row per class: `per_row` real training images (fewer if the class has fewer), a
    blank, then `per_row` GAN samples; upscaled 4x for 8x8 images."""
    h, w, c = real["x"].shape[1:]
    rows = []
    for k in range(num_classes):
        mine = real["x"][real["y"] == k][:per_row]
        mine = np.concatenate([mine, np.full((per_row - len(mine), h, w, c), 1.0, np.float32)])
        fake = synthetic["x"][synthetic["y"] == k][:per_row]
        rows.append(np.concatenate([mine, np.full((1, h, w, c), 1.0, np.float32), fake]))
    grid = outputs.image_grid(np.concatenate(rows), num_classes)
    scale = max(1, 64 // h)
    return grid.repeat(scale, axis=0).repeat(scale, axis=1)


def run_demo(workdir: str, *, config_path: str | None = None, overrides: list = (),
             options: protocol.EvaluateOptions = protocol.EvaluateOptions(seeds=(0, 1, 2)),
             progress: bool = True, force: bool = False, log=print) -> pathlib.Path:
    """Runs the demo into workdir (the GAN run in workdir/gan, the report in workdir/report,
    resumable; `force` resumes a GAN run made with another config); returns the report
    folder."""
    options.check()
    path = pathlib.Path(config_path) if config_path else DEFAULT_CONFIG
    config = config_lib.apply_overrides(config_lib.load_config(str(path)), list(overrides))
    root = pathlib.Path(workdir)
    gan_dir, report_dir = root / "gan", root / "report"
    log(f"[1/4] training the conditional GAN on {config.data.per_class or 'all'} real images "
        f"per class ({config.data.source}, {config.num_steps} steps) in {gan_dir}")
    train_and_evaluate(config, str(gan_dir), progress=progress, force=force)

    log(f"[2/4] generating {options.synthetic_per_class} samples per class")
    _, run, state = load_run_state(str(gan_dir))
    real = load_real(config.data)
    synthetic = generate(run, state, labels=labels_for(options.synthetic_per_class, run.num_classes),
                         seed=options.sample_seed)
    report_dir.mkdir(parents=True, exist_ok=True)
    manifest = exports.make_manifest(checkpoint_step=int(state.step), seed=options.sample_seed,
                                     config_json=config_lib.to_json(config), generator="ema",
                                     truncation=None, num_classes=run.num_classes,
                                     workdir=str(gan_dir))
    exports.export_npz(report_dir / "synthetic.npz",
                       exports.to_export_arrays(synthetic, is_image=True), manifest, overwrite=True)
    outputs.save_png(report_dir / "samples.png", _sample_grid(real.train, synthetic, run.num_classes))

    log(f"[3/4] downstream classifiers, arms {list(options.arms)} x seeds {list(options.seeds)}, "
        f"{options.classifier.steps} steps each, tested on {len(real.test['y'])} held-out real "
        "images; then sample quality")
    report = protocol.build_report(str(gan_dir), config, run, state, real, synthetic, options,
                                   progress=lambda line: log("      " + line))
    log("[4/4] writing the report")
    protocol.write_report(report, str(report_dir), title="ganaug demo: low-data digits")
    summary = (report_dir / "report.md").read_text()
    outputs.atomic_write_text(report_dir / "summary.md", summary + (
        "\n![samples](samples.png)\n\nEach row: the real training images of a class, then GAN "
        "samples of that class.\n\n![accuracy](accuracy.png)\n"))
    log(protocol.markdown_table(report["summary"]))
    log(f"report: {report_dir / 'summary.md'}")
    return report_dir
