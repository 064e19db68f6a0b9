"""The `ganaug` command. Subcommands parse their flags and call importable functions."""

import argparse
import sys
from collections.abc import Sequence

import ganaug_jax


def _train(args, overrides) -> int:
    from ganaug_jax import config as config_lib
    from ganaug_jax.train.loop import train_and_evaluate
    from ganaug_jax.train.distributed import is_primary
    config = config_lib.apply_overrides(config_lib.load_config(args.config), overrides)
    state = train_and_evaluate(config, args.workdir, force=args.force,
                               progress=not args.no_progress)
    if is_primary():  # one line even when the run was already complete (nothing to train)
        print(f"{args.workdir}: step {int(state.step)} of {config.num_steps}; checkpoints, "
              f"metrics.jsonl and samples are there")
    return 0


def _generate(args, overrides) -> int:
    import dataclasses

    import numpy as np

    from ganaug_jax import config as config_lib
    from ganaug_jax.data import exports, filtering
    from ganaug_jax.evaluate.downstream import ClassifierSpec
    from ganaug_jax.train import generate as gen
    if overrides:
        raise ValueError(f"ganaug generate takes no --config overrides, got {overrides}")
    # Everything that can be checked without the run is checked before loading it.
    given = (("--num", args.num), ("--per-class", args.per_class), ("--balance-to", args.balance_to))
    modes = [f"{flag} {value}" for flag, value in given if value is not None]
    if len(modes) != 1:
        raise ValueError("give exactly one of --num N, --per-class N, --balance-to N, got "
                         + (" and ".join(modes) if modes else "none"))
    if args.label is not None and args.num is None:
        raise ValueError("--label goes with --num (every sample of that class); --per-class and "
                         "--balance-to choose the classes themselves")
    for flag, value, low in (("--num", args.num, 1), ("--per-class", args.per_class, 1),
                             ("--balance-to", args.balance_to, 0)):
        if value is not None and value < low:
            raise ValueError(f"{flag} must be >= {low}, got {value}")
    gen.check_truncation(args.truncation)
    filtering.check_options(privacy_threshold=args.privacy_threshold,
                            min_confidence=args.min_confidence,
                            classifier_steps=args.classifier_steps)
    filtered = args.privacy_threshold is not None or args.min_confidence is not None
    fmt = exports.infer_format(args.out, args.format)
    exports.check_target(args.out, fmt, overwrite=args.overwrite)

    config, run, state = gen.load_run_state(args.workdir, step=args.step)
    if (args.per_class is not None or args.balance_to is not None) and not run.num_classes:
        raise ValueError(f"{modes[0].split()[0]} needs a class-conditional model; the run in "
                         f"--workdir {args.workdir!r} is unconditional (use --num)")
    if fmt == "folder" and not run.source.is_image:
        raise ValueError(f"--format folder holds images; this run makes {run.source.shape} "
                         "vectors (use an --out ending in .npz, or --format tfds)")
    labels = None
    if args.per_class is not None:
        labels = gen.labels_for(args.per_class, run.num_classes)
    elif args.balance_to is not None:
        real = np.bincount(run.source.arrays["y"], minlength=run.num_classes)
        needed = gen.balance_to(real, args.balance_to)
        if not sum(needed.values()):
            raise ValueError(f"--balance-to {args.balance_to}: every class already has that many "
                             f"real samples (fewest: {int(real.min())}); nothing to generate")
        labels = gen.labels_for(needed, run.num_classes)
    reports = []
    if filtered:
        filtering.check_filterable(run, privacy_threshold=args.privacy_threshold,
                                   min_confidence=args.min_confidence)
        if labels is None:  # --num: the labels `generate` would assign
            if args.label is not None and not 0 <= args.label < run.num_classes:
                raise ValueError(f"--label must be in [0, {run.num_classes}), got {args.label}")
            labels = (np.full(args.num, args.label, np.int32) if args.label is not None
                      else np.arange(args.num, dtype=np.int32) % run.num_classes)
        spec = ClassifierSpec()
        if args.classifier_steps is not None:
            spec = dataclasses.replace(spec, steps=args.classifier_steps)
        samples, reports = filtering.generate_filtered(
            run, state, labels, seed=args.seed, truncation=args.truncation, use_ema=not args.raw,
            privacy_threshold=args.privacy_threshold, min_confidence=args.min_confidence,
            classifier_spec=spec)
    else:
        samples = gen.generate(run, state, num=args.num, labels=labels, label=args.label,
                               seed=args.seed, truncation=args.truncation, use_ema=not args.raw)
    manifest = exports.make_manifest(
        checkpoint_step=int(state.step), seed=args.seed, config_json=config_lib.to_json(config),
        generator="raw" if args.raw else "ema", truncation=args.truncation,
        num_classes=run.num_classes, workdir=args.workdir, filters=reports)
    arrays = exports.to_export_arrays(samples, is_image=run.source.is_image)
    written = exports.export(fmt, args.out, arrays, manifest, overwrite=args.overwrite)
    counts = written["counts"]
    per_class = " (per class: " + ", ".join(f"{c}: {n}" for c, n in counts.items()) + ")" if counts else ""
    dropped = "".join(f"; {f['name']} filter dropped {f['dropped']}" for f in written["filters"])
    print(f"wrote {written['num_samples']} samples{per_class} as {fmt} to {args.out} "
          f"(checkpoint step {written['checkpoint_step']}, {written['generator']} generator"
          f"{dropped})")
    return 0


