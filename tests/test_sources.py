"""Real data through a config's `data` section (`ganaug_jax.data.sources.load_real`,
`load_source`), the new config keys, and npz / image-folder data sets driven end to end through
the real CLI (`ganaug_jax.cli.main`).

References: scikit-learn's digits rows and class counts, split sizes computed by hand, TFDS
records read back with `tfds.data_source` and resized with PIL, pixels written with numpy / PIL.
"""

import json
import pathlib
import re

import jax
import numpy as np
import pytest
from PIL import Image

from ganaug_jax import cli
from ganaug_jax import config as config_lib
from ganaug_jax.data.sources import load_real, load_source

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT = str(ROOT / "configs" / "default.py")


def _config(**overrides):
    return config_lib.apply_overrides(config_lib.load_config(DEFAULT),
                                      [f"{k}={v}" for k, v in overrides.items()])


def _data(**overrides):
    return _config(**{f"data.{k}": v for k, v in overrides.items()}).data


@pytest.fixture(scope="module")
def sk_digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    return d.images.reshape(len(d.images), -1).astype(np.int64), d.target.astype(np.int64)


def _rows(part):
    """Model-range digits back to sklearn's 0..16 pixel rows (x = v / 8 - 1, exact)."""
    return np.rint((part["x"].reshape(len(part["x"]), -1).astype(np.float64) + 1) * 8).astype(np.int64)


def _row_set(part):
    return {r.tobytes() for r in _rows(part)}


@pytest.fixture(scope="module")
def digits_full():
    return load_real(_data(source="digits"))


# ---- load_real on digits ----

def test_digits_split_is_stratified_disjoint_and_covers_the_data(digits_full, sk_digits):
    rows, target = sk_digits
    real = digits_full
    counts = np.bincount(target, minlength=10)
    expected_test = np.floor(0.25 * counts + 0.5).astype(int)  # round half up, per class
    np.testing.assert_array_equal(np.bincount(real.test["y"], minlength=10), expected_test)
    np.testing.assert_array_equal(np.bincount(real.train["y"], minlength=10),
                                  counts - expected_test)
    train, test = _row_set(real.train), _row_set(real.test)
    assert not train & test                       # no image in both (digits rows are unique)
    assert train | test == {r.tobytes() for r in rows}
    label_of = {r.tobytes(): t for r, t in zip(rows, target)}
    for part in (real.train, real.test):
        assert [label_of[r.tobytes()] for r in _rows(part)] == part["y"].tolist()
        assert part["x"].dtype == np.float32 and part["y"].dtype == np.int32
        assert part["x"].shape[1:] == (8, 8, 1)
        assert part["x"].min() >= -1.0 and part["x"].max() <= 1.0
    assert real.num_classes == 10 and real.class_names == tuple("0123456789")


def test_per_class_takes_exactly_k_from_train_and_keeps_the_test_split(digits_full):
    low = load_real(_data(source="digits", per_class=5))
    np.testing.assert_array_equal(np.bincount(low.train["y"], minlength=10), [5] * 10)
    assert _row_set(low.train) <= _row_set(digits_full.train)
    np.testing.assert_array_equal(low.test["x"], digits_full.test["x"])  # never subsampled
    np.testing.assert_array_equal(low.test["y"], digits_full.test["y"])
    other = load_real(_data(source="digits", per_class=5, subset_seed=1))
    np.testing.assert_array_equal(other.test["x"], low.test["x"])
    assert _row_set(other.train) != _row_set(low.train)
    np.testing.assert_array_equal(np.bincount(other.train["y"], minlength=10), [5] * 10)
    moved = load_real(_data(source="digits", per_class=5, split_seed=1))
    assert _row_set(moved.test) != _row_set(low.test)  # split_seed moves the test split


