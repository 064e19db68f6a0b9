"""Does synthetic data help a classifier? Train one classifier per arm, test on held-out real data.

Arms (PROTOCOLS.md §2), same classifier, optimiser, steps and seed:
  real            real training images only;
  real+classical  real images through a classical augmentation pipeline;
  real+gan        batches mixing real and GAN samples (`synthetic_fraction` of each batch);
  real+both       the mix, then the classical pipeline on every image;
  gan             GAN samples only (classification accuracy score, CAS).
In the mixed arms the GAN samples' one-hot targets are smoothed towards uniform by
`synthetic_label_smoothing` (a conditional GAN's sample is not always a clean member of its
class); real samples, and the GAN-only arm (CAS as defined), keep hard labels.
Images are float32 (N, H, W, C) in [-1, 1]; labels int32 (N,) in [0, K). The whole training run
is one jitted loop over device-resident arrays; batch t is drawn from fold_in(key, t).
"""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ganaug_jax import augment as aug
from ganaug_jax.data import mixing
from ganaug_jax.data.sources import draw_from_arrays
from ganaug_jax.models.classifier import Classifier

ARMS = ("real", "real+classical", "real+gan", "real+both", "gan")
_USES_REAL = {"real": True, "real+classical": True, "real+gan": True, "real+both": True, "gan": False}
_USES_GAN = {"real": False, "real+classical": False, "real+gan": True, "real+both": True, "gan": True}
_USES_CLASSICAL = {"real": False, "real+classical": True, "real+gan": False, "real+both": True,
                   "gan": False}


@dataclasses.dataclass(frozen=True)
class ClassifierSpec:
    """The downstream classifier and its training budget (identical for every arm)."""
    steps: int = 1500
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    width: int = 32
    dropout: float = 0.3

    def module(self, num_classes: int) -> nn.Module:
        return Classifier(num_classes, width=self.width, dropout=self.dropout)


@functools.cache
def classical_augmentation() -> aug.Pipeline:
    """The classical arm: rotation U(-15, 15) degrees, scale U(0.9, 1.1), shifts up to 1/8 of
    the size (sub-pixel), edge borders, bilinear: label-preserving for digits-like data."""
    return aug.make_pipeline(
        [aug.op("rotate", max_degrees=15.0), aug.op("scale", factor_range=(0.9, 1.1)),
         aug.op("translate", max_fraction=0.125, mode="uniform")],
        border="edge", interpolation="bilinear")


def cross_entropy(logits: jax.Array, labels: jax.Array, is_synthetic: jax.Array,
                  synthetic_label_smoothing: float) -> jax.Array:
    """Mean cross-entropy of logits (B, K) float32 against labels (B,) int in [0, K): hard
    targets for real samples, (1 - s) one_hot + s / K where is_synthetic (B,) bool is True."""
    if not synthetic_label_smoothing:
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    hard = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    targets = jnp.where(is_synthetic[:, None],
                        optax.smooth_labels(hard, synthetic_label_smoothing), hard)
    return optax.softmax_cross_entropy(logits, targets).mean()


@functools.cache  # one compiled initialiser per classifier, shared by every arm's trainer
def _initial_params(num_classes: int, width: int, dropout: float):
    """init(key, like) -> params of Classifier(num_classes, width, dropout), jitted, drawn
    with the non-partitionable threefry (as `train.state.create_train_state`, for its compile
    time). Compiled once per process, not once per arm: the params depend on neither the arm
    nor the optimiser."""
    model = ClassifierSpec(width=width, dropout=dropout).module(num_classes)
    init = jax.jit(lambda key, like: model.init(key, like)["params"])

    def initial_params(key, like):
        with jax.threefry_partitionable(False):
            return init(key, like)
    initial_params.jitted = init  # its compile cache, for tests
    return initial_params


@functools.cache  # one compiled step per (classes, spec, augment, fraction, smoothing)
def make_trainer(num_classes: int, spec: ClassifierSpec, *, augment: aug.Pipeline | None,
                 synthetic_fraction: float, synthetic_label_smoothing: float = 0.0):
    """train(key, real, synthetic) -> params; real/synthetic are {'x', 'y'} device arrays (either
    may be None when synthetic_fraction is 1 or 0). Synthetic samples train on the targets
    (1 - s) one_hot(y) + s / K, s = synthetic_label_smoothing in [0, 1] (1: uniform targets). The step compiles once
    per array shapes."""
    if not 0.0 <= synthetic_label_smoothing <= 1.0:  # also rejects NaN
        raise ValueError(f"synthetic_label_smoothing must lie in [0, 1], got "
                         f"{synthetic_label_smoothing!r}")
    model = spec.module(num_classes)
    n_synthetic = mixing.synthetic_count(spec.batch_size, synthetic_fraction)
    n_real = spec.batch_size - n_synthetic
    tx = optax.adamw(optax.cosine_decay_schedule(spec.learning_rate, spec.steps),
                     weight_decay=spec.weight_decay)

    def batch(key, real, synthetic):
        k_mix, k_aug = jax.random.split(key)
        if n_real and n_synthetic:
            drawn = mixing.mix_batch(k_mix, real, synthetic, batch_size=spec.batch_size,
                                     synthetic_fraction=synthetic_fraction)
        else:
            drawn = draw_from_arrays(k_mix, real if n_real else synthetic, spec.batch_size)
            drawn["synthetic"] = jnp.full((spec.batch_size,), not n_real)
        x = drawn["x"] if augment is None else augment(k_aug, drawn["x"], 1.0)
        return x, drawn["y"], drawn["synthetic"]

    def loss_fn(params, x, y, is_synthetic, key):
        logits, _ = model.apply({"params": params}, x, train=True, rngs={"dropout": key})
        return cross_entropy(logits, y, is_synthetic, synthetic_label_smoothing)

    init_params = _initial_params(num_classes, spec.width, spec.dropout)
    init_optimiser = jax.jit(tx.init)

    @functools.partial(jax.jit, donate_argnums=(0,))
    def step(carry, key, real, synthetic):
        params, opt_state = carry
        k_batch, k_drop = jax.random.split(key)
        x, y, is_synthetic = batch(k_batch, real, synthetic)
        grads = jax.grad(loss_fn)(params, x, y, is_synthetic, k_drop)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    def train(key, real, synthetic):
        # A Python loop over a jitted step: XLA:CPU runs this convolutional step ~10x slower
        # inside a while loop (lax.fori_loop / scan: 91 ms vs 8.5 ms per step, measured).
        init_key, loop_key = jax.random.split(key)
        params = init_params(init_key, (real if n_real else synthetic)["x"][:1])
        carry = (params, init_optimiser(params))
        for t in range(spec.steps):
            carry = step(carry, jax.random.fold_in(loop_key, t), real, synthetic)
        return carry[0]

    return train


