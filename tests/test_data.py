"""Real-data loaders (digits, TFDS, npz, image folders), conversion to [-1, 1], data regimes.

References are independent: scikit-learn's arrays, records read back through `tfds.data_source`
directly, pixels written with numpy / PIL, PIL's bilinear resize, hand-computed split counts.
No network: TFDS is exercised with `tfds.testing.mock_data` and with a tiny array_record data
set written here without TensorFlow.
"""

import importlib.util
import io
import os

import numpy as np
import pytest
from PIL import Image

from ganaug_jax.data import loaders, regimes
from ganaug_jax.data.loaders import Labelled, check_fits, load_splits, to_model_range

TFDS_NAMES = {"mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1), "cifar10": (32, 32, 3)}


def labelled(counts, *, shape=(2, 2, 1)) -> Labelled:
    """Class c has counts[c] images; image i is filled with the value i / 1000 (identifies it)."""
    y = np.repeat(np.arange(len(counts)), counts).astype(np.int32)
    x = (np.arange(y.size, dtype=np.float32) / 1000.0)[:, None, None, None] * np.ones(shape,
                                                                                     np.float32)
    return Labelled(x, y, len(counts), tuple(f"c{k}" for k in range(len(counts))))


def ids(data: Labelled) -> np.ndarray:
    return np.rint(data.x[:, 0, 0, 0] * 1000).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# digits


def test_digits_match_sklearn():
    from sklearn.datasets import load_digits
    ref = load_digits()
    splits = load_splits("digits")
    assert list(splits) == ["train"]
    d = splits["train"]
    assert d.x.shape == (1797, 8, 8, 1) and d.x.dtype == np.float32
    assert d.y.dtype == np.int32 and d.num_classes == 10
    assert d.class_names == tuple("0123456789")
    assert d.x.min() == 0.0 and d.x.max() == 1.0
    np.testing.assert_array_equal(d.x[..., 0] * 16, ref.images)
    np.testing.assert_array_equal(d.y, ref.target)
    np.testing.assert_array_equal(np.bincount(d.y), [np.sum(ref.target == k) for k in range(10)])
    # in the model's range it is exactly the lead's embedded digits (pixel / 8 - 1)
    np.testing.assert_array_equal(to_model_range(d.x)[..., 0], ref.images / 8.0 - 1.0)


# ---------------------------------------------------------------------------------------------
# TFDS


def _builder(tfds, name, data_dir):
    return tfds.builder(name, data_dir=str(data_dir), file_format="array_record")


def _write_split_infos(tfds, builder, name, lengths):
    infos = [tfds.core.SplitInfo(name=split, shard_lengths=[n], num_bytes=0,
                                 filename_template=tfds.core.ShardedFileTemplate(
                                     data_dir=builder.data_path, dataset_name=name, split=split,
                                     filetype_suffix="array_record"))
             for split, n in lengths.items()]
    builder.info.set_splits(tfds.core.SplitDict(infos))
    builder.data_path.mkdir(parents=True, exist_ok=True)
    builder.info.write_to_directory(builder.data_path)


@pytest.fixture(scope="module")
def tfds_metadata_dir(tmp_path_factory):
    """A data_dir with only the metadata (dataset_info.json, features.json) of the three data
    sets, splits train (60000) and test (10000), as `mock_data(policy=USE_FILES)` expects."""
    import tensorflow_datasets as tfds
    root = tmp_path_factory.mktemp("tfds_metadata")
    for name in TFDS_NAMES:
        _write_split_infos(tfds, _builder(tfds, name, root), name, {"train": 60000, "test": 10000})
    return str(root)


@pytest.mark.parametrize("name", sorted(TFDS_NAMES))
def test_tfds_mock_data(name, tfds_metadata_dir, tmp_path):
    import tensorflow_datasets as tfds
    n = 7
    with tfds.testing.mock_data(num_examples=n, policy=tfds.testing.MockPolicy.USE_FILES,
                                data_dir=tfds_metadata_dir):
        splits = load_splits(f"tfds:{name}", data_dir=str(tmp_path))
        expected_names = tuple(tfds.builder(name).info.features["label"].names)
        assert set(splits) == {"train", "test"}
        for split, d in splits.items():
            assert d.x.shape == (n, *TFDS_NAMES[name]) and d.x.dtype == np.uint8
            assert d.y.shape == (n,) and d.y.dtype == np.int32
            assert d.num_classes == 10 and d.class_names == expected_names
            assert 0 <= d.y.min() and d.y.max() < 10
            assert not np.array_equal(d.x[0], d.x[1])  # random records, not one repeated
            source = tfds.data_source(name, split=split, download=False)  # read independently
            assert len(source) == n
            for i in range(n):
                np.testing.assert_array_equal(d.x[i], source[i]["image"])
                assert d.y[i] == source[i]["label"]


def _write_prepared(tfds, data_dir, name, split_images, split_labels):
    """A real prepared TFDS data set (array_record shards of tf.train.Example protos with PNG
    images, plus metadata) written without TensorFlow, as `tfds build --file_format=array_record`
    would leave it."""
    from array_record.python import array_record_module
    from tensorflow_datasets.proto import tf_example_pb2
    builder = _builder(tfds, name, data_dir)
    _write_split_infos(tfds, builder, name, {s: len(v) for s, v in split_images.items()})
    for split, images in split_images.items():
        template = builder.info.splits[split].filename_template
        writer = array_record_module.ArrayRecordWriter(
            os.fspath(template.sharded_filepaths(1)[0]), "group_size:1")
        for i, (image, label) in enumerate(zip(images, split_labels[split])):
            png = io.BytesIO()
            Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(png, "PNG")
            example = tf_example_pb2.Example()
            features = example.features.feature
            features["image"].bytes_list.value.append(png.getvalue())
            features["label"].int64_list.value.append(int(label))
            if "id" in builder.info.features:
                features["id"].bytes_list.value.append(f"{split}_{i}".encode())
            writer.write(example.SerializeToString())
        writer.close()


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_tfds_prepared_array_record_without_mocks(name, tmp_path):
    import tensorflow_datasets as tfds
    rng = np.random.default_rng(1)
    sizes = {"train": 6, "test": 4}
    images = {s: rng.integers(0, 256, (n, *TFDS_NAMES[name]), dtype=np.uint8)
              for s, n in sizes.items()}
    labels = {s: rng.integers(0, 10, n) for s, n in sizes.items()}
    _write_prepared(tfds, tmp_path, name, images, labels)
    splits = load_splits(f"tfds:{name}", data_dir=str(tmp_path))
    assert set(splits) == set(sizes)
    for split, d in splits.items():
        np.testing.assert_array_equal(d.x, images[split])
        np.testing.assert_array_equal(d.y, labels[split])
        assert d.x.dtype == np.uint8 and d.y.dtype == np.int32 and d.num_classes == 10


def test_tfds_prepared_as_tfrecord_is_refused(tmp_path):
    import tensorflow_datasets as tfds
    builder = tfds.builder("mnist", data_dir=str(tmp_path))  # default format: tfrecord
    _write_split_infos(tfds, builder, "mnist", {"train": 3})
    with pytest.raises(ValueError,
                       match=r"(?s)is prepared under data\.data_dir .*TFRECORD.*must be prepared"):
        load_splits("tfds:mnist", data_dir=str(tmp_path))


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is not None,
                    reason="with TensorFlow, TFDS would try to download")