def test_class_counts_regime_is_exact(digits_full):
    imbalanced = load_real(_data(source="digits", class_counts="3:4,7:2"))
    full = np.bincount(digits_full.train["y"], minlength=10)
    expected = full.copy()
    expected[3], expected[7] = 4, 2
    np.testing.assert_array_equal(np.bincount(imbalanced.train["y"], minlength=10), expected)
    assert _row_set(imbalanced.train) <= _row_set(digits_full.train)
    np.testing.assert_array_equal(imbalanced.test["x"], digits_full.test["x"])


@pytest.mark.parametrize("overrides, message", [
    ({"per_class": 5, "class_counts": "3:4"},
     r"set only one of config keys 'data.per_class' and 'data.class_counts'"),
    ({"per_class": 1000}, r"data.per_class=1000 but some classes have fewer images"),
    ({"class_counts": "3:4,x"}, r"data.class_counts must be comma-separated"),
    ({"class_counts": "12:4"}, r"data.class_counts names class 12"),
    ({"class_counts": "3:0"}, r"classes \[3\] of 'digits' have no training images after data.per_class"),
    ({"resolution": 12}, r"data.resolution must be one of \(8, 16, 32, 64, 128\)"),
    ({"channels": 2}, r"data.channels must be 1 or 3"),
    ({"source": "no/such/place"}, r"data.source must be one of"),
])
def test_load_real_errors_name_the_key(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_real(_data(**{"source": "digits", **overrides}))


def test_resolution_and_channels_convert(digits_full):
    big = load_real(_data(source="digits", resolution=16, channels=3))
    assert big.train["x"].shape == (len(digits_full.train["x"]), 16, 16, 3)
    assert big.train["x"].dtype == np.float32
    assert big.train["x"].min() >= -1.0 and big.train["x"].max() <= 1.0
    np.testing.assert_array_equal(big.train["x"][..., 0], big.train["x"][..., 2])
    np.testing.assert_array_equal(big.train["y"], digits_full.train["y"])
    # area preserved (up to the borders): the mean of each image barely moves
    np.testing.assert_allclose(big.train["x"][..., 0].mean(axis=(1, 2)),
                               digits_full.train["x"].mean(axis=(1, 2, 3)), atol=0.05)


def test_load_source(digits_full):
    source = load_source(_data(source="digits"))
    assert source.shape == (8, 8, 1) and source.num_classes == 10 and source.is_image
    np.testing.assert_array_equal(source.arrays["x"], digits_full.train["x"])
    np.testing.assert_array_equal(source.arrays["y"], digits_full.train["y"])
    drawn = source.draw(jax.random.key(0), source.arrays, 5)
    assert drawn["x"].shape == (5, 8, 8, 1)
    ring = load_source(_data(source="ring8"))
    assert ring.shape == (2,) and ring.num_classes == 0 and ring.arrays == {}
    assert not ring.is_image


# ---- TFDS (mocked, no network, no TensorFlow) ----

@pytest.fixture(scope="module")
def mnist_metadata_dir(tmp_path_factory):
    """dataset_info.json / features.json for mnist (splits train, test), as
    `tfds.testing.mock_data(policy=USE_FILES)` expects (the setup of tests/test_data.py)."""
    import tensorflow_datasets as tfds
    root = tmp_path_factory.mktemp("tfds_metadata")
    builder = tfds.builder("mnist", data_dir=str(root), file_format="array_record")
    infos = [tfds.core.SplitInfo(name=split, shard_lengths=[n], num_bytes=0,
                                 filename_template=tfds.core.ShardedFileTemplate(
                                     data_dir=builder.data_path, dataset_name="mnist",
                                     split=split, filetype_suffix="array_record"))
             for split, n in (("train", 60000), ("test", 10000))]
    builder.info.set_splits(tfds.core.SplitDict(infos))
    builder.data_path.mkdir(parents=True, exist_ok=True)
    builder.info.write_to_directory(builder.data_path)
    return str(root)


def _pil_resize(image_uint8, r):
    """PIL bilinear (antialiased when shrinking) of the image in [-1, 1], float64 (H, W, C)."""
    x = image_uint8.astype(np.float32) / 127.5 - 1.0
    return np.stack([np.asarray(Image.fromarray(x[..., c], "F").resize((r, r), Image.BILINEAR))
                     for c in range(x.shape[-1])], axis=-1)


def test_tfds_mnist_uses_its_own_test_split(mnist_metadata_dir, tmp_path):
    import tensorflow_datasets as tfds
    n = 60  # enough random labels for every class to appear in train
    with tfds.testing.mock_data(num_examples=n, policy=tfds.testing.MockPolicy.USE_FILES,
                                data_dir=mnist_metadata_dir):
        real = load_real(_data(source="tfds:mnist", data_dir=str(tmp_path), resolution=16,
                               test_fraction=0.0))
        assert real.num_classes == 10
        for split, part in (("train", real.train), ("test", real.test)):
            records = tfds.data_source("mnist", split=split, download=False)
            assert part["x"].shape == (n, 16, 16, 1) and part["x"].dtype == np.float32
            assert part["x"].min() >= -1.0 and part["x"].max() <= 1.0
            np.testing.assert_array_equal(part["y"], [records[i]["label"] for i in range(n)])
            expected = np.stack([_pil_resize(records[i]["image"], 16) for i in range(n)])
            np.testing.assert_allclose(part["x"], expected, atol=1e-5)


# ---- config keys ----

@pytest.mark.parametrize("overrides, message", [
    ({"model.minibatch_std": 3, "batch_size": 16},
     r"'batch_size' \(16\) must be divisible by 'model.minibatch_std' \(3\)"),
    ({"data.test_fraction": 1.0}, r"'data.test_fraction' must be in \[0, 1\)"),
    ({"data.test_fraction": -0.1}, r"'data.test_fraction' must be in \[0, 1\)"),
    ({"data.per_class": -1}, r"'data.per_class' must be >= 0"),
    ({"data.resolution": -8}, r"'data.resolution' must be >= 0"),
    ({"loss.mode_seeking": -1.0}, r"'loss.mode_seeking' must be >= 0"),
    ({"model.minibatch_std": -2}, r"'model.minibatch_std' must be >= 0"),
    ({"seed": 2 ** 63}, r"'seed' must be <= 2\*\*63 - 1"),
    ({"data.split_seed": 2 ** 64}, r"'data.split_seed' must be <= 2\*\*63 - 1"),
    ({"optim.b1": 1.0}, r"'optim.b1' must be in \[0, 1\), got 1.0"),
    ({"optim.b2": 1.0}, r"'optim.b2' must be in \[0, 1\), got 1.0"),
    ({"optim.b2": -0.1}, r"'optim.b2' must be in \[0, 1\)"),
    ({"loss.real_label": 0.0}, r"'loss.real_label' must be in \(0, 1\]"),
    ({"loss.real_label": 1.1}, r"'loss.real_label' must be in \(0, 1\]"),
    ({"loss.instance_noise_std": 0.1}, r"'loss.instance_noise_steps' must be >= 1 when"),
    ({"model.depth": 0}, r"'model.depth' must be >= 1 for model.architecture 'mlp'"),
])
def test_validate_rejects_bad_values_naming_the_key(overrides, message):
    config = _config(**overrides)
    with pytest.raises(ValueError, match=message):
        config_lib.validate(config)


@pytest.mark.parametrize("key, value, message", [
    ("num_steps", 6.0, r"'num_steps' must be an int, got 6.0"),
    ("log_every", 2.5, r"'log_every' must be an int, got 2.5"),
    ("optim.n_critic", True, r"'optim.n_critic' must be an int, got True"),
    ("optim.d_lr", "2e-4", r"'optim.d_lr' must be a finite number, got '2e-4'"),
    ("augment.ada_fixed_p", float("nan"), r"'augment.ada_fixed_p' must be a finite number"),
    ("optim.g_lr", float("inf"), r"'optim.g_lr' must be a finite number, got inf"),
    ("loss.gp_weight", float("inf"), r"'loss.gp_weight' must be a finite number"),
    ("optim.b1", float("nan"), r"'optim.b1' must be a finite number, got nan"),
    ("loss.real_label", True, r"'loss.real_label' must be a finite number, got True"),
    ("optim.warmup_steps", 1000, r"'optim.warmup_steps' must be < 'num_steps' under optim.schedule "
                                 r"'cosine' .* got 1000 >= 1000"),
])
def test_validate_checks_types_a_config_file_could_get_wrong(key, value, message):
    """A config file may build its own ConfigDict (no types from configs/default.py), and
    set NaN or inf (command-line overrides cannot)."""
    import ml_collections
    raw = _config(**{"optim.schedule": "cosine", "num_steps": 1000}).to_dict()
    section, _, leaf = key.rpartition(".")
    (raw[section] if section else raw)[leaf] = value
    with pytest.raises(ValueError, match=message):
        config_lib.validate(ml_collections.ConfigDict(raw))


def test_new_keys_have_defaults_and_valid_values_pass():
    config = _config(**{"model.minibatch_std": 4, "batch_size": 16, "data.test_fraction": 0.0,
                        "data.per_class": 5, "loss.mode_seeking": 1.0})
    config_lib.validate(config)
    flat = config_lib.flatten(config_lib.load_config(DEFAULT))
    assert {"data.data_dir", "data.resolution", "data.channels", "data.test_fraction",
            "data.split_seed", "data.per_class", "data.class_counts", "data.subset_seed",
            "model.minibatch_std", "loss.mode_seeking"} <= set(flat)


def test_unknown_keys_rejected():
    with pytest.raises(ValueError, match=r"unknown config key 'data.resolutoin'"):
        _config(**{"data.resolutoin": 8})
    with pytest.raises(ValueError, match=r"config key 'data.per_class': expected a int"):
        _config(**{"data.per_class": "five"})
    with pytest.raises(ValueError, match=r"config key 'optim.g_lr': expected a float, got 'True'"):
        _config(**{"optim.g_lr": True})  # a bool is an int, but not a learning rate
    assert _config(**{"optim.g_lr": 1}).optim.g_lr == 1.0
    config = config_lib.load_config(DEFAULT)
    config.data.extra = 1
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['data.extra'\]"):
        config_lib.validate(config)


def test_cli_rejects_test_fraction_one(tmp_path, capsys):
    workdir = tmp_path / "run"
    code = cli.main(["train", "--config", DEFAULT, "--workdir", str(workdir),
                     "--config.data.test_fraction=1.0", "--no-progress"])
    assert code == 2
    assert "'data.test_fraction' must be in [0, 1)" in capsys.readouterr().err
    assert not workdir.exists()


# ---- npz and image folders through the real CLI ----

def _images(n_per_class, size, seed):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), n_per_class)
    base = np.array([[220, 40, 40], [40, 220, 40], [40, 40, 220]])[y]  # a colour per class
    x = np.clip(base[:, None, None, :] + rng.integers(-30, 30, (y.size, size, size, 3)), 0, 255)
    return x.astype(np.uint8), y


