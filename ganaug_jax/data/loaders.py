"""Real labelled image data on the host: loading, conversion to the model's range, fit checks.

`load_splits(source)` reads a whole data set into numpy, one `Labelled` per split:
  * "digits": scikit-learn's digits (ships offline); one split "train", 1797 images 8 x 8 x 1,
    x float32 in [0, 1] (the stored 0..16 values divided by 16: exact, no quantisation).
  * "tfds:NAME": a TFDS data set read by random access (`tfds.data_source`, array_record
    files) with no TensorFlow needed; every split the builder has; x uint8 (H, W, C).
  * "PATH.npz": arrays x (N, H, W[, C]) uint8 or float, y (N,) int; optional x_test / y_test
    (a "test" split) and class_names.
  * "DIR": an image folder, one sub-folder per class, PNG / JPEG files; x uint8 (H, W, C).
`to_model_range` turns any of them into float32 (N, R, R, C) in [-1, 1] for the models;
`check_fits` says clearly when a data set cannot feed a given model.
"""

import dataclasses
import importlib.util
import os
import re

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SOURCE_FORMS = ("'digits'", "'tfds:NAME'", "a path to a .npz file", "a path to an image folder")


@dataclasses.dataclass(frozen=True)
class Labelled:
    """x: (N, H, W, C) uint8 [0, 255] or float32 (as stored); y: (N,) int32 in [0, num_classes).

    class_names[k] names label k. Shapes, dtypes and label range are checked on construction.
    """
    x: np.ndarray
    y: np.ndarray
    num_classes: int
    class_names: tuple[str, ...]

    def __post_init__(self):
        x, y = self.x, self.y
        if not isinstance(x, np.ndarray) or x.ndim != 4 or x.dtype not in (np.uint8, np.float32):
            raise ValueError("Labelled.x must be a (N, H, W, C) uint8 or float32 numpy array, got "
                             f"{_describe(x)}")
        if not isinstance(y, np.ndarray) or y.ndim != 1 or y.dtype != np.int32:
            raise ValueError(f"Labelled.y must be a (N,) int32 numpy array, got {_describe(y)}")
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"Labelled.x has {x.shape[0]} images but Labelled.y has "
                             f"{y.shape[0]} labels")
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) \
                or self.num_classes < 1:
            raise ValueError(f"Labelled.num_classes must be an int >= 1, got {self.num_classes!r}")
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"Labelled.class_names has {len(self.class_names)} names for "
                             f"{self.num_classes} classes")
        if y.size and (y.min() < 0 or y.max() >= self.num_classes):
            raise ValueError(f"Labelled.y must lie in [0, {self.num_classes}), found "
                             f"[{y.min()}, {y.max()}]")

    def take(self, indices: np.ndarray) -> "Labelled":
        """The images at `indices` (int array), same classes."""
        return Labelled(self.x[indices], self.y[indices], self.num_classes, self.class_names)


def _describe(a) -> str:
    if isinstance(a, np.ndarray):
        return f"shape {a.shape} dtype {a.dtype}"
    return f"{type(a).__name__}"


# ---------------------------------------------------------------------------------------------
# Loading


def load_splits(source: str, *, data_dir: str | None = None) -> dict[str, Labelled]:
    """{split name: Labelled} for `source` (see the module docstring for the accepted forms).

    data_dir is TFDS's data directory (None: TFDS's default, $TFDS_DATA_DIR or
    ~/tensorflow_datasets); the other sources ignore it.
    """
    if not isinstance(source, str) or not source:
        raise ValueError(f"data.source must be one of {', '.join(SOURCE_FORMS)}; got {source!r}")
    if source == "digits":
        return {"train": load_digits()}
    if source.startswith("tfds:"):
        return load_tfds(source[len("tfds:"):], data_dir=data_dir)
    if source.endswith(".npz"):
        return load_npz(source)
    if os.path.isdir(source):
        return {"train": load_image_folder(source)}
    raise ValueError(f"data.source must be one of {', '.join(SOURCE_FORMS)}; got {source!r} "
                     "(not 'digits', no 'tfds:' prefix, not a .npz path, not an existing folder)")


