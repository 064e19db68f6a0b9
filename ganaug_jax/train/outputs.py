"""What a run writes besides checkpoints: metrics.jsonl, TensorBoard events, sample PNGs.

Every file is written to a temporary name and renamed, so none is ever left half-written.
"""

import contextlib
import json
import os
import pathlib
import secrets
import tempfile
import time

import numpy as np
from PIL import Image, ImageDraw


def sibling(target: pathlib.Path, tag: str) -> pathlib.Path:
    """A fresh hidden name next to target, for staging a write: .NAME.RANDOM.TAG"""
    return target.parent / f".{target.name}.{secrets.token_hex(6)}.{tag}"


def atomic_write_bytes(path, data: bytes) -> None:
    """Writes data to a sibling temporary file, fsyncs it and renames it onto path. The file
    gets the permissions open() would give it (0o666 less the umask), not mkstemp's 0o600."""
    path = pathlib.Path(path)
    tmp = sibling(path, "tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def check_creatable(path, flag: str) -> None:
    """Checks, creating nothing, that `path` can be written: its nearest existing ancestor
    directory takes a new file; otherwise a ValueError naming `flag` (checked before a command
    computes what it will write there)."""
    ancestor = pathlib.Path(path).absolute().parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"{flag} {str(path)!r} cannot be written: {str(ancestor)!r} is not a "
                         "directory")
    try:
        with tempfile.TemporaryFile(dir=ancestor):
            pass
    except OSError as error:
        raise ValueError(f"{flag} {str(path)!r} cannot be written: {error}") from None


def ensure_writable_dir(path: str, flag: str) -> pathlib.Path:
    """Creates directory `path` (and its parents) and checks that a file can be made in it;
    otherwise a ValueError naming `flag` (the CLI flag or config key that gave the path)."""
    try:
        pathlib.Path(path).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):  # a name of its own: processes may share path
            pass
    except OSError as error:
        raise ValueError(f"{flag} {str(path)!r} is not a writable directory: {error}") from None
    return pathlib.Path(path)


@contextlib.contextmanager
def writable_dir_until_done(path: str, flag: str):
    """ensure_writable_dir for a body that fills `path`; if the body raises, the directories
    ensure_writable_dir created for it are removed again, innermost first, while empty."""
    target = pathlib.Path(path).absolute()  # 'a/../b' creates a and b: both are listed
    created = [d for d in (target, *target.parents)
               if d.name != ".." and not os.path.exists(os.path.normpath(d))]
    try:
        yield ensure_writable_dir(path, flag)
    except BaseException:
        for d in created:
            try:
                d.rmdir()
            except OSError:  # no longer empty: someone else writes there
                break
        raise


class MetricsLog:
    """Appends one JSON object per row to metrics.jsonl and mirrors scalars to TensorBoard."""

    def __init__(self, workdir, *, resume_step: int):
        self.path = pathlib.Path(workdir) / "metrics.jsonl"
        self.rows = self._truncate_after(resume_step)
        from tensorboardX import SummaryWriter
        # TensorBoard hides the events of earlier sessions at steps >= purge_step: those the
        # run writes again (rows up to the checkpoint stay, as in metrics.jsonl)
        self.tensorboard = SummaryWriter(str(pathlib.Path(workdir) / "tensorboard"),
                                         purge_step=resume_step + 1)

    def _truncate_after(self, step: int) -> list[dict]:
        """Drops rows past the checkpoint a resumed run restarts from (they are re-run) and a
        last line cut short by a crash while appending; returns the rows kept."""
        if not self.path.exists():
            return []
        lines = [line for line in self.path.read_text().splitlines() if line.strip()]
        kept = []
        for i, line in enumerate(lines):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                if i < len(lines) - 1:  # only the last append can be torn
                    raise ValueError(f"{self.path}: line {i + 1} is not JSON") from None
                continue
            if row["step"] <= step:
                kept.append((line, row))
        atomic_write_text(self.path, "".join(line + "\n" for line, _ in kept))
        return [row for _, row in kept]

    def write(self, step: int, scalars: dict) -> None:
        """One row: the step, the scalars, and `wall_time` (Unix seconds, in the JSON only)."""
        row = {"step": step, **{k: float(v) for k, v in scalars.items()}}
        with open(self.path, "a") as f:  # one short line: appended whole
            f.write(json.dumps(dict(row, wall_time=time.time())) + "\n")
        for name, value in row.items():
            if name != "step":
                self.tensorboard.add_scalar(name, value, step)

    def close(self) -> None:
        self.tensorboard.close()