def _write_npz(path, size, seed=0):
    x, y = _images(4, size, seed)
    np.savez(path, x=x, y=y, class_names=np.array(["red", "green", "blue"]))
    return x, y


def _write_folder(root, size, seed=1):
    x, y = _images(4, size, seed)
    for i, (image, label) in enumerate(zip(x, y)):
        folder = root / ["red", "green", "blue"][label]  # the colour of class `label`
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    return x, y


def _train_args(workdir, source, *extra):
    return ["train", "--config", DEFAULT, "--workdir", str(workdir), "--no-progress",
            f"--config.data.source={source}", "--config.model.architecture=dcgan",
            "--config.model.conditional=true", "--config.model.depth=0",
            "--config.model.width=8", "--config.model.latent_dim=8", "--config.num_steps=2",
            "--config.batch_size=8", "--config.checkpoint_every=2", "--config.log_every=1",
            "--config.sample_every=0", "--config.data.test_fraction=0.25", *extra]


@pytest.mark.parametrize("kind", ["npz", "folder"])
def test_cli_trains_on_npz_and_image_folder(kind, tmp_path, capsys, monkeypatch):
    extra = []
    if kind == "npz":  # given relative to the working directory, saved absolute in config.json
        source = tmp_path / "data.npz"
        _write_npz(source, 8)
        monkeypatch.chdir(tmp_path)
    else:  # this run also turns on the new model / loss keys, on the 8 fake devices
        source = tmp_path / "images"
        _write_folder(source, 8)
        extra = ["--config.model.minibatch_std=4", "--config.loss.mode_seeking=1.0"]
    # As in tests/test_downstream.py: non-partitionable threefry compiles the rank-4 kernel
    # initialisers ~10x faster on XLA:CPU; what is tested here is the data path.
    with jax.threefry_partitionable(False):
        code = cli.main(_train_args(tmp_path / "run", source.name if kind == "npz" else source,
                                    *extra))
    assert code == 0, capsys.readouterr().err
    run = tmp_path / "run"
    assert (run / "checkpoints" / "2").is_dir()
    saved = json.loads((run / "config.json").read_text())
    assert saved["data"]["source"] == str(source)
    assert saved["model"]["minibatch_std"] == (4 if extra else 0)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(("mode_seeking" in r) == bool(extra) for r in rows)
    if extra:
        assert all(np.isfinite(r["mode_seeking"]) and r["mode_seeking"] > 0 for r in rows)
    assert all(np.isfinite(r["d_loss"]) and np.isfinite(r["g_loss"]) for r in rows)
    # the final sample grid: one row per class, 34 samples each (102, not 100: no row ends
    # with another class's samples or a blank cell), 8x8 cells with a 1-pixel gap
    grid = np.asarray(Image.open(run / "samples_0000002.png"))
    assert grid.shape[:2] == (3 * 9 + 1, 34 * 9 + 1)
    assert all((grid[1 + 9 * r:9 + 9 * r, 1 + 9 * c:9 + 9 * c] != 255).any()
               for r in range(3) for c in range(34))
    # 3 classes x 4 images, a quarter held out per class: 9 training images reached the run
    real = load_real(_data(source=str(source)))
    assert real.num_classes == 3 and len(real.train["y"]) == 9 and len(real.test["y"]) == 3
    assert real.train["x"].shape[1:] == (8, 8, 3)


