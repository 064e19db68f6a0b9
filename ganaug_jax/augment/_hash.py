"""Per-sample uniform draws from a PRNG key by counter-based hashing.

`jax.random.uniform` on a threefry key costs 0.4-0.6 s of XLA:CPU compile time per call site
(measured with jax 0.10.2), which alone would exceed the pipeline's compile budget. The few
scalars a pipeline draws per sample are instead a hash of (key words, counter): the raw key
words and the element's index pass through two rounds of the lowbias32 integer mixer, like a
counter-based generator (Philox, threefry) with a lighter round function. Same key, same
draws; split keys give independent-looking streams. Large random fields (image noise) still
use `jax.random`.
"""

import jax
import jax.numpy as jnp
import numpy as np


def _mix(x: jax.Array) -> jax.Array:
    """lowbias32 (C. Wellons' hash prospector): a bijective 32-bit avalanche mixer."""
    x = x ^ (x >> 16)
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * np.uint32(0x846CA68B)
    return x ^ (x >> 16)


def key_words(key: jax.Array) -> jax.Array:
    """The raw uint32 words of a typed key (jax.random.key) or a legacy uint32 key."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    if key.dtype != jnp.uint32 or key.ndim != 1:
        raise ValueError(f"key must be a single PRNG key (jax.random.key(seed)), got {key.dtype}{key.shape}")
    return key


def uniform(key: jax.Array, shape: tuple) -> jax.Array:
    """float32 draws in [0, 1) of the given shape, a pure function of key."""
    words = key_words(key)
    size = int(np.prod(shape))
    x = jnp.arange(size, dtype=jnp.uint32) * np.uint32(0x9E3779B9)
    for i in range(words.shape[0]):
        x = _mix(x ^ words[i])
    x = _mix(x + np.uint32(0x6A09E667))
    draws = ((x >> 8).astype(jnp.float32) * np.float32(2.0 ** -24)).reshape(shape)
    always = (words[0] | np.uint32(1)) != 0  # true, but XLA does not fold it
    return jax.lax.platform_dependent(draws, always, cpu=_computed_once,
                                      default=lambda d, _: d)


def _computed_once(draws: jax.Array, always: jax.Array) -> jax.Array:
    """The draws, written once to their own buffer on XLA:CPU.

    Left alone, XLA:CPU fuses the hash into every consumer and recomputes it for each element
    of each matrix built from the draws (16 times per sample for a 4x4 colour matrix, 64 with
    contrast's C + 1 evaluations). A `lax.cond` on a predicate that is always true but that XLA
    cannot fold keeps the hash in a fusion of its own. Its other branch (zeros, never taken)
    is not the identity, else XLA would drop the conditional; the predicate comes from the
    key, not the draws, so a batch-sharded caller needs no collective for it. Not on GPU/TPU,
    where a conditional costs a host sync.
    """
    return jax.lax.cond(always, lambda d: d, jnp.zeros_like, draws)
