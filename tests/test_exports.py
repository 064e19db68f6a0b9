"""Synthetic data exports and generation options: npz, PNG folders and TFDS data sets read back
bit-exact with their manifests; per-class and balance-to counts; truncated latents; raw vs EMA
generator; atomic writes; the `ganaug generate` command end to end."""

import hashlib
import json
import os
import pathlib
import re
import stat
import sys
import types

import jax
import numpy as np
import pytest
from PIL import Image

from ganaug_jax import cli
from ganaug_jax import config as config_lib
from ganaug_jax.data import exports
from ganaug_jax.train import checkpoint, outputs
from ganaug_jax.train.build import build_run
from ganaug_jax.train.generate import (
    balance_to,
    generate,
    labels_for,
    load_run_state,
    sample_chunk,
    sample_latents,
)
from ganaug_jax.train.loop import train_and_evaluate
from ganaug_jax.train.state import create_train_state

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _config(source: str, **overrides):
    """A tiny config in the manner of tests/test_train.py."""
    base = {"data.source": source, "num_steps": 2, "batch_size": 16, "checkpoint_every": 2,
            "log_every": 2, "sample_every": 0, "model.width": 8, "model.latent_dim": 8}
    if source == "digits":
        base.update({"model.architecture": "dcgan", "model.conditional": True,
                     "augment.kind": "diffaugment", "model.depth": 0})
    base.update(overrides)
    config = config_lib.load_config(str(ROOT / "configs" / "default.py"))
    return config_lib.apply_overrides(config, [f"{k}={v}" for k, v in base.items()])


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A class-conditional digits GAN trained for 2 steps (checkpoints at steps 1 and 2), loaded
    back from its latest checkpoint."""
    workdir = tmp_path_factory.mktemp("digits") / "run"
    train_and_evaluate(_config("digits", checkpoint_every=1), str(workdir), progress=False)
    config, run, state = load_run_state(str(workdir))
    return types.SimpleNamespace(workdir=workdir, config=config, run=run, state=state)


def initial_run(workdir, config):
    """A run directory holding the config's initial state as a step-0 checkpoint."""
    workdir.mkdir()
    run = build_run(config)
    state = create_train_state(jax.random.key(0), run.generator, run.discriminator, run.g_tx,
                               run.d_tx, data_shape=run.source.shape, latent_dim=run.latent_dim,
                               num_classes=run.num_classes)
    outputs.atomic_write_text(workdir / "config.json", config_lib.to_json(config))
    manager = checkpoint.make_manager(workdir, keep=1)
    checkpoint.save(manager, state)
    manager.wait_until_finished()
    manager.close()
    return workdir


@pytest.fixture(scope="module")
def ring_run(tmp_path_factory):
    """An unconditional ring8 run directory holding its initial state as a step-0 checkpoint."""
    return initial_run(tmp_path_factory.mktemp("ring") / "run", _config("ring8"))


@pytest.fixture(scope="module")
def digit_samples(digits_run):
    """Two samples per class, class-sorted, as uint8 images and int32 labels."""
    raw = generate(digits_run.run, digits_run.state, labels=labels_for(2, 10), seed=3,
                   batch_size=32)
    return exports.to_export_arrays(raw, is_image=True)


def _manifest(digits_run, **overrides):
    fields = {"checkpoint_step": int(digits_run.state.step), "seed": 3,
              "config_json": config_lib.to_json(digits_run.config), "generator": "ema",
              "truncation": None, "num_classes": 10, "workdir": str(digits_run.workdir)}
    return exports.make_manifest(**{**fields, **overrides})


# ---- label assignment ----