def _as_uint8(part_x):
    """Model range back to the written 0..255 pixels (x = v / 127.5 - 1, within float32
    rounding); the check that it is within rounding is the assert on the residual."""
    v = (part_x.astype(np.float64) + 1.0) * 127.5
    assert np.abs(v - np.rint(v)).max() < 1e-3
    return np.rint(v).astype(np.uint8)


def _pixels_to_labels(parts):
    x = np.concatenate([_as_uint8(p["x"]) for p in parts])
    y = np.concatenate([p["y"] for p in parts])
    return {im.tobytes(): int(lab) for im, lab in zip(x, y)}


def test_npz_and_folder_read_the_pixels_written(tmp_path):
    x, y = _write_npz(tmp_path / "d.npz", 16)
    real = load_real(_data(source=str(tmp_path / "d.npz"), test_fraction=0.5))
    assert _pixels_to_labels([real.train, real.test]) == \
        {im.tobytes(): int(lab) for im, lab in zip(x, y)}
    assert real.class_names == ("red", "green", "blue")
    fx, fy = _write_folder(tmp_path / "f", 16)
    folder = load_real(_data(source=str(tmp_path / "f"), test_fraction=0.5))
    assert folder.class_names == ("blue", "green", "red")  # sorted folder names
    # class c (red, green, blue) was written to the folder of its colour, whose
    # label is its index in the sorted names: 2 - c
    assert _pixels_to_labels([folder.train, folder.test]) == \
        {im.tobytes(): 2 - int(c) for im, c in zip(fx, fy)}