def test_tfds_not_prepared_names_data_dir(tmp_path):
    with pytest.raises(ValueError, match=r"not prepared under data\.data_dir .*TensorFlow"):
        load_splits("tfds:mnist", data_dir=str(tmp_path))


def test_tfds_unknown_name(tmp_path):
    with pytest.raises(ValueError, match=r"data\.source 'tfds:no_such_set_zz'"):
        load_splits("tfds:no_such_set_zz", data_dir=str(tmp_path))


# ---------------------------------------------------------------------------------------------
# npz


@pytest.mark.parametrize("kind", ["uint8_hw", "float_hwc"])
@pytest.mark.parametrize("with_test", [False, True])
def test_npz_round_trip(kind, with_test, tmp_path):
    rng = np.random.default_rng(2)
    shape = (12, 5, 6) if kind == "uint8_hw" else (12, 5, 6, 3)
    x = (rng.integers(0, 256, shape, dtype=np.uint8) if kind == "uint8_hw"
         else rng.random(shape).astype(np.float64))
    y = np.tile(np.arange(3), 4).astype(np.int64)
    arrays = {"x": x, "y": y}
    if with_test:  # names as bytes (np.bytes_, e.g. written by h5py or Python 2) read as text
        arrays.update(x_test=x[:4], y_test=y[:4], class_names=np.array([b"a", b"b", b"c"]))
    path = str(tmp_path / "d.npz")
    np.savez(path, **arrays)
    splits = load_splits(path)
    assert set(splits) == ({"train", "test"} if with_test else {"train"})
    d = splits["train"]
    expected_x = x[..., None] if kind == "uint8_hw" else x.astype(np.float32)
    assert d.x.dtype == expected_x.dtype and d.x.shape == (12, 5, 6, expected_x.shape[-1])
    np.testing.assert_array_equal(d.x, expected_x)
    np.testing.assert_array_equal(d.y, y)
    assert d.y.dtype == np.int32 and d.num_classes == 3
    if with_test:
        assert d.class_names == ("a", "b", "c")
        np.testing.assert_array_equal(splits["test"].x, expected_x[:4])
        np.testing.assert_array_equal(splits["test"].y, y[:4])
    else:
        assert d.class_names == ("0", "1", "2")


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.zeros((4, 3, 3), np.uint8)}, r"missing array 'y'"),
    ({"x": np.zeros((4, 3, 3), np.uint8), "y": np.arange(3)}, r"3 labels for 4 images"),
    ({"x": np.zeros((3, 3, 3), np.uint8), "y": np.array([0.0, 1.0, 2.0])}, r"1-D integer"),
    ({"x": np.zeros((3, 3, 3), np.uint8), "y": np.array([0, -1, 1])}, r"labels must be >= 0"),
    ({"x": np.zeros((3, 3, 3), np.uint8), "y": np.array([0, 2, 2])}, r"classes \[1\]"),
    ({"x": np.zeros((3, 3), np.uint8), "y": np.arange(3)}, r"\(N, H, W\) or \(N, H, W, C\)"),
    ({"x": np.zeros((3, 2, 2, 2), np.uint8), "y": np.arange(3)}, r"C in \(1, 3\)"),
    ({"x": np.zeros((3, 2, 2), np.int64), "y": np.arange(3)}, r"dtype int64"),
    ({"x": np.zeros((3, 2, 2), np.uint8), "y": np.arange(3), "class_names": np.array(["a", "b"])},
     r"label 2 found but class_names has only 2"),
    ({"x": np.zeros((3, 2, 2), np.uint8), "y": np.arange(3), "x_test": np.zeros((1, 2, 2))},
     r"x_test and y_test must come together"),
    # not wrapped to int32 (2 ** 32 + 1 would read as class 1), nor counted into a 2 ** 31 array
    ({"x": np.zeros((3, 2, 2), np.uint8), "y": np.array([0, 1, 2 ** 32 + 1])},
     r"labels must be class indices 0..K-1, found 4294967297"),
    ({"x": np.zeros((3, 2, 2), np.uint8), "y": np.array([0, 1, 2 ** 31 - 1])},
     r"label 2147483647 found with only 3 images in y"),
])
def test_npz_errors(arrays, message, tmp_path):
    path = str(tmp_path / "bad.npz")
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=r"data\.source .*" + message):
        load_splits(path)