@functools.cache
def _inference(num_classes: int, spec: ClassifierSpec):
    model = spec.module(num_classes)
    return jax.jit(lambda p, x: model.apply({"params": p}, x))


def predict(params, images: np.ndarray, num_classes: int, spec: ClassifierSpec,
            *, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (N, K) float32, features (N, F) float32) in inference mode."""
    apply = _inference(num_classes, spec)
    probs, feats = [], []
    for start in range(0, len(images), batch_size):
        logits, features = apply(params, jnp.asarray(images[start:start + batch_size]))
        probs.append(np.asarray(jax.nn.softmax(logits)))
        feats.append(np.asarray(features))
    return np.concatenate(probs), np.concatenate(feats)


def scores(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int,
           small_classes: np.ndarray) -> dict:
    """accuracy, macro-F1 (over the classes the test set holds: sklearn's
    f1_score(average='macro', labels=those classes); stratified splits hold every class),
    mean recall over `small_classes`, and per-class recall."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    tp = np.array([np.sum((y_true == c) & (y_pred == c)) for c in range(num_classes)], float)
    support = np.bincount(y_true, minlength=num_classes).astype(float)
    predicted = np.bincount(y_pred, minlength=num_classes).astype(float)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    present = support > 0
    return {"accuracy": float(np.mean(y_true == y_pred)),
            "macro_f1": float(f1[present].mean()),
            "small_class_recall": float(recall[np.asarray(small_classes)].mean()),
            "per_class_recall": [float(r) for r in recall]}


def smallest_classes(y: np.ndarray, num_classes: int) -> np.ndarray:
    """The classes with the fewest training images (every class when balanced)."""
    counts = np.bincount(y, minlength=num_classes)
    return np.flatnonzero(counts == counts.min())


def run_arm(arm: str, key, real: dict, synthetic: dict | None, test: dict, *, num_classes: int,
            spec: ClassifierSpec, synthetic_fraction: float = 0.5,
            synthetic_label_smoothing: float = 0.0) -> dict:
    """Trains the arm's classifier and scores it on the real test split. The smoothing applies
    to the GAN samples of the mixed arms only."""
    if arm not in ARMS:
        raise ValueError(f"arm must be one of {ARMS}, got {arm!r}")
    if _USES_GAN[arm] and synthetic is None:
        raise ValueError(f"arm {arm!r} needs synthetic samples")
    mixed = _USES_REAL[arm] and _USES_GAN[arm]
    fraction = synthetic_fraction if mixed else float(_USES_GAN[arm])
    smoothing = synthetic_label_smoothing if mixed else 0.0
    train = make_trainer(num_classes, spec,
                         augment=classical_augmentation() if _USES_CLASSICAL[arm] else None,
                         synthetic_fraction=fraction, synthetic_label_smoothing=smoothing)
    params = train(key, jax.tree.map(jnp.asarray, real),
                   None if synthetic is None else jax.tree.map(jnp.asarray, synthetic))
    probs, _ = predict(params, test["x"], num_classes, spec)
    result = scores(test["y"], probs.argmax(-1), num_classes, smallest_classes(real["y"], num_classes))
    return dict(result, arm=arm, synthetic_fraction=fraction, synthetic_label_smoothing=smoothing)


def train_domain_classifier(real: dict, num_classes: int, *, seed: int = 0,
                            spec: ClassifierSpec = ClassifierSpec()):
    """The domain classifier (PROTOCOLS.md §3): trained on real training images only, fixed
    seed. Returns a FeatureExtractor images -> (N, F) features and a probability function."""
    train = make_trainer(num_classes, spec, augment=None, synthetic_fraction=0.0)
    params = train(jax.random.key(seed), jax.tree.map(jnp.asarray, real), None)
    return DomainClassifier(params, num_classes, spec)


@dataclasses.dataclass(frozen=True)
class DomainClassifier:
    """A trained classifier: `features(images)` (N, F) float32 (a quality.FeatureExtractor)
    and `probabilities(images)` (N, K) float32, images (N, H, W, C) float32 in [-1, 1]."""
    params: dict
    num_classes: int
    spec: ClassifierSpec

    def features(self, images: np.ndarray) -> np.ndarray:
        return predict(self.params, images, self.num_classes, self.spec)[1]

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        return predict(self.params, images, self.num_classes, self.spec)[0]