def test_labels_for_and_balance_to():
    np.testing.assert_array_equal(labels_for(2, 3), [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(labels_for({2: 3, 0: 1, 1: 0}, 4), [0, 2, 2, 2])
    assert labels_for(1, 5).dtype == np.int32
    assert balance_to(np.array([5, 10, 0, 12]), 8) == {0: 3, 1: 0, 2: 8, 3: 0}
    assert balance_to(np.array([5, 10]), 0) == {0: 0, 1: 0}
    with pytest.raises(ValueError, match="--balance-to must be an int >= 0, got -1"):
        balance_to(np.array([5, 10]), -1)
    with pytest.raises(ValueError, match="--per-class must be >= 1, got 0"):
        labels_for(0, 3)
    with pytest.raises(ValueError, match=r"class must be an int in \[0, 3\), got 5"):
        labels_for({5: 1}, 3)
    with pytest.raises(ValueError, match="needs a conditional model"):
        labels_for(2, 0)


# ---- latents ----

def test_truncated_latents_lie_in_the_interval_and_depend_only_on_the_index():
    key = jax.random.key(7)
    z = np.asarray(sample_latents(key, np.arange(2000), latent_dim=8, truncation=0.5))
    assert z.shape == (2000, 8) and z.dtype == np.float32
    assert np.abs(z).max() <= 0.5 and np.abs(z).max() > 0.49  # fills [-t, t], no further
    one = np.asarray(sample_latents(key, np.array([1234]), latent_dim=8, truncation=0.5))
    np.testing.assert_array_equal(one[0], z[1234])
    expected = jax.random.truncated_normal(jax.random.fold_in(key, 1234), -0.5, 0.5, (8,))
    np.testing.assert_array_equal(one[0], np.asarray(expected))
    plain = np.asarray(sample_latents(key, np.array([3, 9]), latent_dim=8))
    np.testing.assert_array_equal(plain[1], np.asarray(jax.random.normal(jax.random.fold_in(key, 9), (8,))))
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="--truncation must be a finite number > 0"):
            sample_latents(key, np.arange(2), latent_dim=8, truncation=bad)
    with pytest.raises(ValueError, match="key must be a PRNG key"):
        sample_latents(7, np.arange(2), latent_dim=8)


# ---- generation options ----

def test_per_sample_labels_seed_and_batch_independence(digits_run):
    run, state = digits_run.run, digits_run.state
    out = generate(run, state, labels=np.array([1, 1, 1, 4, 4]), seed=3, batch_size=4)
    assert out["x"].shape == (5, 8, 8, 1) and out["x"].dtype == np.float32
    np.testing.assert_array_equal(out["y"], [1, 1, 1, 4, 4])
    assert out["y"].dtype == np.int32
    # Sample 3 is a function of (seed, 3) and its own label only.
    other = generate(run, state, labels=np.array([7, 0, 2, 4]), seed=3, batch_size=3)
    np.testing.assert_array_equal(other["x"][3], out["x"][3])
    np.testing.assert_array_equal(generate(run, state, labels=np.array([1, 1, 1, 4, 4]), seed=3)["x"],
                                  out["x"])
    assert not np.array_equal(generate(run, state, labels=np.array([1, 1, 1, 4, 4]), seed=4)["x"],
                              out["x"])
    with pytest.raises(ValueError, match=r"labels must be a 1-D int array with values in \[0, 10\)"):
        generate(run, state, labels=np.array([10]), seed=0)
    with pytest.raises(ValueError, match=r"--num \(3\) must equal the number of labels \(2\)"):
        generate(run, state, num=3, labels=np.array([1, 2]), seed=0)


def test_sample_bits_depend_on_neither_batch_size_nor_first_index():
    """With the digits config's generator (8x8x1, width 64, latent 64; randomly initialised)
    XLA:CPU's products give a sample other bits in a batch of another size; generate runs the
    generator on fixed chunks aligned to the sample indices, so every split below agrees bit
    for bit with generating each sample alone."""
    from ganaug_jax.bench.generate import make_run_state
    from ganaug_jax.bench.train_step import TrainConfig
    run, state = make_run_state(TrainConfig("8x8x1 w64", 8, 1, 64, 0, num_classes=10,
                                            latent_dim=64))
    labels = (np.arange(40) * 3) % 10
    alone = np.concatenate([
        generate(run, state, labels=labels[i:i + 1], first_index=i, seed=2, batch_size=1)["x"]
        for i in range(40)])
    for batch_size in (3, 16, 40, 100):
        np.testing.assert_array_equal(
            generate(run, state, labels=labels, seed=2, batch_size=batch_size)["x"], alone)
    stream = generate(run, state, labels=labels[5:23], first_index=5, seed=2, batch_size=7)
    np.testing.assert_array_equal(stream["x"], alone[5:23])
    np.testing.assert_array_equal(stream["y"], labels[5:23])
    # the default labels (sample i: i % 10) continue across first_index too
    whole = generate(run, state, num=40, seed=2)
    parts = [generate(run, state, num=n, first_index=i, seed=2) for i, n in ((0, 13), (13, 27))]
    np.testing.assert_array_equal(np.concatenate([p["y"] for p in parts]), np.arange(40) % 10)
    np.testing.assert_array_equal(np.concatenate([p["x"] for p in parts]), whole["x"])
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match=f"batch_size must be an int >= 1, got {bad!r}"):
            generate(run, state, num=4, seed=0, batch_size=bad)
    last = np.iinfo(np.int32).max - 3 - sample_chunk()  # calls reach a chunk past the end
    top = generate(run, state, num=3, label=4, seed=2, first_index=last, batch_size=1)["x"]
    np.testing.assert_array_equal(
        generate(run, state, num=1, label=4, seed=2, first_index=last + 2, batch_size=1)["x"],
        top[2:])
    for bad in (-1, last + 1):
        with pytest.raises(ValueError, match=f"first_index must be an int >= 0 \\(int32 range\\), "
                                             f"got {bad}"):
            generate(run, state, num=3, seed=2, first_index=bad, batch_size=1)