def load_digits() -> Labelled:
    """scikit-learn's digits: x (1797, 8, 8, 1) float32 in [0, 1] (pixel value / 16), 10 classes."""
    from sklearn.datasets import load_digits as sklearn_digits
    digits = sklearn_digits()
    x = (digits.images.astype(np.float32) / 16.0)[..., None]
    return Labelled(x, digits.target.astype(np.int32), 10, tuple(str(k) for k in range(10)))


def load_tfds(name: str, *, data_dir: str | None = None) -> dict[str, Labelled]:
    """Every split of TFDS data set `name`, read into numpy through `tfds.data_source`.

    The image feature is the first `tfds.features.Image` of the builder's features (uint8,
    fixed shape), the label the first `ClassLabel` (its names become class_names). Random access
    needs array_record files: a data set prepared in data_dir is read without TensorFlow; one
    that is not prepared is downloaded and prepared by TFDS, which needs TensorFlow and network.
    """
    import tensorflow_datasets as tfds

    if not name:
        raise ValueError("data.source 'tfds:NAME' needs a data set name, e.g. 'tfds:mnist'")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # DatasetNotFoundError, bad config or version, ...
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"data.source 'tfds:{name}': TFDS cannot build it ({first_line})") from e
    image_key, label_key = _tfds_feature_keys(builder.info.features, name)
    prepared = builder.is_prepared()
    if not prepared and importlib.util.find_spec("tensorflow") is None:
        raise ValueError(
            f"data.source 'tfds:{name}': the data set is not prepared under data.data_dir "
            f"({builder.data_dir}) and TFDS needs TensorFlow to download and prepare it, which is "
            "not installed. Prepare it elsewhere with file_format='array_record' (e.g. "
            f"`tfds build {name} --file_format=array_record`) and set data.data_dir to that "
            "folder, or install TensorFlow and allow network access.")
    try:
        sources = tfds.data_source(name, data_dir=data_dir, download=not prepared)
    except Exception as e:
        if prepared:
            raise ValueError(f"data.source 'tfds:{name}' is prepared under data.data_dir "
                             f"({builder.data_dir}) but cannot be read by random access ({e}); "
                             "it must be prepared with file_format='array_record' (or "
                             "'parquet')") from e
        raise ValueError(f"data.source 'tfds:{name}' is not prepared under data.data_dir "
                         f"({builder.data_dir}) and TFDS could not download and prepare it ({e}); "
                         "check network access, or prepare it elsewhere with "
                         "file_format='array_record' and set data.data_dir to that folder") from e
    if not sources:
        raise ValueError(f"data.source 'tfds:{name}': no splits found under data.data_dir "
                         f"({builder.data_dir})")
    label_feature = builder.info.features[label_key]
    names = tuple(str(n) for n in label_feature.names)
    return {str(split): _read_tfds_split(source, image_key, label_key, names, f"{name}/{split}")
            for split, source in sources.items()}


def _tfds_feature_keys(features, name: str) -> tuple[str, str]:
    import tensorflow_datasets as tfds
    image_keys = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
    label_keys = [k for k, f in features.items() if isinstance(f, tfds.features.ClassLabel)]
    if not image_keys or not label_keys:
        kinds = {k: type(f).__name__ for k, f in features.items()}
        raise ValueError(f"data.source 'tfds:{name}' needs an Image and a ClassLabel feature; its "
                         f"features are {kinds}")
    return image_keys[0], label_keys[0]


def _read_tfds_split(source, image_key: str, label_key: str, names: tuple[str, ...],
                     where: str) -> Labelled:
    images, labels = [], []
    for example in source:  # per-record random access; the data source has no bulk read
        images.append(np.asarray(example[image_key]))
        labels.append(int(example[label_key]))
    if not images:
        raise ValueError(f"data.source 'tfds:{where}' is empty")
    shapes = {im.shape for im in images}
    if len(shapes) != 1 or len(images[0].shape) != 3 or images[0].dtype != np.uint8:
        raise ValueError(f"data.source 'tfds:{where}': images must all be uint8 (H, W, C) of one "
                         f"shape, found shapes {sorted(shapes)[:4]} dtype {images[0].dtype}")
    return Labelled(np.stack(images), np.asarray(labels, np.int32), len(names), names)


