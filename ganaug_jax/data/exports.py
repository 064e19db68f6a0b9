"""Synthetic labelled data sets on disk: an npz file, a folder of PNGs per class, a TFDS data set.

Samples: {'x': (N, H, W, C) uint8 images in [0, 255] (C = 1 or 3) or (N, D) float32 vectors,
          'y': (N,) int32 labels >= 0 (labelled sets only)}; N >= 1. `to_export_arrays` turns
generator output (float32 in [-1, 1]) into this form.

Layouts; every export carries its manifest (`make_manifest`, completed with format, counts,
num_samples and created_by):
  npz     one file holding x, y and `manifest`, the manifest's JSON text as a 0-d unicode array
          (np.load(path)['manifest'].item()), so a single rename publishes data and manifest.
  folder  images only. <out>/manifest.json and one PNG per sample, named by its index in the
          export: <out>/<label>/<index>.png (e.g. 3/000017.png; a folder only for classes with
          samples, the manifest lists every class's count) for labelled sets; <out>/<index>.png
          for unlabelled sets. PNG mode 'L' for C = 1, 'RGB' for C = 3.
  tfds    <out>/manifest.json and <out>/<name>/1.0.0/: one array_record shard of tf.Example
          records ('image' PNG or 'vector' float32, 'label' ClassLabel), dataset_info.json,
          features.json and metadata.json (the manifest again, as builder.info.metadata).
          Read with tfds.builder_from_directory('<out>/<name>/1.0.0').as_data_source() or
          tfds.data_source(name, data_dir=<out>, split='train'). TensorFlow is not needed:
          tensorflow_datasets serialises records with its own copy of the tf.Example proto,
          array_record writes them, and tfds.folder_dataset.write_metadata adds the metadata
          (the route TFDS documents for data written outside a builder).

Atomicity: a file is written under a temporary name in the same directory and os.replace'd;
a folder or TFDS export is built in a temporary sibling directory (.<name>.<hex>.tmp) that is
renamed onto the target at the end and removed on any error, so a failed export leaves no
target (a killed process can leave only the hidden temporary). An existing target is refused
unless overwrite=True; even then only a file, or a directory holding a manifest.json (an
earlier export), is replaced.
"""

import contextlib
import hashlib
import io
import json
import math
import numbers
import os
import pathlib
import re
import shutil

import numpy as np
from PIL import Image

import ganaug_jax
from ganaug_jax.train import outputs

FORMATS = ("npz", "folder", "tfds")
TFDS_VERSION = "1.0.0"
TFDS_SPLIT = "train"
_REQUIRED = ("checkpoint_step", "seed", "config_sha256", "generator", "truncation", "filters",
             "dropped")


# ---- manifest ----

def make_manifest(*, checkpoint_step: int, seed: int, config_json: str, generator: str,
                  truncation: float | None, num_classes: int, workdir: str | None = None,
                  filters: list | tuple = ()) -> dict:
    """Provenance of an export. config_json: the run's config JSON as in its config.json
    (sorted keys); its sha256 is stored. generator: 'ema' or 'raw'. filters: one dict per
    filter applied, each with at least 'name' and 'dropped' (samples removed)."""
    if generator not in ("ema", "raw"):
        raise ValueError(f"generator must be 'ema' or 'raw', got {generator!r}")
    if truncation is not None and not (isinstance(truncation, numbers.Real)
                                       and math.isfinite(truncation) and truncation > 0):
        raise ValueError(f"truncation must be None or a finite number > 0, got {truncation!r}")
    filters = [dict(f) for f in filters]
    for f in filters:
        if "name" not in f or not isinstance(f.get("dropped"), int) or f["dropped"] < 0:
            raise ValueError(f"each filter needs a 'name' and an int 'dropped' >= 0, got {f}")
    return {
        "checkpoint_step": int(checkpoint_step), "seed": int(seed),
        "config_sha256": hashlib.sha256(config_json.encode()).hexdigest(),
        "generator": generator, "truncation": None if truncation is None else float(truncation),
        "num_classes": int(num_classes), "workdir": workdir,
        "filters": filters, "dropped": sum(f["dropped"] for f in filters),
    }


def _complete(manifest: dict, samples: dict, fmt: str) -> dict:
    """The manifest with format, created_by, num_samples and counts taken from the samples."""
    if not isinstance(manifest, dict) or any(k not in manifest for k in _REQUIRED):
        missing = [k for k in _REQUIRED if not isinstance(manifest, dict) or k not in manifest]
        raise ValueError(f"manifest must be a dict from make_manifest; missing keys {missing}")
    out = dict(manifest, format=fmt, created_by=f"ganaug_jax {ganaug_jax.__version__}",
               num_samples=len(samples["x"]))
    if "y" in samples:
        num_classes = int(manifest.get("num_classes") or 0)
        if num_classes and samples["y"].max() >= num_classes:
            raise ValueError(f"samples['y'] holds label {int(samples['y'].max())}, outside the "
                             f"manifest's num_classes = {num_classes} (labels 0..{num_classes - 1})")
        num_classes = num_classes or int(samples["y"].max()) + 1
        counts = np.bincount(samples["y"], minlength=num_classes)
        out["num_classes"] = num_classes
        out["counts"] = {str(c): int(n) for c, n in enumerate(counts)}
    else:
        out["counts"] = None
    return out