def test_raw_and_ema_generators_match_direct_application(digits_run):
    run, state = digits_run.run, digits_run.state
    labels = np.array([0, 3, 9], np.int32)
    z = sample_latents(jax.random.key(5), np.arange(3), latent_dim=run.latent_dim)
    got = {}
    for use_ema, params in ((True, state.ema_params), (False, state.g_params)):
        direct = run.generator.apply({"params": params, "batch_stats": state.g_stats}, z, labels,
                                     train=False)
        got[use_ema] = generate(run, state, labels=labels, seed=5, use_ema=use_ema)["x"]
        np.testing.assert_allclose(got[use_ema], np.asarray(direct), atol=1e-6)
    leaves = zip(jax.tree.leaves(state.ema_params), jax.tree.leaves(state.g_params))
    assert any(not np.array_equal(a, b) for a, b in leaves)  # two steps moved G past its EMA
    np.testing.assert_array_equal(generate(run, state, labels=labels, seed=5)["x"], got[True])
    assert np.abs(got[True] - got[False]).max() > 1e-5


def test_truncation_changes_the_samples(digits_run):
    run, state = digits_run.run, digits_run.state
    plain = generate(run, state, num=4, seed=2)["x"]
    truncated = generate(run, state, num=4, seed=2, truncation=0.3)["x"]
    assert not np.allclose(plain, truncated)
    assert np.abs(truncated).max() <= 1.0
    with pytest.raises(ValueError, match="--truncation"):
        generate(run, state, num=4, seed=2, truncation=-0.5)


# ---- pixels: to_uint8 and image_grid ----

def uint8_reference(x) -> tuple[np.ndarray, np.ndarray]:
    """(expected uint8, ambiguous mask): outputs.to_uint8's documented map [-1, 1] -> [0, 255],
    values outside saturating, written in float64: clip(round((x + 1) * 127.5), 0, 255) with
    round-to-nearest. `ambiguous` marks values within 1e-4 of a .5 tie, where the library's
    float32 arithmetic may round to either side (|error| ~ 255 * 2^-24 = 1.5e-5)."""
    scaled = (np.asarray(x, np.float64) + 1.0) * 127.5
    with np.errstate(invalid="ignore"):  # inf - inf in the tie test of infinite inputs
        ambiguous = np.abs(scaled - np.floor(scaled) - 0.5) < 1e-4
    return np.clip(np.floor(scaled + 0.5), 0, 255).astype(np.uint8), ambiguous & (np.abs(scaled) < 1e9)


def assert_uint8_of(got, x):
    """got == to_uint8(x) by the float64 reference: exact away from .5 ties, within 1 at them."""
    expected, ambiguous = uint8_reference(x)
    got = np.asarray(got)
    assert got.dtype == np.uint8 and got.shape == expected.shape
    diff = np.abs(got.astype(int) - expected.astype(int))
    assert np.all(diff[~ambiguous] == 0) and np.all(diff <= 1)


def test_to_uint8_against_the_float64_formula_with_saturation_and_rounding():
    # exact anchors: -1 -> 0, 1 -> 255, 0 -> 127.5 -> 128 (the only tie in range; truncation
    # would give 127), values scaled to k + 0.4 / k + 0.6 round down / up; saturation outside.
    anchors = np.array([-1.0, 1.0, 0.0, 0.4 / 127.5 - 1, 0.6 / 127.5 - 1, 254.4 / 127.5 - 1,
                        254.6 / 127.5 - 1, -1.001, -3.0, 1.001, 40.0, -np.inf, np.inf],
                       np.float32)
    np.testing.assert_array_equal(outputs.to_uint8(anchors),
                                  [0, 255, 128, 0, 1, 254, 255, 0, 0, 255, 255, 0, 255])
    rng = np.random.default_rng(0)
    x = rng.uniform(-1.3, 1.3, (50, 6, 5, 3)).astype(np.float32)  # ~23 % saturate
    assert_uint8_of(outputs.to_uint8(x), x)
    assert_uint8_of(outputs.to_uint8(x.astype(np.float64)), x)  # float64 input: same pixels
    levels = np.arange(256)  # every level from its own grey value and 0.3 on either side
    for offset in (0.0, -0.3, 0.3):
        x = ((levels + offset) / 127.5 - 1).astype(np.float32)
        np.testing.assert_array_equal(outputs.to_uint8(x), levels)