# ---------------------------------------------------------------------------------------------
# image folders


def _save(path, array, fmt="PNG", **kwargs):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path, fmt, **kwargs)


def test_image_folder_grayscale_integer_classes(tmp_path):
    rng = np.random.default_rng(3)
    written = {c: rng.integers(0, 256, (2, 5, 6), dtype=np.uint8) for c in range(11)}
    for c, images in written.items():
        for i, image in enumerate(images):
            _save(str(tmp_path / str(c) / f"img{i}.png"), image)
    (tmp_path / "3" / "notes.txt").write_text("not an image")
    d = load_splits(str(tmp_path))["train"]
    assert d.x.shape == (22, 5, 6, 1) and d.x.dtype == np.uint8  # (H, W) = (5, 6)
    assert d.num_classes == 11 and d.class_names == tuple(str(c) for c in range(11))
    for c in range(11):  # label = int(folder name), not the position of "10" in sorted strings
        np.testing.assert_array_equal(d.x[d.y == c][..., 0], written[c])


def test_image_folder_rgb_named_classes_and_modes(tmp_path):
    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (4, 6), dtype=np.uint8)
    rgba = rng.integers(0, 256, (4, 6, 4), dtype=np.uint8)
    _save(str(tmp_path / "dog" / "a.png"), rgb)
    _save(str(tmp_path / "ant" / "a.png"), gray)
    _save(str(tmp_path / "cat" / "a.png"), rgba)
    palette = Image.fromarray(rgb).quantize(colors=8)
    palette.save(str(tmp_path / "cat" / "b.png"))
    d = load_splits(str(tmp_path))["train"]
    assert d.class_names == ("ant", "cat", "dog") and d.x.shape == (4, 4, 6, 3)
    np.testing.assert_array_equal(d.y, [0, 1, 1, 2])
    np.testing.assert_array_equal(d.x[0], np.repeat(gray[..., None], 3, axis=2))  # L -> RGB
    np.testing.assert_array_equal(d.x[1], rgba[..., :3])  # alpha dropped, not composited
    np.testing.assert_array_equal(d.x[2], np.asarray(palette.convert("RGB")))
    np.testing.assert_array_equal(d.x[3], rgb)