def image_grid(images: np.ndarray, rows: int) -> np.ndarray:
    """(N, H, W, C) in [-1, 1] -> one uint8 (rows*H + gaps, cols*W + gaps, C) grid."""
    n, h, w, c = images.shape
    cols = int(np.ceil(n / rows))
    pad = 1
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
    pixels = to_uint8(images)
    for i in range(n):
        r, col = divmod(i, cols)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + col * (w + pad):pad + col * (w + pad) + w] = pixels[i]
    return grid


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[-1, 1] float -> uint8 [0, 255]: (x + 1) * 127.5 in float32, rounded to the nearest
    integer (ties to even, np.round); values outside [-1, 1] saturate at 0 and 255."""
    return np.clip(np.round((np.asarray(images, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def scatter_plot(points: np.ndarray, reference: np.ndarray, size: int = 384) -> np.ndarray:
    """2-D samples (blue) over the reference means (red) as an RGB uint8 image."""
    lo = min(points.min(initial=0), reference.min()) - 0.5
    hi = max(points.max(initial=0), reference.max()) + 0.5
    lo, hi = max(lo, reference.min() - 3), min(hi, reference.max() + 3)
    scale = (size - 1) / (hi - lo)
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    for x, y in points:
        u, v = (x - lo) * scale, (hi - y) * scale
        draw.point((u, v), fill=(30, 80, 200))
    for x, y in reference:
        u, v = (x - lo) * scale, (hi - y) * scale
        draw.ellipse((u - 3, v - 3, u + 3, v + 3), outline=(220, 30, 30))
    return np.asarray(image)


def bar_chart(labels: list, values: list, errors: list, *, title: str = "",
              series: list | None = None, width: int = 640, height: int = 360) -> np.ndarray:
    """A bar chart with error bars as an RGB uint8 image. values/errors: one number per label,
    or (with `series` names) one list per label, a bar per series. The axis starts at 0."""
    grouped = series is not None
    values = [list(v) if grouped else [v] for v in values]
    errors = [list(e) if grouped else [e] for e in errors]
    series = series or [""]
    colours = [(46, 110, 190), (230, 140, 40), (60, 160, 90), (180, 60, 60), (120, 90, 170)]
    top = max(v + e for vs, es in zip(values, errors) for v, e in zip(vs, es)) * 1.08 or 1.0
    left, right, bottom, header = 48, 12, 40, 28 + 14 * grouped
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((left, 6), title, fill="black")
    y0, plot_h = height - bottom, height - bottom - header

    def y_of(value):
        return y0 - plot_h * value / top
    raw_step = top / 5
    step = min((m * 10 ** np.floor(np.log10(raw_step)) for m in (1, 2, 5, 10)
                if m * 10 ** np.floor(np.log10(raw_step)) >= raw_step))
    for tick in np.arange(0, top, step):
        draw.line((left, y_of(tick), width - right, y_of(tick)), fill=(225, 225, 225))
        draw.text((4, y_of(tick) - 6), f"{tick:g}", fill="black")
    slot = (width - left - right) / len(labels)
    bar = slot * 0.8 / len(series)
    for i, label in enumerate(labels):
        for j, (v, e) in enumerate(zip(values[i], errors[i])):
            x = left + i * slot + slot * 0.1 + j * bar
            draw.rectangle((x, y_of(v), x + bar - 2, y0), fill=colours[j % len(colours)])
            mid = x + (bar - 2) / 2
            draw.line((mid, y_of(v + e), mid, y_of(max(v - e, 0))), fill="black")
            draw.line((mid - 3, y_of(v + e), mid + 3, y_of(v + e)), fill="black")
        draw.text((left + i * slot + 4, y0 + 6), str(label), fill="black")
    if grouped:
        for j, name in enumerate(series):
            x = left + j * 110
            draw.rectangle((x, 22, x + 10, 32), fill=colours[j % len(colours)])
            draw.text((x + 14, 21), str(name), fill="black")
    draw.line((left, y0, width - right, y0), fill="black")
    return np.asarray(image)


def save_png(path, pixels: np.ndarray) -> None:
    import io
    pixels = pixels[..., 0] if pixels.shape[-1] == 1 else pixels
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