def test_image_grid_places_sample_i_in_row_i_div_cols_column_i_mod_cols():
    # (N, H, W, C) -> (rows (H + 1) + 1, cols (W + 1) + 1, C), cols = ceil(N / rows), samples
    # filled row by row (the demo's "one row per class" passes each class's images in turn),
    # 1-pixel white (255) borders, unused cells white.
    rng = np.random.default_rng(1)
    n, h, w, c, rows = 7, 3, 2, 3, 2
    images = rng.uniform(-1.2, 1.2, (n, h, w, c)).astype(np.float32)
    grid = outputs.image_grid(images, rows)
    cols = 4
    assert grid.dtype == np.uint8 and grid.shape == (rows * (h + 1) + 1, cols * (w + 1) + 1, c)
    used = np.zeros(grid.shape[:2], bool)
    for i in range(n):
        top, left = 1 + (i // cols) * (h + 1), 1 + (i % cols) * (w + 1)
        assert_uint8_of(grid[top:top + h, left:left + w], images[i])
        used[top:top + h, left:left + w] = True
    assert np.all(grid[~used] == 255)  # borders and the eighth (empty) cell
    # one row per class: 3 classes x 4 images, rows=3 -> row k holds class k's images in order
    per_class = rng.uniform(-1, 1, (3, 4, h, w, 1)).astype(np.float32)
    grid = outputs.image_grid(per_class.reshape(12, h, w, 1), 3)
    for k in range(3):
        for j in range(4):
            top, left = 1 + k * (h + 1), 1 + j * (w + 1)
            assert_uint8_of(grid[top:top + h, left:left + w], per_class[k, j])


# ---- exports ----

@pytest.mark.parametrize("fmt, name", [("npz", "s.npz"), ("folder", "s"), ("tfds", "s_tfds")])
def test_exports_get_the_permissions_of_the_umask(fmt, name, digits_run, digit_samples,
                                                  tmp_path):
    """Staged and renamed files are 0o666 less the umask and folders 0o777 less it, as open()
    and mkdir() would make them (mkstemp's 0o600 survived the rename before)."""
    previous = os.umask(0o027)
    try:
        exports.export(fmt, tmp_path / name, digit_samples, _manifest(digits_run))
        outputs.atomic_write_text(tmp_path / "report.md", "# report\n")
        outputs.atomic_write_text(tmp_path / "report.md", "# report, again\n")
    finally:
        os.umask(previous)
    paths = [tmp_path / name, tmp_path / "report.md"]
    paths += list((tmp_path / name).rglob("*")) if (tmp_path / name).is_dir() else []
    assert len(paths) > 2 or fmt == "npz"
    for path in paths:
        expected = 0o750 if path.is_dir() else 0o640
        assert stat.S_IMODE(path.stat().st_mode) == expected, path
    assert (tmp_path / "report.md").read_text() == "# report, again\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "report.md"])


@pytest.mark.parametrize("fmt, name", [("npz", "s.npz"), ("folder", "s"), ("tfds", "s_tfds")])
def test_every_format_reads_back_exactly(fmt, name, digits_run, digit_samples, tmp_path):
    out = tmp_path / name
    written = exports.export(fmt, out, digit_samples, _manifest(digits_run))
    samples, manifest = exports.read_export(out)
    assert set(samples) == {"x", "y"}
    assert samples["x"].dtype == np.uint8 and samples["y"].dtype == np.int32
    np.testing.assert_array_equal(samples["x"], digit_samples["x"])
    np.testing.assert_array_equal(samples["y"], digit_samples["y"])
    assert manifest == written
    saved_config = (digits_run.workdir / "config.json").read_bytes()
    assert manifest["config_sha256"] == hashlib.sha256(saved_config).hexdigest()
    assert manifest["counts"] == {str(c): 2 for c in range(10)}
    assert manifest["num_samples"] == 20 and manifest["num_classes"] == 10
    assert manifest["format"] == fmt and manifest["created_by"] == "ganaug_jax 0.1.0"
    assert (manifest["checkpoint_step"], manifest["seed"], manifest["generator"]) == (2, 3, "ema")
    assert manifest["truncation"] is None
    assert manifest["filters"] == [] and manifest["dropped"] == 0
    if fmt == "folder":  # labels sorted: samples 6 and 7 are the two 3s
        with Image.open(out / "3" / "000007.png") as image:
            assert image.mode == "L" and image.size == (8, 8)
            np.testing.assert_array_equal(np.asarray(image), digit_samples["x"][7, ..., 0])
        assert sorted(p.name for p in out.iterdir()) == [*map(str, range(10)), "manifest.json"]
    if fmt == "npz":
        with np.load(out) as data:
            assert sorted(data) == ["manifest", "x", "y"]
            assert json.loads(data["manifest"].item()) == written
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary left


def test_tfds_export_opens_with_tfds_without_tensorflow(digits_run, digit_samples, tmp_path):
    import tensorflow_datasets as tfds
    out = tmp_path / "synthetic"
    exports.export_tfds(out, digit_samples, _manifest(digits_run), name="digits_gan")
    builder = tfds.builder_from_directory(str(out / "digits_gan" / "1.0.0"))
    assert builder.info.splits["train"].num_examples == 20
    assert builder.info.features["image"].shape == (8, 8, 1)
    assert builder.info.features["label"].num_classes == 10
    assert builder.info.metadata["config_sha256"] == _manifest(digits_run)["config_sha256"]
    by_builder = builder.as_data_source()["train"]
    by_name = tfds.data_source("digits_gan", data_dir=str(out), split="train")
    assert len(by_builder) == len(by_name) == 20
    for i in (13, 0, 19, 6):  # random access
        for source in (by_builder, by_name):
            np.testing.assert_array_equal(source[i]["image"], digit_samples["x"][i])
            assert source[i]["label"] == digit_samples["y"][i]
    assert "tensorflow" not in sys.modules


def test_unlabelled_rgb_folder_and_vector_exports(digits_run, tmp_path):
    rng = np.random.default_rng(0)
    rgb = {"x": rng.integers(0, 256, (3, 5, 4, 3), dtype=np.uint8)}
    manifest = _manifest(digits_run, num_classes=0)
    written = exports.export_folder(tmp_path / "rgb", rgb, manifest)
    assert written["counts"] is None
    assert sorted(p.name for p in (tmp_path / "rgb").iterdir()) == [
        "000000.png", "000001.png", "000002.png", "manifest.json"]
    with Image.open(tmp_path / "rgb" / "000002.png") as image:
        assert image.mode == "RGB"
    samples, _ = exports.read_export(tmp_path / "rgb")
    assert set(samples) == {"x"}
    np.testing.assert_array_equal(samples["x"], rgb["x"])
    vectors = {"x": rng.standard_normal((6, 2)).astype(np.float32), "y": np.array([0, 2, 2, 1, 0, 2])}
    for fmt, name in (("npz", "v.npz"), ("tfds", "v")):
        exports.export(fmt, tmp_path / name, vectors, manifest)
        samples, m = exports.read_export(tmp_path / name)
        np.testing.assert_array_equal(samples["x"], vectors["x"])
        np.testing.assert_array_equal(samples["y"], vectors["y"])
        assert m["counts"] == {"0": 2, "1": 1, "2": 3} and m["num_classes"] == 3
    with pytest.raises(ValueError, match="--format folder holds images"):
        exports.export_folder(tmp_path / "vf", vectors, manifest)
    with pytest.raises(ValueError, match=r"samples\['x'\] must be \(N, H, W, 1 or 3\) uint8"):
        exports.export_npz(tmp_path / "f.npz", {"x": np.zeros((2, 4, 4, 1), np.float32)}, manifest)
    with pytest.raises(ValueError, match="missing keys"):
        exports.export_npz(tmp_path / "g.npz", rgb, {"seed": 1})


@pytest.mark.parametrize("fmt, name, victim", [
    ("folder", "out", "_write_png"), ("tfds", "out", "_png_bytes"), ("npz", "out.npz", None)])
def test_failed_export_leaves_no_target_and_no_temporary(fmt, name, victim, digits_run,
                                                         digit_samples, tmp_path, monkeypatch):
    calls = []
    if victim is not None:
        real = getattr(exports, victim)

        def failing(*args):
            calls.append(1)
            if len(calls) > 3:
                raise OSError("disk full (simulated)")
            return real(*args)
        monkeypatch.setattr(exports, victim, failing)
    else:  # the npz is complete in memory; fail its write
        def failing(fd):
            raise OSError("disk full (simulated)")
        monkeypatch.setattr(outputs.os, "fsync", failing)
    parent = tmp_path / "exports"
    parent.mkdir()
    with pytest.raises(OSError, match="disk full"):
        exports.export(fmt, parent / name, digit_samples, _manifest(digits_run))
    assert victim is None or len(calls) == 4  # it failed part-way through
    assert list(parent.iterdir()) == []


def test_existing_targets_are_kept_unless_overwrite(digits_run, digit_samples, tmp_path):
    out = tmp_path / "out"
    exports.export_folder(out, digit_samples, _manifest(digits_run))
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.raises(ValueError, match=r"--out .* already exists and is not empty; pass --overwrite"):
        exports.export_folder(out, digit_samples, _manifest(digits_run, seed=9))
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert exports.read_export(out)[1]["seed"] == 3
    half = {"x": digit_samples["x"][:5], "y": digit_samples["y"][:5]}
    exports.export_folder(out, half, _manifest(digits_run, seed=9), overwrite=True)
    samples, manifest = exports.read_export(out)
    assert manifest["seed"] == 9 and manifest["num_samples"] == 5
    np.testing.assert_array_equal(samples["x"], half["x"])
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the old export is gone too
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(ValueError, match="not an earlier export .* refusing"):
        exports.export_folder(foreign, half, _manifest(digits_run), overwrite=True)
    assert (foreign / "notes.txt").read_text() == "keep"
    empty = tmp_path / "empty"
    empty.mkdir()
    exports.export_folder(empty, half, _manifest(digits_run))  # an empty directory is fine
    npz = tmp_path / "s.npz"
    exports.export_npz(npz, half, _manifest(digits_run))
    with pytest.raises(ValueError, match="already exists; pass --overwrite"):
        exports.export_npz(npz, digit_samples, _manifest(digits_run))
    assert exports.read_export(npz)[1]["num_samples"] == 5
    exports.export_npz(npz, digit_samples, _manifest(digits_run), overwrite=True)
    assert exports.read_export(npz)[1]["num_samples"] == 20


@pytest.mark.parametrize("fmt", ["folder", "tfds"])
def test_the_current_directory_and_its_parents_are_refused(digits_run, digit_samples, tmp_path,
                                                         monkeypatch, fmt):
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)  # empty: the export's own staging folder would have made it look full
    for out in (".", "..", str(here)):
        with pytest.raises(ValueError, match=r"--out .* is the current directory or holds it"):
            exports.export(fmt, out, digit_samples, _manifest(digits_run), overwrite=True)
    assert list(here.iterdir()) == [] and [p.name for p in tmp_path.iterdir()] == ["here"]
    exports.export(fmt, "sub", digit_samples, _manifest(digits_run))
    assert exports.read_export(here / "sub")[1]["num_samples"] == len(digit_samples["y"])