def _manifest_text(manifest: dict) -> str:
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"


# ---- samples ----

def to_export_arrays(samples: dict, *, is_image: bool) -> dict:
    """Generator output ({'x': float32 in [-1, 1], 'y'}) -> uint8 images or float32 vectors,
    int32 labels."""
    x = np.asarray(samples["x"])
    _check_finite(x)
    out = {"x": outputs.to_uint8(x) if is_image else x.astype(np.float32)}
    if "y" in samples:
        y = np.asarray(samples["y"])
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"samples['y'] must hold integer class labels, got dtype {y.dtype}")
        out["y"] = y.astype(np.int32)
    return out


def _check_finite(x: np.ndarray) -> None:
    """Refuses samples holding NaN or inf (a diverged generator), which would otherwise be
    written as black images or non-finite vectors."""
    bad = np.flatnonzero(~np.isfinite(x.reshape(len(x), -1)).all(axis=1))
    if bad.size:
        raise ValueError(f"{bad.size} of {len(x)} samples hold NaN or inf values (first: "
                         f"{bad[:5].tolist()}); the generator has diverged: check the run's "
                         "metrics.jsonl and generate from an earlier checkpoint (--step)")


def _check_samples(samples: dict) -> str:
    """'image' or 'vector'; clear errors for any other form."""
    if not isinstance(samples, dict) or "x" not in samples or set(samples) - {"x", "y"}:
        raise ValueError("samples must be a dict with 'x' and optionally 'y', got "
                         f"{sorted(samples) if isinstance(samples, dict) else type(samples)}")
    x = samples["x"]
    if not isinstance(x, np.ndarray) or len(x) == 0:
        raise ValueError("samples['x'] must be a non-empty numpy array")
    if x.ndim == 4 and x.dtype == np.uint8 and x.shape[-1] in (1, 3):
        kind = "image"
    elif x.ndim == 2 and x.dtype == np.float32:
        kind = "vector"
        _check_finite(x)
    else:
        raise ValueError("samples['x'] must be (N, H, W, 1 or 3) uint8 images or (N, D) float32 "
                         f"vectors, got {x.dtype} of shape {x.shape} (see to_export_arrays)")
    if "y" in samples:
        y = samples["y"]
        if not isinstance(y, np.ndarray) or y.shape != (len(x),) or \
                not np.issubdtype(y.dtype, np.integer) or (y < 0).any():
            raise ValueError(f"samples['y'] must be ({len(x)},) ints >= 0, got "
                             f"{getattr(y, 'dtype', type(y))} of shape {getattr(y, 'shape', '?')}")
    return kind


# ---- targets ----

def infer_format(out, fmt: str | None) -> str:
    """The export format: `fmt` if given, else 'npz' for a .npz path and 'folder' otherwise."""
    if fmt is None:
        return "npz" if str(out).endswith(".npz") else "folder"
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {list(FORMATS)}, got {fmt!r}")
    return fmt


def check_target(out, fmt: str, *, overwrite: bool = False) -> pathlib.Path:
    """The target path, after refusing a target that may not be written (errors name --out)."""
    path = pathlib.Path(out)
    fmt = infer_format(out, fmt)
    if (fmt == "npz") != (path.suffix == ".npz"):
        wanted = "a .npz file name" if fmt == "npz" else "a directory name (not ending in .npz)"
        raise ValueError(f"--out must be {wanted} for --format {fmt}, got {str(out)!r}")
    outputs.check_creatable(path, "--out")
    if not path.exists():
        return path
    if fmt == "npz":
        if not path.is_file():
            raise ValueError(f"--out {str(out)!r} exists and is not a file")
        if not overwrite:
            raise ValueError(f"--out {str(out)!r} already exists; pass --overwrite to replace it")
        return path
    if not path.is_dir():
        raise ValueError(f"--out {str(out)!r} exists and is not a directory")
    cwd = pathlib.Path.cwd()
    if path.resolve() in (cwd, *cwd.parents):  # the export replaces the directory by a rename
        raise ValueError(f"--out {str(out)!r} is the current directory or holds it; name a "
                         "directory to create for the export, e.g. --out ./synthetic")
    if any(path.iterdir()):
        if not overwrite:
            raise ValueError(f"--out {str(out)!r} already exists and is not empty; pass "
                             "--overwrite to replace it")
        if not (path / "manifest.json").is_file():
            raise ValueError(f"--out {str(out)!r} is not an earlier export (no manifest.json); "
                             "refusing to replace it even with --overwrite")
    return path