def load_npz(path: str) -> dict[str, Labelled]:
    """{'train'[, 'test']} from arrays x, y[, x_test, y_test][, class_names] in a .npz file.

    x: (N, H, W) or (N, H, W, C), C in {1, 3}, uint8 or floating (stored as float32; the value
    range is checked by `to_model_range`); y: (N,) integer >= 0. num_classes is
    len(class_names) when given, else max label + 1; every class needs >= 1 training image.
    """
    if not os.path.isfile(path):
        raise ValueError(f"data.source {path!r}: no such .npz file")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as e:
        raise ValueError(f"data.source {path!r}: cannot read as a .npz of plain arrays "
                         f"({e})") from e
    for key in ("x", "y"):
        if key not in arrays:
            raise ValueError(f"data.source {path!r}: missing array {key!r}; found "
                             f"{sorted(arrays)} (needs x, y; optional x_test, y_test, class_names)")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise ValueError(f"data.source {path!r}: x_test and y_test must come together; found "
                         f"{sorted(arrays)}")
    parts = {"train": ("x", "y")}
    if "x_test" in arrays:
        parts["test"] = ("x_test", "y_test")
    xs = {split: _npz_images(arrays[kx], f"{path}[{kx!r}]") for split, (kx, _) in parts.items()}
    ys = {split: _npz_labels(arrays[ky], xs[split].shape[0], f"{path}[{ky!r}]", kx)
          for split, (kx, ky) in parts.items()}
    if "test" in xs and xs["test"].shape[1:] != xs["train"].shape[1:]:
        raise ValueError(f"data.source {path!r}: x_test images {xs['test'].shape[1:]} differ from "
                         f"x images {xs['train'].shape[1:]}")
    max_label = max(int(y.max()) for y in ys.values() if y.size)
    if "class_names" in arrays:
        names = arrays["class_names"]
        if names.ndim != 1:
            raise ValueError(f"data.source {path!r}: class_names must be 1-D, got {names.shape}")
        names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist())
        if max_label >= len(names):
            raise ValueError(f"data.source {path!r}: label {max_label} found but class_names has "
                             f"only {len(names)} names")
    else:
        if max_label >= len(ys["train"]):  # some class 0..max_label has no training image
            raise ValueError(f"data.source {path!r}: label {max_label} found with only "
                             f"{len(ys['train'])} images in y (labels must be 0..K-1 with every "
                             "class present)")
        names = tuple(str(k) for k in range(max_label + 1))
    counts = np.bincount(ys["train"], minlength=len(names))
    if (counts == 0).any():
        missing = np.flatnonzero(counts == 0).tolist()
        raise ValueError(f"data.source {path!r}: classes {missing} of 0..{len(names) - 1} have no "
                         "images in y (labels must be 0..K-1 with every class present)")
    return {split: Labelled(xs[split], ys[split], len(names), names) for split in parts}


def _npz_images(x: np.ndarray, where: str) -> np.ndarray:
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"data.source {where}: images must be (N, H, W) or (N, H, W, C) with C in "
                         f"(1, 3), got shape {x.shape}")
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float32)
    raise ValueError(f"data.source {where}: images must be uint8 [0, 255] or float, got dtype "
                     f"{x.dtype} (cast 0..255 integer images to uint8)")


def _npz_labels(y: np.ndarray, n: int, where: str, x_key: str) -> np.ndarray:
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"data.source {where}: labels must be a 1-D integer array, got "
                         f"{_describe(y)}")
    if y.shape[0] != n:
        raise ValueError(f"data.source {where}: {y.shape[0]} labels for {n} images in {x_key!r}")
    if n == 0:
        raise ValueError(f"data.source {where}: no images")
    if y.min() < 0:
        raise ValueError(f"data.source {where}: labels must be >= 0, found {int(y.min())}")
    if y.max() > np.iinfo(np.int32).max:
        raise ValueError(f"data.source {where}: labels must be class indices 0..K-1, found "
                         f"{int(y.max())}")
    return y.astype(np.int32)