# ---- the command ----

def _main(capsys, *args):
    code = cli.main(["generate", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_per_class_with_truncation(digits_run, tmp_path, capsys):
    out = tmp_path / "synthetic"
    code, stdout, _ = _main(capsys, "--workdir", digits_run.workdir, "--out", out, "--per-class", 3,
                            "--truncation", 0.7, "--seed", 4)
    assert code == 0
    per_class = ", ".join(f"{c}: 3" for c in range(10))
    assert stdout == (f"wrote 30 samples (per class: {per_class}) as folder to {out} "
                      "(checkpoint step 2, ema generator)\n")
    samples, manifest = exports.read_export(out)
    expected = generate(digits_run.run, digits_run.state, labels=labels_for(3, 10), seed=4,
                        truncation=0.7)
    assert_uint8_of(samples["x"], expected["x"])
    np.testing.assert_array_equal(samples["y"], np.repeat(np.arange(10), 3))
    assert (manifest["truncation"], manifest["seed"], manifest["generator"]) == (0.7, 4, "ema")
    assert manifest["workdir"] == str(digits_run.workdir)


def test_cli_balance_to_raw_as_tfds(digits_run, tmp_path, capsys):
    real = np.bincount(digits_run.run.source.arrays["y"], minlength=10)  # the run's training set
    target = int(np.median(real))  # some classes need samples, others none
    out = tmp_path / "balanced"
    code, stdout, _ = _main(capsys, "--workdir", digits_run.workdir, "--out", out, "--format", "tfds",
                            "--balance-to", target, "--raw")
    assert code == 0 and f"as tfds to {out}" in stdout and "raw generator" in stdout
    samples, manifest = exports.read_export(out)
    needed = np.maximum(target - real, 0)
    assert needed.sum() > 0 and (needed == 0).any()
    assert manifest["counts"] == {str(c): int(n) for c, n in enumerate(needed)}
    np.testing.assert_array_equal(samples["y"], np.repeat(np.arange(10), needed))
    assert manifest["generator"] == "raw" and manifest["format"] == "tfds"


def test_cli_num_with_label_to_npz(digits_run, tmp_path, capsys):
    out = tmp_path / "sevens.npz"
    code, stdout, _ = _main(capsys, "--workdir", digits_run.workdir, "--out", out, "--num", 5,
                            "--label", 7)
    assert code == 0 and stdout.startswith("wrote 5 samples (per class: 0: 0,")
    samples, manifest = exports.read_export(out)
    np.testing.assert_array_equal(samples["y"], [7] * 5)
    assert manifest["counts"]["7"] == 5 and manifest["format"] == "npz"


def test_cli_step_picks_an_earlier_checkpoint(digits_run, tmp_path, capsys):
    """--step 1 of the 2-step run gives the samples of a run that stopped after step 1."""
    short = tmp_path / "short"
    train_and_evaluate(_config("digits", num_steps=1, checkpoint_every=1), str(short),
                       progress=False)
    _, run, state = load_run_state(str(short))
    out = tmp_path / "step1.npz"
    code, stdout, _ = _main(capsys, "--workdir", digits_run.workdir, "--out", out, "--num", 6,
                            "--step", 1)
    assert code == 0 and "(checkpoint step 1, ema generator)" in stdout
    samples, manifest = exports.read_export(out)
    assert manifest["checkpoint_step"] == 1
    assert_uint8_of(samples["x"], generate(run, state, num=6, seed=0)["x"])
    latest = generate(digits_run.run, digits_run.state, num=6, seed=0)["x"]
    assert not np.array_equal(exports.to_export_arrays({"x": latest}, is_image=True)["x"],
                              samples["x"])
    for step, message in ((3, "--step 3: --workdir .* has checkpoints at steps [1, 2]"),
                          (-1, "--step must be an int >= 0")):
        code, stdout, stderr = _main(capsys, "--workdir", digits_run.workdir, "--out",
                                     tmp_path / "never.npz", "--num", 6, "--step", step)
        assert code == 2 and re.search(message.replace("[", r"\[").replace("]", r"\]"), stderr)
    assert not (tmp_path / "never.npz").exists()


def test_non_finite_samples_are_refused_before_anything_is_written(tmp_path):
    images = np.zeros((4, 8, 8, 1), np.float32)
    images[2, 3, 3, 0] = np.nan
    images[3, 0, 0, 0] = -np.inf
    with pytest.raises(ValueError, match=r"2 of 4 samples hold NaN or inf values \(first: "
                                         r"\[2, 3\]\); the generator has diverged"):
        exports.to_export_arrays({"x": images}, is_image=True)
    vectors = np.array([[0.5, 1.0], [np.nan, 0.0]], np.float32)
    with pytest.raises(ValueError, match=r"1 of 2 samples hold NaN or inf values \(first: \[1\]"):
        exports.to_export_arrays({"x": vectors}, is_image=False)
    manifest = {"checkpoint_step": 0, "seed": 0, "config_json": "{}", "generator": "ema",
                "truncation": None, "num_classes": 0, "workdir": "w"}
    with pytest.raises(ValueError, match="1 of 2 samples hold NaN or inf"):
        exports.export_npz(tmp_path / "v.npz", {"x": vectors}, manifest)
    assert list(tmp_path.iterdir()) == []


def test_labels_outside_the_manifest_classes_and_float_labels_are_refused(tmp_path):
    manifest = {"checkpoint_step": 0, "seed": 0, "config_json": "{}", "generator": "ema",
                "truncation": None, "num_classes": 3, "workdir": "w"}
    x = np.zeros((2, 4, 4, 1), np.uint8)
    with pytest.raises(ValueError, match=r"label 7, outside the manifest's num_classes = 3"):
        exports.export_npz(tmp_path / "a.npz", {"x": x, "y": np.array([1, 7], np.int32)},
                           exports.make_manifest(**manifest))
    assert list(tmp_path.iterdir()) == []
    written = exports.export_npz(tmp_path / "b.npz", {"x": x, "y": np.array([1, 2], np.int32)},
                                 exports.make_manifest(**manifest))
    assert written["num_classes"] == 3 and written["counts"] == {"0": 0, "1": 1, "2": 1}
    with pytest.raises(ValueError, match="samples\\['y'\\] must hold integer class labels"):
        exports.to_export_arrays({"x": np.zeros((2, 4, 4, 1), np.float32),
                                  "y": np.array([1.7, -0.5])}, is_image=True)


@pytest.mark.parametrize("truncation", [float("nan"), float("inf"), 0.0, -1.0, "2"])
def test_make_manifest_refuses_a_truncation_json_cannot_hold(truncation):
    with pytest.raises(ValueError, match="truncation must be None or a finite number > 0"):
        exports.make_manifest(checkpoint_step=0, seed=0, config_json="{}", generator="ema",
                              truncation=truncation, num_classes=0)


@pytest.mark.parametrize("args, message", [
    ([], "give exactly one of --num N, --per-class N, --balance-to N, got none"),
    (["--num", "4", "--per-class", "2"], "got --num 4 and --per-class 2"),
    (["--per-class", "2", "--label", "3"], "--label goes with --num"),
    (["--num", "0"], "--num must be >= 1, got 0"),
    (["--balance-to", "-3"], "--balance-to must be >= 0, got -3"),
    (["--num", "4", "--truncation", "0"], "--truncation must be a finite number > 0"),
    (["--num", "4", "--truncation", "-1"], "--truncation must be a finite number > 0"),
    (["--num", "4", "--format", "npz"], "--out must be a .npz file name for --format npz"),
    (["--num", "4", "--label", "12"], r"--label must be in [0, 10), got 12"),
    (["--balance-to", "1"], "--balance-to 1: every class already has that many real samples"),
    (["--num", "3000000000"], "--num must be <= 2,146,435,071 (sample indices are int32)"),
    (["--per-class", "300000000"], "--per-class asks for 3,000,000,000 samples; at most"),
])
def test_cli_rejects_bad_options(args, message, digits_run, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, stderr = _main(capsys, "--workdir", digits_run.workdir, "--out", out, *args)
    assert code == 2 and stdout == ""
    assert stderr.startswith("ganaug generate: error: ") and message in stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", ["npz", "folder"])
def test_cli_refuses_an_out_it_cannot_create_before_loading_the_run(fmt, tmp_path, capsys):
    """--out below a regular file: one error naming --out, before the run is even read (the
    workdir here holds none), and nothing created."""
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    out = blocker / "sub" / ("x.npz" if fmt == "npz" else "x")
    code, stdout, stderr = _main(capsys, "--workdir", tmp_path / "no_run", "--out", out, "--num", 3)
    assert code == 2 and stdout == ""
    assert stderr == (f"ganaug generate: error: --out {str(out)!r} cannot be written: "
                      f"{str(blocker)!r} is not a directory\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"] and blocker.read_text() == "x"


def test_cli_refuses_existing_out_and_unconditional_options(digits_run, ring_run, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "data.bin").write_bytes(b"x")
    code, _, stderr = _main(capsys, "--workdir", digits_run.workdir, "--out", out, "--num", 3)
    assert code == 2 and "already exists and is not empty; pass --overwrite" in stderr
    assert [p.name for p in out.iterdir()] == ["data.bin"]
    code, _, stderr = _main(capsys, "--workdir", ring_run, "--out", tmp_path / "r", "--per-class", 3)
    assert code == 2 and "--per-class needs a class-conditional model" in stderr
    code, _, stderr = _main(capsys, "--workdir", ring_run, "--out", tmp_path / "r", "--num", 3)
    assert code == 2 and "--format folder holds images" in stderr
    code, stdout, _ = _main(capsys, "--workdir", ring_run, "--out", tmp_path / "r.npz", "--num", 3)
    assert code == 0 and stdout.startswith("wrote 3 samples as npz")
    samples, manifest = exports.read_export(tmp_path / "r.npz")
    assert samples["x"].shape == (3, 2) and "y" not in samples and manifest["counts"] is None
    with pytest.raises(SystemExit) as exit_info:  # argparse's own error path
        cli.main(["generate", "--workdir", str(ring_run), "--out", "x", "--format", "csv"])
    assert exit_info.value.code == 2