def _evaluate_options(args):
    from ganaug_jax.evaluate import downstream, protocol
    def spec(steps):
        return downstream.ClassifierSpec(**({"steps": steps} if steps is not None else {}))
    return protocol.EvaluateOptions(
        seeds=tuple(args.seeds), arms=tuple(args.arms or downstream.ARMS),
        synthetic_per_class=args.synthetic_per_class,
        synthetic_fraction=args.synthetic_fraction,
        synthetic_label_smoothing=args.synthetic_label_smoothing,
        classifier=spec(args.classifier_steps),
        domain_classifier=spec(args.domain_classifier_steps))


def _evaluate(args, overrides) -> int:
    from ganaug_jax.evaluate import protocol
    from ganaug_jax.train import outputs
    if overrides:
        raise ValueError(f"ganaug evaluate takes no --config overrides, got {overrides}")
    options = _evaluate_options(args)
    options.check()
    protocol.check_report_dir(args.out, overwrite=args.overwrite)
    # --out is checked before minutes of training classifiers, and not left behind empty
    with outputs.writable_dir_until_done(args.out, "--out"):
        report = protocol.evaluate_run(args.workdir, options, step=args.step, progress=print)
        out = protocol.write_report(report, args.out)
    print(protocol.markdown_table(report["summary"]))
    print(f"wrote {out / 'report.md'}, {out / 'report.json'}, {out / 'accuracy.png'}")
    return 0


def _demo(args, overrides) -> int:
    from ganaug_jax.demo import run_demo
    run_demo(args.workdir, config_path=args.config, overrides=overrides,
             options=_evaluate_options(args), progress=not args.no_progress, force=args.force)
    return 0