def test_image_folder_jpeg_within_tolerance(tmp_path):
    yy, xx = np.mgrid[0:16, 0:16]
    smooth = np.stack([yy * 15, xx * 15, (yy + xx) * 7], axis=-1).astype(np.uint8)
    _save(str(tmp_path / "a" / "x.jpg"), smooth, fmt="JPEG", quality=95)
    _save(str(tmp_path / "b" / "x.jpeg"), smooth, fmt="JPEG", quality=95)
    d = load_splits(str(tmp_path))["train"]
    err = np.abs(d.x.astype(np.int32) - smooth.astype(np.int32))
    assert err.mean() < 2.0 and err.max() <= 16  # lossy: JPEG q95 on a smooth ramp


def test_image_folder_applies_the_exif_orientation(tmp_path):
    """A camera's portrait photo: pixels stored landscape, EXIF Orientation 6 (rotate 90
    degrees clockwise to view). It loads as viewers show it: np.rot90(stored, k=-1)."""
    stored = np.random.default_rng(6).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    (tmp_path / "a").mkdir()
    Image.fromarray(stored).save(tmp_path / "a" / "x.png", exif=exif)
    d = load_splits(str(tmp_path))["train"]
    np.testing.assert_array_equal(d.x[0], np.rot90(stored, k=-1))


