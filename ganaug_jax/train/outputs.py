"""What a run writes besides checkpoints: metrics.jsonl, TensorBoard events, sample PNGs.

Every file is written to a temporary name and renamed, so none is ever left half-written.
"""

import json
import os
import pathlib
import tempfile

import numpy as np
from PIL import Image, ImageDraw


def atomic_write_bytes(path, data: bytes) -> None:
    path = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=".tmp")
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


class MetricsLog:
    """Appends one JSON object per row to metrics.jsonl and mirrors scalars to TensorBoard."""

    def __init__(self, workdir, *, resume_step: int):
        self.path = pathlib.Path(workdir) / "metrics.jsonl"
        self._truncate_after(resume_step)
        from tensorboardX import SummaryWriter
        self.tensorboard = SummaryWriter(str(pathlib.Path(workdir) / "tensorboard"),
                                         purge_step=resume_step if resume_step else None)

    def _truncate_after(self, step: int) -> None:
        """Drops rows past the checkpoint a resumed run restarts from (they are re-run)."""
        if not self.path.exists():
            return
        rows = [line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= step]
        atomic_write_text(self.path, "".join(row + "\n" for row in rows))

    def write(self, step: int, scalars: dict) -> None:
        row = {"step": step, **{k: float(v) for k, v in scalars.items()}}
        with open(self.path, "a") as f:  # one short line: appended whole
            f.write(json.dumps(row) + "\n")
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
    """[-1, 1] float -> uint8 [0, 255] (values outside [-1, 1] saturate)."""
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


def save_png(path, pixels: np.ndarray) -> None:
    import io
    pixels = pixels[..., 0] if pixels.shape[-1] == 1 else pixels
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