@pytest.mark.parametrize("per_class", [0, 2])
def test_float_npz_range_is_decided_once_for_every_split(tmp_path, per_class):
    """Floats stored in [-1, 1] keep their values in every split, even a split (or a subset)
    that happens to hold no negative value; floats in [0, 1] map by 2x - 1 everywhere."""
    rng = np.random.default_rng(3)
    y = np.arange(8) % 2
    signed = rng.uniform(-1, 1, (8, 8, 8, 1)).astype(np.float32)
    bright = rng.uniform(0.2, 1, (4, 8, 8, 1)).astype(np.float32)  # no negative value
    unit = rng.uniform(0, 1, (8, 8, 8, 1)).astype(np.float32)
    for name, x, x_test, want in (("signed", signed, bright, lambda v: v),
                                  ("unit", unit, bright, lambda v: 2 * v - 1)):
        path = tmp_path / f"{name}.npz"
        np.savez(path, x=x, y=y, x_test=x_test, y_test=y[:4])
        real = load_real(_data(source=str(path), test_fraction=0, per_class=per_class))
        np.testing.assert_array_equal(real.test["x"], want(x_test))
        train = {im.tobytes() for im in real.train["x"]}
        assert train <= {im.tobytes() for im in want(x)} and len(train) == (per_class * 2 or 8)
    path = tmp_path / "mixed.npz"  # [0, 1] declared by the train split, negatives in test
    np.savez(path, x=bright[:2].repeat(4, 0), y=y, x_test=signed[:4], y_test=y[:4])
    real = load_real(_data(source=str(path), test_fraction=0))
    np.testing.assert_array_equal(real.test["x"], signed[:4])  # the whole set is [-1, 1]
    np.testing.assert_array_equal(real.train["x"], bright[:2].repeat(4, 0))


