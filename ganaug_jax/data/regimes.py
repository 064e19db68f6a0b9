"""Data regimes: train/test split, low-data (k per class) and imbalanced (per-class counts) subsets.

Everything is a pure function of (data, arguments, seed): randomness is
`np.random.default_rng(seed)`, sampling is without replacement and stratified by class, and
selected images keep their original order. Per-class selections draw one permutation per class
(classes in label order) and take prefixes of it, so with one seed the k-per-class subsets are
nested (k=5 within k=10 within k=20) and `take_counts` agrees with `take_per_class`.
"""

import re

import numpy as np

from ganaug_jax.data.loaders import Labelled


def class_counts(y: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes,) int64 image count per class of labels y (N,) int in [0, num_classes)."""
    y = np.asarray(y)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), found [{y.min()}, {y.max()}]")
    return np.bincount(y, minlength=num_classes).astype(np.int64)


def _class_permutations(y: np.ndarray, num_classes: int, seed: int) -> list[np.ndarray]:
    """For each class in label order, its image indices in one random order."""
    rng = np.random.default_rng(seed)
    return [rng.permutation(np.flatnonzero(y == c)) for c in range(num_classes)]


def _check_same_kind(parts: list[Labelled], names: list[str]) -> None:
    first = parts[0]
    for name, part in zip(names, parts):
        if (part.class_names, part.x.shape[1:], part.x.dtype) != \
                (first.class_names, first.x.shape[1:], first.x.dtype):
            raise ValueError(f"splits {names[0]!r} and {name!r} differ in classes, image shape or "
                             "dtype")


def _concatenate(parts: list[Labelled], names: list[str]) -> Labelled:
    _check_same_kind(parts, names)
    first = parts[0]
    return Labelled(np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts]),
                    first.num_classes, first.class_names)


def split_indices(y: np.ndarray, num_classes: int, *, test_fraction: float,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (train, test) index arrays (sorted, disjoint, covering range(N)).

    Class c with n_c images puts round_half_up(test_fraction * n_c) in test, clipped so that
    train keeps >= 1 and, when n_c >= 2, test gets >= 1.
    """
    test = []
    for perm in _class_permutations(y, num_classes, seed):
        n = perm.size
        n_test = int(np.floor(test_fraction * n + 0.5))
        n_test = min(max(n_test, 1 if n >= 2 else 0), max(n - 1, 0))
        test.append(perm[:n_test])
    test = np.sort(np.concatenate(test)).astype(np.int64)
    train = np.setdiff1d(np.arange(y.shape[0]), test)
    return train, test


def train_test_split(splits: dict[str, Labelled], *, test_fraction: float,
                     seed: int) -> tuple[Labelled, Labelled]:
    """(train, test) from the loaded splits.

    test_fraction == 0: the "test" split is the test set and the other splits (pooled in sorted
    name order) the training set. test_fraction in (0, 1): all splits are pooled (sorted name
    order) and a stratified fraction of each class becomes the test set (`split_indices`).
    """
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) \
            or not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"data.test_fraction must be a number in [0, 1), got {test_fraction!r}")
    if not splits:
        raise ValueError("no data splits to divide")
    names = sorted(splits)
    if test_fraction == 0:
        if "test" not in splits:
            raise ValueError(f"data.test_fraction is 0 but the data has no 'test' split (splits: "
                             f"{names}); set data.test_fraction > 0 to hold out a fraction")
        train_names = [n for n in names if n != "test"]
        if not train_names:
            raise ValueError("data.test_fraction is 0 but the data has only a 'test' split")
        train = _concatenate([splits[n] for n in train_names], train_names)
        test = splits["test"]
        _check_same_kind([train, test], ["+".join(train_names), "test"])
        return train, test
    pooled = _concatenate([splits[n] for n in names], names)
    train_idx, test_idx = split_indices(pooled.y, pooled.num_classes,
                                        test_fraction=float(test_fraction), seed=seed)
    return pooled.take(train_idx), pooled.take(test_idx)


def take_per_class(data: Labelled, k: int, *, seed: int) -> Labelled:
    """k images of every class (the low-data regime), chosen without replacement."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"data.per_class must be an int >= 1, got {k!r}")
    counts = class_counts(data.y, data.num_classes)
    short = {c: int(n) for c, n in enumerate(counts) if n < k}
    if short:
        raise ValueError(f"data.per_class={k} but some classes have fewer images "
                         f"(class: count) {short}")
    return take_counts(data, dict.fromkeys(range(data.num_classes), int(k)), seed=seed)


def take_counts(data: Labelled, counts: dict[int, int], *, seed: int) -> Labelled:
    """counts[c] images of class c (the imbalanced regime); classes not in counts keep all."""
    available = class_counts(data.y, data.num_classes)
    for c, n in counts.items():
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)) \
                or not 0 <= c < data.num_classes:
            raise ValueError(f"data.class_counts names class {c!r}, expected an int in "
                             f"[0, {data.num_classes})")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"data.class_counts[{c}] must be an int >= 0, got {n!r}")
        if n > available[c]:
            raise ValueError(f"data.class_counts[{c}]={n} but class {c} "
                             f"({data.class_names[c]!r}) has only {available[c]} images")
    perms = _class_permutations(data.y, data.num_classes, seed)
    keep = [perm[:counts.get(c, perm.size)] for c, perm in enumerate(perms)]
    return data.take(np.sort(np.concatenate(keep)).astype(np.int64))


def parse_counts(text: str) -> dict[int, int]:
    """'3:5,5:5,8:5' -> {3: 5, 5: 5, 8: 5} (class: count, non-negative ints); '' -> {}."""
    if not isinstance(text, str):
        raise TypeError(f"data.class_counts must be a string like '3:5,5:5', got {text!r}")
    if not text.strip():
        return {}
    counts = {}
    for item in text.split(","):
        match = re.fullmatch(r"\s*([0-9]+)\s*:\s*([0-9]+)\s*", item)
        if match is None:
            raise ValueError(f"data.class_counts must be comma-separated 'class:count' pairs of "
                             f"non-negative ints like '3:5,5:5'; cannot parse {item!r} in {text!r}")
        c, n = int(match[1]), int(match[2])
        if c in counts:
            raise ValueError(f"data.class_counts names class {c} twice in {text!r}")
        counts[c] = n
    return counts