def test_image_folder_errors(tmp_path):
    with pytest.raises(ValueError, match=r"data\.source .*no such folder"):
        loaders.load_image_folder(str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"data\.source .*empty.*no class sub-folders"):
        load_splits(str(empty))

    one_empty = tmp_path / "one_empty"
    _save(str(one_empty / "a" / "x.png"), np.zeros((4, 4), np.uint8))
    (one_empty / "b").mkdir()
    (one_empty / "b" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"class folder 'b' has no images"):
        load_splits(str(one_empty))

    mixed = tmp_path / "mixed"
    _save(str(mixed / "a" / "x.png"), np.zeros((4, 4), np.uint8))
    _save(str(mixed / "b" / "y.png"), np.zeros((4, 5), np.uint8))
    with pytest.raises(ValueError, match=r"differ in size: .*x\.png.* is 4x4 but .*y\.png.* 5x4"):
        load_splits(str(mixed))

    broken = tmp_path / "broken"
    _save(str(broken / "a" / "x.png"), np.zeros((4, 4), np.uint8))
    (broken / "a" / "z.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match=r"cannot read image file .*z\.png"):
        load_splits(str(broken))

    gaps = tmp_path / "gaps"
    _save(str(gaps / "0" / "x.png"), np.zeros((4, 4), np.uint8))
    _save(str(gaps / "2" / "x.png"), np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"integer class folders must be exactly 0\.\.1"):
        load_splits(str(gaps))


def test_unknown_source_names_data_source(tmp_path):
    for bad in ["mnist", "cifar", str(tmp_path / "nope"), ""]:
        with pytest.raises(ValueError, match=r"data\.source must be one of 'digits', 'tfds:NAME'"):
            load_splits(bad)


# ---------------------------------------------------------------------------------------------
# conversion


def test_to_model_range_uint8_exact():
    x = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    out = to_model_range(x)
    assert out.dtype == np.float32 and out.shape == x.shape
    assert out.min() == -1.0 and out.max() == 1.0
    np.testing.assert_array_equal(out, x.astype(np.float32) / np.float32(127.5) - np.float32(1))
    np.testing.assert_allclose(out, (x.astype(np.float64) - 127.5) / 127.5, atol=1e-7)


def test_to_model_range_float_paths():
    rng = np.random.default_rng(5)
    unit = rng.random((3, 4, 4, 1)).astype(np.float32)
    np.testing.assert_array_equal(to_model_range(unit), 2 * unit - 1)
    np.testing.assert_array_equal(to_model_range(unit.astype(np.float64)), 2 * unit - 1)
    signed = 2 * unit - 1
    signed[0, 0, 0, 0] = -0.5  # has negatives: taken as already in [-1, 1]
    np.testing.assert_array_equal(to_model_range(signed), signed)
    np.testing.assert_array_equal(to_model_range(unit, signed=True), unit)  # the data set's call
    np.testing.assert_array_equal(to_model_range(unit, signed=False), 2 * unit - 1)
    with pytest.raises(ValueError, match=r"stored in \[0, 1\] must be >= 0; found values in \[-0\.\d+"):
        to_model_range(signed, signed=False)
    assert loaders.float_range_is_signed(unit, signed) is True
    assert loaders.float_range_is_signed(unit, (unit * 255).astype(np.uint8)) is False
    assert loaders.float_range_is_signed((unit * 255).astype(np.uint8)) is None
    for bad, found in [(unit * 2, r"\[0\.\d+, 1\.\d+\]"), (signed - 1.5, r"\[-2\.\d+, "),
                       (np.full((1, 2, 2, 1), np.nan), r"non-finite")]:
        with pytest.raises(ValueError,
                           match=r"must lie in \[0, 1\] or \[-1, 1\]; found .*" + found):
            to_model_range(bad)
    for bad in [unit > 0.5, (unit * 255).astype(np.int64), unit[0]]:
        with pytest.raises(ValueError, match=r"images must be"):
            to_model_range(bad)


@pytest.mark.parametrize("hw, r", [((28, 28), 8), ((28, 28), 16), ((8, 8), 32), ((20, 30), 16)])
def test_to_model_range_resize_matches_pil_bilinear(hw, r):
    rng = np.random.default_rng(6)
    x = rng.random((3, *hw, 3)).astype(np.float32)
    out = to_model_range(x, resolution=r)
    assert out.shape == (3, r, r, 3) and out.dtype == np.float32
    ref = np.stack([np.stack([np.asarray(Image.fromarray(x[n, :, :, c], "F").resize(
        (r, r), Image.BILINEAR)) for c in range(3)], axis=-1) for n in range(3)])
    # PIL's BILINEAR widens its kernel by the scale factor when shrinking (antialiasing), as
    # jax.image.resize(antialias=True) does: they agree to float32 rounding.
    np.testing.assert_allclose(out, 2 * ref - 1, atol=1e-5)
    assert out.min() >= -1 and out.max() <= 1


def test_resize_chunks_and_constants():
    rng = np.random.default_rng(7)
    x = rng.random((7, 12, 12, 1)).astype(np.float32) * 2 - 1
    # XLA's summation order depends on the batch shape: equal up to float32 rounding
    np.testing.assert_allclose(loaders._resize(x, 8, chunk=3), loaders._resize(x, 8),
                               atol=1e-6)
    const = np.full((2, 12, 12, 1), 200, np.uint8)
    np.testing.assert_allclose(to_model_range(const, resolution=32), 200 / 127.5 - 1, atol=1e-6)


def test_to_model_range_channels_exact():
    rng = np.random.default_rng(8)
    gray = rng.integers(0, 256, (2, 4, 4, 1), dtype=np.uint8)
    rgb = rng.integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_model_range(gray, channels=3),
                                  np.repeat(gray / np.float32(127.5) - 1, 3, axis=-1))
    scaled = rgb.astype(np.float64) / 127.5 - 1
    expected = (scaled[..., 0] + scaled[..., 1] + scaled[..., 2]) / 3
    np.testing.assert_allclose(to_model_range(rgb, channels=1)[..., 0], expected, atol=1e-6)
    np.testing.assert_array_equal(to_model_range(rgb, channels=3), to_model_range(rgb))
    with pytest.raises(ValueError, match=r"data\.channels must be 1 or 3"):
        to_model_range(rgb, channels=2)