@contextlib.contextmanager
def _staged_dir(target: pathlib.Path, fmt: str, *, overwrite: bool):
    """Yields an empty temporary sibling of target; renames it onto target when the block
    succeeds and removes it in every case that leaves it behind."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = outputs.sibling(target, "tmp")
    tmp.mkdir()
    try:
        yield tmp
        check_target(target, fmt, overwrite=overwrite)  # again: it may have appeared meanwhile
        if target.exists() and any(target.iterdir()):  # an earlier export, overwrite=True
            old = outputs.sibling(target, "old")
            os.rename(target, old)
            try:
                os.rename(tmp, target)
            except BaseException:
                os.rename(old, target)  # put the earlier export back
                raise
            shutil.rmtree(old)
        else:
            os.rename(tmp, target)  # also replaces an empty directory
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# ---- writers ----

def export_npz(path, samples: dict, manifest: dict, *, overwrite: bool = False) -> dict:
    """Writes x, y and the manifest JSON ('manifest') into one .npz; returns the manifest."""
    _check_samples(samples)
    target = check_target(path, "npz", overwrite=overwrite)
    manifest = _complete(manifest, samples, "npz")
    buffer = io.BytesIO()
    np.savez(buffer, **samples, manifest=np.array(_manifest_text(manifest)))
    target.parent.mkdir(parents=True, exist_ok=True)
    check_target(target, "npz", overwrite=overwrite)
    outputs.atomic_write_bytes(target, buffer.getvalue())
    return manifest


def _write_png(path: pathlib.Path, pixels: np.ndarray) -> None:
    """(H, W, 1 or 3) uint8 -> a mode 'L' or 'RGB' PNG."""
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(path, format="PNG")


def _index_width(n: int) -> int:
    return max(6, len(str(n - 1)))


def export_folder(path, samples: dict, manifest: dict, *, overwrite: bool = False) -> dict:
    """One PNG per sample under <label>/ (or flat when unlabelled) plus manifest.json."""
    if _check_samples(samples) != "image":
        raise ValueError(f"--format folder holds images; these samples are vectors of shape "
                         f"{samples['x'].shape[1:]} (use --format npz or tfds)")
    target = check_target(path, "folder", overwrite=overwrite)
    manifest = _complete(manifest, samples, "folder")
    x, y = samples["x"], samples.get("y")
    width = _index_width(len(x))
    with _staged_dir(target, "folder", overwrite=overwrite) as tmp:
        if y is not None:
            for label in np.unique(y):
                (tmp / str(int(label))).mkdir()
        for i, pixels in enumerate(x):
            folder = tmp / str(int(y[i])) if y is not None else tmp
            _write_png(folder / f"{i:0{width}d}.png", pixels)
        (tmp / "manifest.json").write_text(_manifest_text(manifest))
    return manifest


def _check_tfds_name(name: str) -> None:
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"the TFDS name must be snake_case ([a-z][a-z0-9_]*), got {name!r}")


def _tfds_features(samples: dict, num_classes: int):
    import tensorflow_datasets as tfds
    x = samples["x"]
    if x.ndim == 4:
        spec = {"image": tfds.features.Image(shape=x.shape[1:], encoding_format="png")}
    else:
        spec = {"vector": tfds.features.Tensor(shape=x.shape[1:], dtype=np.float32)}
    if "y" in samples:
        spec["label"] = tfds.features.ClassLabel(num_classes=num_classes)
    return tfds.features.FeaturesDict(spec)


def _png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def export_tfds(path, samples: dict, manifest: dict, *, name: str = "ganaug_synthetic",
                overwrite: bool = False) -> dict:
    """A TFDS data set (array_record, split 'train', sample order kept) under <out>/<name>/1.0.0
    plus <out>/manifest.json; needs tensorflow_datasets and array_record, not TensorFlow."""
    kind = _check_samples(samples)
    _check_tfds_name(name)
    target = check_target(path, "tfds", overwrite=overwrite)
    import tensorflow_datasets as tfds
    from array_record.python.array_record_module import ArrayRecordWriter

    manifest = _complete(manifest, samples, "tfds")
    manifest["tfds"] = {"name": name, "version": TFDS_VERSION, "split": TFDS_SPLIT,
                        "builder_dir": f"{name}/{TFDS_VERSION}"}
    features = _tfds_features(samples, manifest.get("num_classes", 0))
    x, y = samples["x"], samples.get("y")
    with _staged_dir(target, "tfds", overwrite=overwrite) as tmp:
        builder_dir = tmp / name / TFDS_VERSION
        builder_dir.mkdir(parents=True)
        shard = builder_dir / f"{name}-{TFDS_SPLIT}.array_record-00000-of-00001"
        writer = ArrayRecordWriter(str(shard), "group_size:1")  # group 1: fast random access
        num_bytes = 0
        try:
            for i in range(len(x)):
                record = {"image": _png_bytes(x[i])} if kind == "image" else {"vector": x[i]}
                if y is not None:
                    record["label"] = int(y[i])
                serialized = features.serialize_example(record)
                writer.write(serialized)
                num_bytes += len(serialized)
        finally:
            writer.close()
        tfds.folder_dataset.write_metadata(
            data_dir=str(builder_dir), features=features, version=TFDS_VERSION,
            split_infos=[tfds.core.SplitInfo(name=TFDS_SPLIT, shard_lengths=[len(x)],
                                             num_bytes=num_bytes)],
            check_data=False,  # its check reads through tf.data; we read back below instead
            description=f"Synthetic samples written by ganaug_jax (see ../../manifest.json): "
                        f"{manifest['num_samples']} samples, step {manifest['checkpoint_step']}.",
            metadata=tfds.core.MetadataDict(manifest), disable_shuffling=True)
        source = tfds.builder_from_directory(str(builder_dir)).as_data_source(split=TFDS_SPLIT)
        if len(source) != len(x):
            raise RuntimeError(f"TFDS export reads back {len(source)} records, wrote {len(x)}")
        del source
        (tmp / "manifest.json").write_text(_manifest_text(manifest))
    return manifest


EXPORTERS = {"npz": export_npz, "folder": export_folder, "tfds": export_tfds}


def export(fmt: str, path, samples: dict, manifest: dict, *, overwrite: bool = False,
           **options) -> dict:
    """Dispatches to export_<fmt>; returns the manifest as written."""
    return EXPORTERS[infer_format(path, fmt)](path, samples, manifest, overwrite=overwrite,
                                              **options)


# ---- readers ----

def _read_npz(path: pathlib.Path) -> tuple[dict, dict]:
    with np.load(path) as data:
        if "manifest" not in data:
            raise ValueError(f"{str(path)!r} holds no manifest: not an export")
        manifest = json.loads(data["manifest"].item())
        samples = {k: data[k] for k in ("x", "y") if k in data}
    return samples, manifest


def _read_folder(path: pathlib.Path, manifest: dict) -> tuple[dict, dict]:
    class_dirs = [d for d in path.iterdir() if d.is_dir() and d.name.isdigit()]
    if class_dirs:
        files = [(int(f.stem), int(d.name), f) for d in class_dirs for f in d.glob("*.png")]
    else:
        files = [(int(f.stem), -1, f) for f in path.glob("*.png")]
    files.sort()
    if [i for i, _, _ in files] != list(range(manifest["num_samples"])):
        raise ValueError(f"export {str(path)!r} is incomplete: {len(files)} PNGs, the manifest "
                         f"lists {manifest['num_samples']}")
    images = []
    for _, _, f in files:
        with Image.open(f) as image:
            pixels = np.asarray(image)
        images.append(pixels[..., None] if pixels.ndim == 2 else pixels)
    samples = {"x": np.stack(images)}
    if class_dirs:
        samples["y"] = np.array([label for _, label, _ in files], np.int32)
    return samples, manifest


def _read_tfds(path: pathlib.Path, manifest: dict) -> tuple[dict, dict]:
    import tensorflow_datasets as tfds
    info = manifest["tfds"]
    builder = tfds.builder_from_directory(str(path / info["builder_dir"]))
    source = builder.as_data_source(split=info["split"])
    records = [source[i] for i in range(len(source))]
    key = "image" if "image" in builder.info.features else "vector"
    samples = {"x": np.stack([r[key] for r in records])}
    if "label" in builder.info.features:
        samples["y"] = np.array([r["label"] for r in records], np.int32)
    return samples, manifest


def read_export(path) -> tuple[dict, dict]:
    """(samples, manifest) of any export: samples as written ({'x', 'y'?}), manifest as a dict."""
    path = pathlib.Path(path)
    if path.is_file() and path.suffix == ".npz":
        return _read_npz(path)
    if not (path / "manifest.json").is_file():
        raise ValueError(f"{str(path)!r} is not an export (no .npz file, no manifest.json)")
    manifest = json.loads((path / "manifest.json").read_text())
    readers = {"folder": _read_folder, "tfds": _read_tfds}
    if manifest.get("format") not in readers:
        raise ValueError(f"{str(path)!r}: unknown export format {manifest.get('format')!r}")
    return readers[manifest["format"]](path, manifest)