def test_cli_rejects_data_that_does_not_fit_the_model(tmp_path, capsys):
    source = tmp_path / "odd.npz"
    _write_npz(source, 20)
    workdir = tmp_path / "run"
    code = cli.main(_train_args(workdir, source))
    err = capsys.readouterr().err
    assert code == 2
    assert f"data.source {str(source)!r} are 20x20 (H x W); set config key 'data.resolution'" in err
    assert not workdir.exists()
    wide = tmp_path / "wide.npz"  # 16 high, a DCGAN size, but 24 wide: not stretched unasked
    np.savez(wide, x=np.zeros((6, 16, 24, 3), np.uint8) + np.arange(6, dtype=np.uint8)[:, None, None, None],
             y=np.arange(6) % 3)
    assert cli.main(_train_args(workdir, wide)) == 2
    assert ("are 16x24 (H x W); set config key 'data.resolution' to one of (8, 16, 32, 64, 128) "
            "to resize them (non-square images are stretched to R x R)") in capsys.readouterr().err
    assert not workdir.exists()
    x = np.random.default_rng(0).uniform(0, 255, (12, 16, 16, 3)).astype(np.float32)
    np.savez(tmp_path / "floats.npz", x=x, y=np.arange(12) % 3)
    assert cli.main(_train_args(workdir, tmp_path / "floats.npz")) == 2
    err = capsys.readouterr().err
    assert f"data.source {str(tmp_path / 'floats.npz')!r}: float images must lie in" in err
    _write_npz(source, 16)
    assert cli.main(_train_args(workdir, source, "--config.model.depth=3")) == 2
    err = capsys.readouterr().err
    assert "config key 'model.depth' must be 0 (derived from the resolution) or in [1, 2]" in err
    assert not workdir.exists()
    # the same data with data.resolution set fits (checked without training)
    fitted = load_real(_data(source=str(source), resolution=16))
    assert fitted.train["x"].shape[1:] == (16, 16, 3)


def test_a_missing_config_file_names_the_copy_installed_with_the_package(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside a checkout: configs/digits.py is not here
    bundled = config_lib.bundled_configs() / "digits.py"
    with pytest.raises(ValueError, match=r"no such config file 'configs/digits.py'; the copy "
                                         r"installed with ganaug_jax is " + re.escape(repr(str(bundled)))):
        config_lib.load_config("configs/digits.py")
    with pytest.raises(ValueError, match=r"no such config file 'configs/nonesuch.py'$"):
        config_lib.load_config("configs/nonesuch.py")