def test_check_fits():
    d = labelled([3, 3], shape=(8, 8, 1))
    check_fits(d, resolution=32, channels=3, num_classes=2)
    check_fits(d, resolution=8, channels=1, num_classes=None)
    with pytest.raises(ValueError, match=r"num_classes=10 but the data has 2 classes"):
        check_fits(d, resolution=32, channels=1, num_classes=10)
    for r in [12, 256, 4, True, 32.0]:
        with pytest.raises(ValueError, match=r"data\.resolution must be one of"):
            check_fits(d, resolution=r, channels=1, num_classes=None)
    with pytest.raises(ValueError, match=r"data\.channels must be 1 or 3"):
        check_fits(d, resolution=32, channels=4, num_classes=None)


def test_labelled_validates():
    x = np.zeros((3, 2, 2, 1), np.uint8)
    with pytest.raises(ValueError, match=r"Labelled\.y must lie in \[0, 2\), found \[0, 2\]"):
        Labelled(x, np.array([0, 1, 2], np.int32), 2, ("a", "b"))
    with pytest.raises(ValueError, match=r"Labelled\.y must be a \(N,\) int32"):
        Labelled(x, np.array([0, 1, 1]), 2, ("a", "b"))
    with pytest.raises(ValueError, match=r"Labelled\.x must be"):
        Labelled(x[0], np.array([0, 1], np.int32), 2, ("a", "b"))


# ---------------------------------------------------------------------------------------------
# regimes


def test_split_stratified_exact_counts_disjoint():
    data = labelled([10, 7, 2, 1])
    train, test = regimes.train_test_split({"train": data}, test_fraction=0.3, seed=0)
    # round_half_up(0.3 n): 10 -> 3, 7 -> 2 (2.1), 2 -> 1 (0.6), 1 -> 0 (train keeps its only one)
    np.testing.assert_array_equal(regimes.class_counts(test.y, 4), [3, 2, 1, 0])
    np.testing.assert_array_equal(regimes.class_counts(train.y, 4), [7, 5, 1, 1])
    assert not set(ids(train)) & set(ids(test))
    assert sorted(set(ids(train)) | set(ids(test))) == list(range(20))
    np.testing.assert_array_equal(data.y[ids(test)], test.y)  # labels travel with their images
    assert (np.diff(ids(train)) > 0).all() and (np.diff(ids(test)) > 0).all()  # original order


def test_split_deterministic_and_seeded():
    y = np.repeat(np.arange(5), 40).astype(np.int32)
    a = regimes.split_indices(y, 5, test_fraction=0.25, seed=3)
    b = regimes.split_indices(y, 5, test_fraction=0.25, seed=3)
    c = regimes.split_indices(y, 5, test_fraction=0.25, seed=4)
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    assert a[1].size == c[1].size == 50
    # pooling depends on split names, not on the dict's order
    s1, s2 = labelled([3, 4]), labelled([5, 2])
    one = regimes.train_test_split({"a": s1, "b": s2}, test_fraction=0.5, seed=1)
    two = regimes.train_test_split({"b": s2, "a": s1}, test_fraction=0.5, seed=1)
    for p, q in zip(one, two):
        np.testing.assert_array_equal(p.x, q.x)
        np.testing.assert_array_equal(p.y, q.y)
    assert one[0].x.shape[0] + one[1].x.shape[0] == 14


