"""Test setup: 8 fake CPU devices (set before JAX initialises) and shared image fixtures."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
# The CLI's persistent compilation cache goes to a temporary folder, not the user's home. The
# process that makes it (pytest's controller; its xdist workers inherit the variable) removes it
# at exit.
import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

if "GANAUG_COMPILATION_CACHE" not in os.environ:
    os.environ["GANAUG_COMPILATION_CACHE"] = tempfile.mkdtemp(prefix="ganaug_test_cache_")
    atexit.register(shutil.rmtree, os.environ["GANAUG_COMPILATION_CACHE"], ignore_errors=True)

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def to_model_range(images_uint8: np.ndarray) -> np.ndarray:
    return images_uint8.astype(np.float32) / 127.5 - 1.0


@pytest.fixture(scope="session")
def rgb_batch() -> np.ndarray:
    """Four real RGB images (astronaut, coffee crops), 32 x 32, float32 in [-1, 1]."""
    from skimage import data, transform
    crops = [data.astronaut()[:256, 128:384], data.astronaut()[200:456, 0:256],
             data.coffee()[:256, 100:356], data.coffee()[100:356, 300:556]]
    small = [transform.resize(c, (32, 32), anti_aliasing=True) for c in crops]
    return (np.stack(small).astype(np.float32) * 2.0 - 1.0)


@pytest.fixture(scope="session")
def digits_batch() -> np.ndarray:
    """Eight real grayscale digits (scikit-learn), (8, 8, 8, 1), float32 in [-1, 1]."""
    from sklearn.datasets import load_digits
    images = load_digits().images[:8].astype(np.float32)
    return (images / 8.0 - 1.0)[..., None]