def load_image_folder(path: str) -> Labelled:
    """An image folder: one sub-folder per class holding .png / .jpg / .jpeg files.

    Classes: if every sub-folder name is a non-negative integer, label = int(name) and the names
    must be exactly 0..K-1; otherwise the sorted names get labels 0..K-1. Files are read in
    sorted order with PIL; other files and hidden entries are ignored. Modes: 'L' and '1' -> C=1;
    'RGB' -> C=3; 'LA' drops alpha -> 'L'; 'RGBA' drops alpha (no compositing) -> 'RGB';
    palette 'P' and other colour modes -> 'RGB'. If any image ends up RGB, grayscale images are
    repeated to 3 channels. All images must have one size. x: (N, H, W, C) uint8.
    """
    if not os.path.isdir(path):
        raise ValueError(f"data.source {path!r}: no such folder")
    folders = sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))
    if not folders:
        raise ValueError(f"data.source {path!r}: no class sub-folders (expected one sub-folder of "
                         "images per class)")
    if all(re.fullmatch(r"[0-9]+", f) for f in folders):
        labels = [int(f) for f in folders]
        if sorted(labels) != list(range(len(folders))):
            raise ValueError(f"data.source {path!r}: integer class folders must be exactly "
                             f"0..{len(folders) - 1} (each once), got {folders}")
        order = sorted(folders, key=int)
    else:
        order = folders
    files, y = [], []
    for label, folder in enumerate(order):
        root = os.path.join(path, folder)
        names = sorted(e.name for e in os.scandir(root)
                       if e.is_file() and not e.name.startswith(".")
                       and e.name.lower().endswith(IMAGE_SUFFIXES))
        if not names:
            raise ValueError(f"data.source {path!r}: class folder {folder!r} has no images "
                             f"({', '.join(IMAGE_SUFFIXES)})")
        files += [os.path.join(root, n) for n in names]
        y += [label] * len(names)
    images = [_read_image(f) for f in files]
    size_of = {}
    for f, im in zip(files, images):
        size_of.setdefault(im.shape[:2], f)
    if len(size_of) > 1:
        (s0, f0), (s1, f1) = list(size_of.items())[:2]
        raise ValueError(f"data.source {path!r}: images differ in size: {f0!r} is {s0[1]}x{s0[0]} "
                         f"but {f1!r} is {s1[1]}x{s1[0]} (W x H); resize them to one size")
    channels = max(im.shape[2] for im in images)
    x = np.stack([np.repeat(im, channels // im.shape[2], axis=2) for im in images])
    return Labelled(x, np.asarray(y, np.int32), len(order), tuple(order))


def _read_image(file: str) -> np.ndarray:
    """(H, W, 1) or (H, W, 3) uint8 from an image file."""
    from PIL import Image, ImageOps
    try:
        with Image.open(file) as im:
            im.load()
            im = ImageOps.exif_transpose(im)  # as viewers show it (cameras store it rotated)
            mode = im.mode
            if mode in ("1", "LA"):
                im, mode = im.convert("L"), "L"
            elif mode not in ("L", "RGB"):
                if mode.startswith(("I", "F")):
                    raise ValueError(f"unsupported mode {mode!r} (16-bit or float pixels)")
                im, mode = im.convert("RGB"), "RGB"  # RGBA drops alpha; P, CMYK, YCbCr -> RGB
            a = np.asarray(im, dtype=np.uint8)
    except Exception as e:
        raise ValueError(f"data.source: cannot read image file {file!r} ({e})") from e
    return a[..., None] if mode == "L" else a


# ---------------------------------------------------------------------------------------------
# Conversion and checks


def float_range_is_signed(*images: np.ndarray) -> bool | None:
    """Whether float images are stored in [-1, 1] (True: some value is negative) or [0, 1]
    (False), decided once over all of `images` (every split of a data set), so that one stored
    value maps to one model value in every split; None when none of them is floating."""
    floats = [x for x in images if np.issubdtype(x.dtype, np.floating) and x.size]
    if not floats:
        return None
    return bool(min(float(np.min(x)) for x in floats) < 0.0)  # NaN: refused later


def to_model_range(x: np.ndarray, *, resolution: int | None = None,
                   channels: int | None = None, signed: bool | None = None) -> np.ndarray:
    """(N, H, W, C) images -> float32 (N, R, R, C') in [-1, 1].

    uint8: x / 127.5 - 1. Floating: must be finite and inside [-1, 1]; signed=True takes it as
    already in [-1, 1], signed=False as [0, 1] (then it must be >= 0) and maps it by 2x - 1;
    signed=None decides from x alone (negative values: [-1, 1]). A data set's splits share
    one decision (`float_range_is_signed` over all of them). resolution R:
    resized to (R, R) (non-square images are stretched) with antialiased bilinear resampling
    (`jax.image.resize(..., 'linear', antialias=True)`, equal to PIL's BILINEAR resize), on the
    host CPU; None keeps (H, W). channels: 1 -> 3 repeats the channel, 3 -> 1 takes the channel
    mean (the library's luma), None or C keeps C.
    """
    if not isinstance(x, np.ndarray) or x.ndim != 4:
        raise ValueError(f"images must be a (N, H, W, C) numpy array, got {_describe(x)}")
    if x.size == 0:
        raise ValueError(f"images must not be empty, got shape {x.shape}")
    if x.dtype == np.uint8:
        out = x.astype(np.float32) / 127.5 - 1.0
    elif np.issubdtype(x.dtype, np.floating):
        lo, hi = float(np.min(x)), float(np.max(x))
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -1.0 or hi > 1.0:
            raise ValueError(f"float images must lie in [0, 1] or [-1, 1]; found values in "
                             f"[{lo}, {hi}]" + ("" if np.isfinite(lo) and np.isfinite(hi)
                                                 else " (non-finite values)"))
        if signed is False and lo < 0.0:
            raise ValueError(f"float images of a data set stored in [0, 1] must be >= 0; found "
                             f"values in [{lo}, {hi}]")
        out = x.astype(np.float32)
        if not (lo < 0.0 if signed is None else signed):
            out = 2.0 * out - 1.0
    else:
        raise ValueError(f"images must be uint8 [0, 255] or float [0, 1] / [-1, 1], got dtype "
                         f"{x.dtype}")
    c = out.shape[-1]
    if channels is not None and channels != c:
        if (c, channels) == (1, 3):
            out = np.repeat(out, 3, axis=-1)
        elif (c, channels) == (3, 1):
            out = out.mean(axis=-1, keepdims=True, dtype=np.float32)
        else:
            raise ValueError(f"data.channels must be 1 or 3 (converting from C = {c} images), "
                             f"got {channels!r}")
    if resolution is not None:
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
            raise ValueError(f"data.resolution must be a positive int, got {resolution!r}")
        if out.shape[1:3] != (resolution, resolution):
            out = _resize(out, resolution)
    return out


def _resize(x: np.ndarray, r: int, chunk: int = 1024) -> np.ndarray:
    """Antialiased bilinear resize of float32 (N, H, W, C) to (N, r, r, C), in chunks on CPU."""
    import jax
    with jax.default_device(jax.devices("cpu")[0]):
        parts = [np.asarray(jax.image.resize(part, (part.shape[0], r, r, part.shape[3]),
                                             method="linear", antialias=True))
                 for part in np.split(x, range(chunk, x.shape[0], chunk))]
    return np.clip(np.concatenate(parts), -1.0, 1.0)  # convex weights: clips rounding only


def check_fits(labelled: Labelled, *, resolution: int, channels: int,
               num_classes: int | None) -> None:
    """Raises ValueError when `labelled` cannot feed a DCGAN of this resolution / channels /
    classes (num_classes None: unconditional, labels unused). Resizing and 1 <-> 3 channel
    conversion by `to_model_range` count as fitting."""
    from ganaug_jax.models.dcgan import DCGAN_RESOLUTIONS
    if not isinstance(resolution, int) or isinstance(resolution, bool) \
            or resolution not in DCGAN_RESOLUTIONS:
        raise ValueError(f"data.resolution must be one of {DCGAN_RESOLUTIONS} (the DCGAN's "
                         f"square sizes), got {resolution!r}")
    c = labelled.x.shape[-1]
    if not isinstance(channels, int) or isinstance(channels, bool) or channels not in (1, 3):
        raise ValueError(f"data.channels must be 1 or 3, got {channels!r}")
    if c not in (1, 3):
        raise ValueError(f"data has {c} channels; only 1 (grayscale) or 3 (RGB) convert to "
                         f"data.channels={channels}")
    if num_classes is not None and num_classes != labelled.num_classes:
        raise ValueError(f"the model expects num_classes={num_classes} but the data has "
                         f"{labelled.num_classes} classes {labelled.class_names[:12]}")