def test_split_uses_test_split_when_fraction_zero():
    tr, val, te = labelled([2, 2]), labelled([1, 1]), labelled([3, 1])
    train, test = regimes.train_test_split({"test": te, "validation": val, "train": tr},
                                           test_fraction=0.0, seed=0)
    np.testing.assert_array_equal(train.x, np.concatenate([tr.x, val.x]))
    np.testing.assert_array_equal(train.y, np.concatenate([tr.y, val.y]))
    assert test is te
    with pytest.raises(ValueError, match=r"data\.test_fraction is 0 but the data has no 'test'"):
        regimes.train_test_split({"train": tr}, test_fraction=0, seed=0)
    for bad in [1.0, -0.1, "0.2", True]:
        with pytest.raises(ValueError, match=r"data\.test_fraction must be a number in \[0, 1\)"):
            regimes.train_test_split({"train": tr}, test_fraction=bad, seed=0)


def test_take_per_class_exact_nested_and_errors():
    data = labelled([30, 25, 20])
    subsets = [regimes.take_per_class(data, k, seed=9) for k in (5, 10, 20)]
    for k, s in zip((5, 10, 20), subsets):
        np.testing.assert_array_equal(regimes.class_counts(s.y, 3), [k, k, k])
        np.testing.assert_array_equal(data.y[ids(s)], s.y)
    assert set(ids(subsets[0])) < set(ids(subsets[1])) < set(ids(subsets[2]))
    other = regimes.take_per_class(data, 5, seed=10)
    assert set(ids(other)) != set(ids(subsets[0]))
    np.testing.assert_array_equal(ids(regimes.take_per_class(data, 5, seed=9)), ids(subsets[0]))
    with pytest.raises(ValueError, match=r"data\.per_class=21 .*\{2: 20\}"):
        regimes.take_per_class(data, 21, seed=0)
    with pytest.raises(ValueError, match=r"data\.per_class must be an int >= 1"):
        regimes.take_per_class(data, 0, seed=0)


def test_take_counts_table_and_errors():
    data = labelled([6, 5, 4])
    out = regimes.take_counts(data, {0: 2, 2: 0}, seed=1)
    np.testing.assert_array_equal(regimes.class_counts(out.y, 3), [2, 5, 0])
    assert set(ids(out)) >= set(range(6, 11))  # class 1 (absent from the table) keeps all
    same = regimes.take_counts(data, {0: 3, 1: 3, 2: 3}, seed=4)
    np.testing.assert_array_equal(ids(same), ids(regimes.take_per_class(data, 3, seed=4)))
    for counts, message in [({3: 1}, r" names class 3"), ({-1: 1}, r" names class -1"),
                            ({0: -1}, r"\[0\] must be an int >= 0"),
                            ({2: 5}, r"\[2\]=5 but class 2 \('c2'\) has only 4")]:
        with pytest.raises(ValueError, match=r"data\.class_counts" + message):
            regimes.take_counts(data, counts, seed=0)


def test_parse_counts():
    assert regimes.parse_counts("3:5,5:5,8:5") == {3: 5, 5: 5, 8: 5}
    assert regimes.parse_counts(" 0 : 1 , 2:0 ") == {0: 1, 2: 0}
    assert regimes.parse_counts("") == {}
    for bad in ["3-5", "3:", "a:1", "3:5,,4:1", "3:-1", "1:2,1:3"]:
        with pytest.raises(ValueError, match=r"data\.class_counts"):
            regimes.parse_counts(bad)


def test_class_counts():
    y = np.array([2, 0, 2, 2, 4])
    np.testing.assert_array_equal(regimes.class_counts(y, 6), [1, 0, 3, 0, 1, 0])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        regimes.class_counts(y, 4)