def _seed(text: str) -> int:
    """argparse type of a seed: an int in [0, 2**63 - 1] (what jax.random.key takes)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int, got {text!r}") from None
    from ganaug_jax import config as config_lib
    if not 0 <= value <= config_lib.MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be an int in [0, 2**63 - 1], got {value}")
    return value


def _add_evaluate_flags(parser, *, seeds) -> None:
    parser.add_argument("--seeds", type=_seed, nargs="+", default=seeds,
                        help=f"classifier seeds (default {' '.join(map(str, seeds))})")
    parser.add_argument("--arms", nargs="+", default=None, metavar="ARM",
                        help="arms to train, from real real+classical real+gan real+both gan "
                             "(default: all)")
    # the defaults of protocol.EvaluateOptions (not imported here: `ganaug --help` stays fast)
    parser.add_argument("--synthetic-per-class", type=int, default=1000,
                        help="GAN samples per class (default 1000)")
    parser.add_argument("--synthetic-fraction", type=float, default=0.5,
                        help="share of GAN samples in each mixed batch (default 0.5)")
    parser.add_argument("--synthetic-label-smoothing", type=float, default=0.7,
                        help="label smoothing of the GAN samples in mixed batches, in [0, 1] "
                             "(1: uniform targets; default 0.7)")
    parser.add_argument("--classifier-steps", type=int, default=None,
                        help="classifier training steps, the same for every arm "
                             "(default: downstream.ClassifierSpec's)")
    parser.add_argument("--domain-classifier-steps", type=int, default=None,
                        help="training steps of the domain classifier whose features the "
                             "sample-quality metrics use (default: downstream.ClassifierSpec's)")


def _bench(args, overrides) -> int:
    import os
    import pathlib
    # torch's OpenMP workers spin after each parallel region by default, stealing the cores
    # from the JAX code timed next in the same process; passive waiting keeps the run fair.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from ganaug_jax.bench import common, generate, scaling, train_step
    if overrides:
        raise ValueError(f"ganaug bench takes no --config overrides, got {overrides}")
    common.check_reps(args.reps, "--reps")
    suites = list(BENCH_SUITES) if args.suite == "all" else [args.suite]
    if args.chart and len(suites) > 1:
        raise ValueError("--chart names one suite's chart; with --suite all each suite's chart "
                         "goes to <--json stem or ganaug_bench>_<suite>.png")
    stem = pathlib.Path(args.json).with_suffix("") if args.json else pathlib.Path("ganaug_bench")

    def chart(suite):
        return args.chart or f"{stem}_{suite}.png"
    from ganaug_jax.train import outputs  # where results go, checked before hours of timing
    for flag, path in (("--json", args.json), ("--chart", args.chart or chart(suites[0]))):
        if path:
            outputs.ensure_writable_dir(str(pathlib.Path(path).absolute().parent), flag)
    for suite in suites:
        if suite == "augment":
            from ganaug_jax.bench import augment
            augment.run(reps=args.reps, json_path=args.json, quick=args.quick, chart=chart(suite))
        elif suite == "train":
            train_step.run(configs=train_step.CONFIGS[:1] if args.quick else train_step.CONFIGS,
                           reps=args.reps, iters=1 if args.quick else 2,
                           torch_compile=not args.quick, baseline=not args.quick,
                           bfloat16=args.bfloat16, json_path=args.json, chart=chart(suite))
            train_step.loop_efficiency(steps=30 if args.quick else 60, runs=1 if args.quick else 5,
                                       json_path=args.json, quick=args.quick)
        elif suite == "generate":
            generate.run(batches=(16, 64) if args.quick else generate.BATCHES,
                         num=256 if args.quick else 2048, export_num=200 if args.quick else 1000,
                         reps=args.reps, json_path=args.json,
                         chart=chart(suite))
        else:
            scaling.run(counts=(1, 2) if args.quick else scaling.COUNTS, reps=args.reps,
                        json_path=args.json, chart=chart(suite))
    return 0


BENCH_SUITES = ("augment", "train", "generate", "scaling")


def enable_compilation_cache(path: str) -> bool:
    """JAX's persistent compilation cache in `path`: a second run of the same config loads
    its compiled programs instead of compiling them again. Every program is cached (no
    minimum compile time or size). Returns False (logged at INFO) where it stays off: XLA:CPU
    with more than 2 devices in one process or with several processes, whose collectives hang
    when their executables are loaded back from the cache (seen with jax 0.10.2: 4 and 8 fake
    CPU devices in one process; 2 processes of 2 devices over gloo)."""
    import logging

    import jax
    if jax.devices()[0].platform == "cpu" and (jax.local_device_count() > 2
                                               or jax.process_count() > 1):
        logging.getLogger("ganaug_jax").info(
            "compilation cache off on %d CPU devices in %d processes (XLA:CPU collectives hang "
            "when loaded from the cache)", jax.device_count(), jax.process_count())
        return False
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return True


def default_cache_dir() -> str:
    import os
    return os.environ.get("GANAUG_COMPILATION_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "ganaug_jax", "jax_compilation_cache")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ganaug",
        description="GAN-based data augmentation in JAX: augment on device, train GANs, "
                    "make labelled synthetic data, measure cost.")
    parser.add_argument("--version", action="version", version=f"ganaug_jax {ganaug_jax.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    cache = argparse.ArgumentParser(add_help=False)
    cache_flags = cache.add_mutually_exclusive_group()
    cache_flags.add_argument("--compilation-cache", default=None, metavar="DIR",
                             help="JAX persistent compilation cache (default "
                                  "$GANAUG_COMPILATION_CACHE or "
                                  "~/.cache/ganaug_jax/jax_compilation_cache)")
    cache_flags.add_argument("--no-compilation-cache", action="store_true",
                             help="compile everything afresh, read and write no cache")

    train = commands.add_parser(
        "train", parents=[cache], help="train a GAN (resumes from the workdir's latest checkpoint)",
        description="Train a GAN. Override any config key with --config.KEY=VALUE, "
                    "e.g. --config.seed=3 --config.num_steps=500.")
    train.add_argument("--config", required=True, help="a Python config file, e.g. configs/ring8.py")
    train.add_argument("--workdir", required=True, help="run directory (checkpoints, metrics, samples)")
    train.add_argument("--force", action="store_true", help="resume even if the config differs")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    multi = train.add_argument_group(
        "multi-host (jax.distributed)", "run the same command in every process, each with its "
        "own --process-id; the workdir must be on a file system all hosts share")
    multi.add_argument("--distributed", action="store_true",
                       help="join a jax.distributed run, detecting the cluster (Cloud TPU, "
                            "SLURM, Open MPI) unless the three flags below are given")
    multi.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                       help="process 0's address (implies --distributed)")
    multi.add_argument("--num-processes", type=int, default=None, metavar="N")
    multi.add_argument("--process-id", type=int, default=None, metavar="I", help="0 <= I < N")
    train.set_defaults(run=_train)

    gen = commands.add_parser(
        "generate", parents=[cache], help="sample the latest checkpoint into a labelled synthetic data set",
        description="Sample the generator of the latest checkpoint (EMA by default) and export "
                    "the samples with a manifest. Give exactly one of --num, --per-class, "
                    "--balance-to.")
    gen.add_argument("--workdir", required=True, help="run directory written by `ganaug train`")
    gen.add_argument("--step", type=int, default=None,
                     help="the checkpoint of this step (default: the latest)")
    gen.add_argument("--out", required=True,
                     help="output: a .npz file, or a directory (folder of PNGs, or TFDS data set)")
    gen.add_argument("--format", choices=["npz", "folder", "tfds"], default=None,
                     help="default: npz for an --out ending in .npz, else folder")
    gen.add_argument("--num", type=int, default=None,
                     help="number of samples (labels cycle through the classes, or see --label)")
    gen.add_argument("--per-class", type=int, default=None, help="this many samples of every class")
    gen.add_argument("--balance-to", type=int, default=None,
                     help="top every class up to this many real + synthetic samples")
    gen.add_argument("--label", type=int, default=None, help="with --num: class of every sample")
    gen.add_argument("--truncation", type=float, default=None,
                     help="latents from a normal truncated to [-T, T] (T > 0)")
    gen.add_argument("--raw", action="store_true", help="the raw generator instead of the EMA one")
    gen.add_argument("--seed", type=_seed, default=0, help="sample i depends only on (seed, i)")
    gen.add_argument("--overwrite", action="store_true", help="replace an earlier export at --out")
    gen.add_argument("--privacy-threshold", type=float, default=None, metavar="T",
                     help="drop samples whose nearest real training image, in the domain "
                          "classifier's feature space, is closer than T (conditional image runs)")
    gen.add_argument("--min-confidence", type=float, default=None, metavar="C",
                     help="keep samples the domain classifier gives probability >= C for their "
                          "own class (conditional image runs); dropped samples are replaced")
    gen.add_argument("--classifier-steps", type=int, default=None, metavar="N",
                     help="training steps of the domain classifier used by the filters "
                          "(default: the downstream protocol's)")
    gen.set_defaults(run=_generate)

    ev = commands.add_parser(
        "evaluate", parents=[cache], help="does the GAN help a classifier? downstream arms and sample quality",
        description="Train a small classifier under the arms real / real+classical / real+gan / "
                    "real+both / gan for each seed, test on the run's held-out real split, and "
                    "measure sample quality; writes report.json, report.md and accuracy.png.")
    ev.add_argument("--workdir", required=True, help="a class-conditional image run")
    ev.add_argument("--step", type=int, default=None,
                    help="the checkpoint of this step (default: the latest)")
    ev.add_argument("--out", required=True, help="report directory")
    ev.add_argument("--overwrite", action="store_true",
                    help="replace an earlier report (report.json, report.md, accuracy.png) at --out")
    _add_evaluate_flags(ev, seeds=[0, 1, 2, 3, 4])
    ev.set_defaults(run=_evaluate)

    demo = commands.add_parser(
        "demo", parents=[cache], help="train, generate and evaluate on low-data digits (about 2 minutes, 2 cores)",
        description="The whole product on scikit-learn's digits with 10 real images per class: "
                    "train the conditional GAN, generate a balanced synthetic set, evaluate it "
                    "downstream, and write a report folder (WORKDIR/report/summary.md). Config "
                    "overrides work as in `ganaug train`, e.g. --config.data.per_class=5.")
    demo.add_argument("--workdir", default="runs/demo", help="default runs/demo")
    demo.add_argument("--config", default=None, help="default: configs/digits_lowdata.py")
    demo.add_argument("--force", action="store_true",
                      help="resume the GAN run in WORKDIR/gan even if the config differs")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_evaluate_flags(demo, seeds=[0, 1, 2])
    demo.set_defaults(run=_demo)

    bench = commands.add_parser(
        "bench", help="measure images/sec on this machine: augment, train, generate, scaling",
        description="Run benchmark suites (medians of >= 5 interleaved repetitions after a "
                    "warm-up, compile time reported apart, random inputs): print a table, write one JSON "
                    "line per measurement (device kind and count, versions, shapes, dtype) and "
                    "draw a PNG chart per suite. Compile times are cold: bench does not use the "
                    "persistent compilation cache. The train suite times PyTorch peers when torch "
                    "is installed (pip install torch).")
    bench.add_argument("--suite", choices=[*BENCH_SUITES, "all"], default="all",
                       help="default all (about 45 minutes on 2 CPU cores; --quick: minutes)")
    bench.add_argument("--json", default=None, metavar="FILE", help="append the JSON lines here")
    bench.add_argument("--chart", default=None, metavar="PNG",
                       help="chart path for a single suite (default: <json stem or "
                            "ganaug_bench>_<suite>.png)")
    bench.add_argument("--reps", type=int, default=5, help="timed repetitions, >= 5 (default 5)")
    bench.add_argument("--bfloat16", action="store_true",
                       help="train suite: bfloat16 compute (float32 params), the peers autocast")
    bench.add_argument("--quick", action="store_true",
                       help="a smaller sweep: first config only, fewer sizes, no torch.compile")
    bench.set_defaults(run=_bench)
    return parser


def _join_override_values(argv: list) -> list:
    """'--config.KEY VALUE' -> '--config.KEY=VALUE' (argparse's two spellings of an option)."""
    joined, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if (arg.startswith("--config.") and "=" not in arg and i + 1 < len(argv)
                and not argv[i + 1].startswith("--")):
            joined.append(f"{arg}={argv[i + 1]}")
            i += 2
        else:
            joined.append(arg)
            i += 1
    return joined


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = _join_override_values(list(sys.argv[1:] if argv is None else argv))
    overrides = [a[len("--config."):] for a in argv if a.startswith("--config.")]
    args = parser.parse_args([a for a in argv if not a.startswith("--config.")])
    if args.command is None:
        parser.print_help()
        return 0
    try:
        if args.command == "train" and (args.distributed or args.coordinator is not None
                                        or args.num_processes is not None
                                        or args.process_id is not None):
            from ganaug_jax.train import distributed  # before anything starts JAX's backends
            distributed.initialize(args.coordinator, args.num_processes, args.process_id)
        # bench reports cold compile times: it never reads the persistent cache
        if args.command != "bench" and not args.no_compilation_cache:
            if args.compilation_cache is not None:  # asked for by name: it must be usable
                from ganaug_jax.train import outputs
                outputs.ensure_writable_dir(args.compilation_cache, "--compilation-cache")
            enable_compilation_cache(args.compilation_cache or default_cache_dir())
        return args.run(args, overrides)
    except (ValueError, RuntimeError) as error:  # bad input and stopped runs: one clear line
        print(f"ganaug {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
