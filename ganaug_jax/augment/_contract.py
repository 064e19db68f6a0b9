"""The image contract of `ganaug_jax.augment`, and the checks that enforce it on entry.

Images are batches in NHWC layout, shape (N, H, W, C) with H, W >= 2 and any C >= 1
(grayscale, RGB, multispectral), dtype float32 or bfloat16, values nominally in [-1, 1]
(the GAN convention). Ops compute in float32 and return the input dtype. They are
range-agnostic where the maths allows and never clip. Values are not checked (they may
be traced); shapes, dtypes, keys and concrete probabilities are checked before any compute
(a traced p, e.g. ADA's inside a jitted step, is clipped to [0, 1] instead). The layout is
not guessed: an NCHW (4, 3, 8, 8) batch reads as H = 3, W = 8, C = 8.

Op parameters must be finite (in float32) and in their documented ranges (zoom factors
non-zero, gamma > 0, blur sigma >= 0, masks boolean or 0/1, k whole, crop boxes of positive
size; the random ops' settings are Python numbers in their ranges, log2_std <= 16): concrete
ones are checked on entry, traced ones cannot be. A traced non-finite geometry gives an unspecified image for
that sample (NaN in the pure-JAX pass, finite pixels of that image in the XLA:CPU kernel),
and leaves the other samples alone. The random ops' ranges cannot draw one.

Coordinates: x is the column, y the row, in pixels, with pixel centres at integers.
Geometric ops act about the image centre ((W - 1) / 2, (H - 1) / 2).
Borders: 'reflect' (half-sample symmetric, d c b a | a b c d | d c b a), 'edge'
(the nearest border pixel), 'constant' (the `fill` value).
Interpolation: 'bilinear' or 'nearest'.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

BORDERS = ("reflect", "edge", "constant")
INTERPOLATIONS = ("bilinear", "nearest")
CONTRAST_CENTRES = ("mean", "zero")  # contrast about the per-image mean, or about 0
IMAGE_DTYPES = (jnp.float32, jnp.bfloat16)


def check_images(images: Any, name: str = "images") -> jax.Array:
    """Returns `images` as a jax array after checking rank, size and dtype."""
    shape = getattr(images, "shape", None)
    dtype = getattr(images, "dtype", None)
    if shape is None or dtype is None:
        raise ValueError(f"{name} must be an array of shape (N, H, W, C), got {type(images).__name__}")
    if len(shape) != 4:
        raise ValueError(f"{name} must have rank 4 (N, H, W, C), got shape {tuple(shape)}")
    if shape[1] < 2 or shape[2] < 2 or shape[3] < 1:
        raise ValueError(f"{name} must have H >= 2, W >= 2 and C >= 1, got shape {tuple(shape)}")
    if jnp.dtype(dtype) not in [jnp.dtype(d) for d in IMAGE_DTYPES]:
        raise ValueError(
            f"{name} must be float32 or bfloat16 with values in [-1, 1], got dtype {dtype}; "
            "convert uint8 images with x.astype(np.float32) / 127.5 - 1")
    return jnp.asarray(images)


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _real_scalar(value: Any) -> float | None:
    """A concrete real scalar (Python or NumPy number, or 0-d array, not a bool) as a float;
    None for anything else (a string, None, a sequence, a traced value)."""
    if isinstance(value, (bool, np.bool_, jax.core.Tracer)):
        return None
    array = np.asarray(value) if isinstance(value, (int, float, np.generic, np.ndarray,
                                                    jax.Array)) else None
    if array is None or array.ndim != 0 or array.dtype.kind not in "iuf":
        return None
    return float(array)


def _finite_float32(value: float) -> bool:
    """Finite once computed in float32 (what every op computes in)."""
    return bool(np.isfinite(value)) and abs(value) <= _FLOAT32_MAX


def check_finite(value: Any, name: str) -> None:
    """A concrete value must be real numbers (bool, int or float) and, if floating point,
    finite in float32 (NaN or inf would give meaningless images); a traced one cannot be
    checked here."""
    if isinstance(value, jax.core.Tracer):
        return
    array = np.asarray(value) if value is not None else None
    if array is None or array.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a real number or an array of them, got {value!r}")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)
                                              & (np.abs(array) <= _FLOAT32_MAX)):
        raise ValueError(f"{name} must be finite (in float32), got {value}")


def check_real(value: Any, name: str, low: float = -np.inf, high: float = np.inf, *,
               low_open: bool = False, high_open: bool = False, why: str = "") -> float:
    """An op's concrete setting (a Python or NumPy real scalar, finite in float32) within
    [low, high] (either end open if asked); returns it as a float. `why` explains the
    bounds in the error."""
    number = _real_scalar(value)
    inside = number is not None and _finite_float32(number) and (
        (low < number if low_open else low <= number)
        and (number < high if high_open else number <= high))
    if not inside:
        lower = f"{'>' if low_open else '>='} {low}"
        bounds = (f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
                  if np.isfinite(high) else f" {lower}" if np.isfinite(low) else "")
        raise ValueError(f"{name} must be a finite real number{bounds}{why}, got {value!r}")
    return number


def check_fill(fill: Any, name: str = "fill") -> float:
    """The constant border's (or cutout's) value: a finite Python or NumPy real scalar."""
    if isinstance(fill, (bool, np.bool_)) or not isinstance(fill, (int, float, np.integer,
                                                                   np.floating)):
        raise ValueError(f"{name} must be a real number (a static scalar, e.g. 0.0), got "
                         f"{fill!r}")
    if not np.isfinite(fill):
        raise ValueError(f"{name} must be finite, got {fill}")
    return float(fill)


def check_param(value: Any, n: int, name: str, dtype=jnp.float32) -> jax.Array:
    """Broadcasts a scalar or checks a per-sample array of shape (N,); concrete values must
    be finite."""
    check_finite(value, name)
    if not isinstance(value, jax.core.Tracer) and jnp.dtype(dtype).kind in "bi":
        # an integer or bool parameter (k, mask): a concrete value the cast would change
        # (k = 1.5, mask = 0.3) is refused, not rounded
        array = np.asarray(value)
        if not np.array_equal(array.astype(dtype), array):
            expected = "booleans (True/False, or 0/1)" if jnp.dtype(dtype).kind == "b" else "integers"
            raise ValueError(f"{name} must be {expected}, got {value}")
    value = jnp.asarray(value)
    if value.ndim == 0:
        return jnp.broadcast_to(value.astype(dtype), (n,))
    if value.shape != (n,):
        raise ValueError(f"{name} must be a scalar or have shape (N,) = ({n},), got shape {value.shape}")
    return value.astype(dtype)


def check_probability(p: Any, name: str = "p") -> jax.Array:
    """Checks a scalar probability: a concrete value must lie in [0, 1]; a traced one, which
    cannot be checked, is clipped to [0, 1] (a traced NaN stays NaN: no op is applied)."""
    if p is None or isinstance(p, (str, bytes)):
        raise ValueError(f"{name} must be a scalar probability in [0, 1] (a number or a "
                         f"0-d array), got {p!r}")
    p_arr = jnp.asarray(p, dtype=jnp.float32)
    if p_arr.ndim != 0:
        raise ValueError(f"{name} must be a scalar probability in [0, 1], got shape {p_arr.shape}")
    if isinstance(p_arr, jax.core.Tracer):
        return jnp.clip(p_arr, 0.0, 1.0)
    value = float(p_arr)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}")
    return p_arr


def check_key(key: Any, name: str = "key") -> jax.Array:
    """Checks a PRNG key: a scalar typed key (jax.random.key) or a raw uint32 key of shape (2,)
    (jax.random.PRNGKey)."""
    dtype = getattr(key, "dtype", None)
    shape = getattr(key, "shape", None)
    typed = dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
    if (typed and shape == ()) or (dtype == jnp.uint32 and shape == (2,)):
        return key
    raise ValueError(f"{name} must be a PRNG key, jax.random.key(seed) (or the raw uint32 (2,) "
                     f"of jax.random.PRNGKey(seed)), got "
                     + (f"{dtype}{list(shape)}" if shape is not None else type(key).__name__))


def check_choice(value: str, choices: tuple, name: str) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_range(bounds: Any, name: str, *, low_bound: float = -np.inf) -> tuple:
    """Checks a (lo, hi) sampling range given as a keyword argument of a random op: two
    concrete real numbers, finite in float32, low_bound <= lo <= hi. Returns (lo, hi)."""
    pair = tuple(bounds) if isinstance(bounds, (tuple, list, np.ndarray, jax.Array)) else ()
    numbers = [_real_scalar(v) for v in pair]
    if not (len(numbers) == 2 and None not in numbers and all(map(_finite_float32, numbers))
            and low_bound <= numbers[0] <= numbers[1]):
        raise ValueError(f"{name} must be a (lo, hi) pair of finite real numbers with "
                         f"{low_bound} <= lo <= hi, got {bounds!r}")
    return tuple(numbers)
