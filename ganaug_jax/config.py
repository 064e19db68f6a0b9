"""Loading, overriding, validating and comparing run configs (ml_collections.ConfigDict).

Config files are Python files whose `get_config()` returns a ConfigDict (configs/*.py).
Overrides use dotted keys: `--config.optim.g_lr=1e-4`. Unknown keys and impossible values
are rejected before anything runs.
"""

import ast
import importlib.util
import json
import math
import numbers
import pathlib
import sys

import ml_collections

# Keys that change how long a run lasts, how it reports or where its data lives, not what it
# computes: a run may resume with different values.
RESUMABLE_KEYS = {"num_steps", "checkpoint_every", "keep_checkpoints", "log_every", "sample_every",
                  "data.placement", "model.conv_impl", "model.cpu_conv_library"}

# Keys added after runs were first written, each with the value that computes what runs saved
# before it computed (for a RESUMABLE key, its default): a saved config without the key reads
# as having that value.
BACKFILLED = {"model.latent_components": 0, "model.latent_component_std": 0.25,
              "model.cpu_conv_library": "onednn"}


def from_saved(saved: dict) -> ml_collections.ConfigDict:
    """A run's config.json contents as a ConfigDict, absent BACKFILLED keys filled in."""
    saved = json.loads(json.dumps(saved))  # a deep copy
    for key, value in BACKFILLED.items():
        *parents, leaf = key.split(".")
        node = saved
        for part in parents:
            node = node.setdefault(part, {})
        node.setdefault(leaf, value)
    return ml_collections.ConfigDict(saved)


def read_saved(path) -> ml_collections.ConfigDict:
    """A run's config.json (`path`) as from_saved reads it; a ValueError naming the file when
    it is not a JSON object."""
    try:
        saved = json.loads(pathlib.Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{str(path)!r} is not a readable run config (JSON): {error}") from None
    if not isinstance(saved, dict):
        raise ValueError(f"{str(path)!r} is not a run config: expected a JSON object, got "
                         f"{type(saved).__name__}")
    return from_saved(saved)


def bundled_configs() -> pathlib.Path:
    """The configs/ folder that comes with ganaug_jax: the copy a wheel installs as
    ganaug_jax/configs, else the repository's (a checkout or an editable install)."""
    installed = pathlib.Path(__file__).resolve().parent / "configs"
    return installed if installed.is_dir() else pathlib.Path(__file__).resolve().parents[1] / "configs"


def load_config(path: str) -> ml_collections.ConfigDict:
    """`get_config()` of a Python config file. Inside it, `from configs import default` (or any
    bundled config) works wherever the file lives: a configs/ folder next to the file's own
    folder comes first, then whatever `import` finds, the bundled folder last."""
    file = pathlib.Path(path)
    if not file.is_file():
        bundled = bundled_configs() / file.name
        hint = (f"; the copy installed with ganaug_jax is {str(bundled)!r}"
                if bundled.is_file() and bundled.resolve() != file.resolve() else "")
        raise ValueError(f"--config: no such config file {path!r}{hint}")
    if file.suffix != ".py":
        raise ValueError(f"--config: {path!r} is not a Python config file (a .py file defining "
                         "get_config(), e.g. configs/default.py)")
    spec = importlib.util.spec_from_file_location(f"ganaug_config_{file.stem}", file)
    module = importlib.util.module_from_spec(spec)
    # Variants import their base as `from configs import default`: make the folders that hold
    # a configs/ package importable while the file runs (the bundled one last, so that its
    # neighbours, ganaug_jax's subpackages when installed, shadow no installed package).
    root, bundled = str(file.resolve().parent.parent), str(bundled_configs().parent)
    sys.path.insert(0, root)
    sys.path.append(bundled)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(root)
        del sys.path[len(sys.path) - 1 - sys.path[::-1].index(bundled)]  # the one appended here
    if not hasattr(module, "get_config"):
        raise ValueError(f"--config: {path} has no get_config() function")
    return module.get_config()


def _parse_value(text: str, current):
    if isinstance(current, bool):
        lowered = text.lower()
        if lowered not in ("true", "false", "1", "0"):
            raise ValueError(f"expected true or false, got {text!r}")
        return lowered in ("true", "1")
    if isinstance(current, str):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise ValueError(f"expected a {type(current).__name__}, got {text!r}") from None
    if isinstance(current, float) and type(value) is int:  # not a bool (an int subclass)
        value = float(value)
    if type(value) is not type(current):
        raise ValueError(f"expected a {type(current).__name__}, got {text!r}")
    return value


def apply_overrides(config: ml_collections.ConfigDict, overrides: list) -> ml_collections.ConfigDict:
    """Applies 'a.b=value' strings; the key must exist and the value keep its type."""
    config = ml_collections.ConfigDict(config.to_dict())
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} must look like --config.KEY=VALUE")
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
                raise ValueError(f"unknown config key {key!r}")
            node = node[part]
        if leaf not in node or isinstance(node[leaf], ml_collections.ConfigDict):
            raise ValueError(f"unknown config key {key!r}")
        try:
            node[leaf] = _parse_value(text, node[leaf])
        except ValueError as error:
            raise ValueError(f"config key {key!r}: {error}") from None
    return config


def flatten(config) -> dict:
    """{'a.b': value} for every leaf."""
    out = {}

    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, (dict, ml_collections.ConfigDict)):
                walk(value, prefix + key + ".")
            else:
                out[prefix + key] = value
    walk(config.to_dict() if isinstance(config, ml_collections.ConfigDict) else config, "")
    return out


def differing_keys(saved, current: ml_collections.ConfigDict) -> list:
    """Keys whose values differ (ignoring RESUMABLE_KEYS), as 'key: saved -> current'.
    num_steps counts under optim.schedule 'cosine', whose horizon it is."""
    a, b = flatten(saved), flatten(current)
    cosine = "cosine" in (a.get("optim.schedule"), b.get("optim.schedule"))
    keys = sorted(set(a) | set(b))
    return [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}"
            + (" (the horizon of optim.schedule 'cosine')" if k == "num_steps" else "")
            for k in keys if a.get(k) != b.get(k)
            and (k not in RESUMABLE_KEYS or k == "num_steps" and cosine)]


def to_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True)


_CHOICES = {
    "model.architecture": ("mlp", "dcgan"),
    "model.conditioning": ("concat", "cbn"),
    "model.compute_dtype": ("float32", "bfloat16"),
    "model.conv_impl": ("custom_vjp", "xla"),
    "model.cpu_conv_library": ("onednn", "eigen", "ynnpack"),
    "loss.name": ("minimax", "non_saturating", "wgan", "hinge", "lsgan"),
    "optim.schedule": ("constant", "cosine"),
    "augment.kind": ("none", "diffaugment", "ada"),
    "data.placement": ("device", "host"),
}
_POSITIVE = ("num_steps", "batch_size", "checkpoint_every", "keep_checkpoints", "log_every",
             "model.latent_dim", "model.width", "loss.r1_interval", "optim.n_critic",
             "model.latent_component_std",
             "optim.g_lr", "optim.d_lr", "augment.ada_speed_images", "augment.ada_interval")
_NON_NEGATIVE = ("seed", "sample_every", "data.resolution", "data.channels", "data.split_seed",
                 "data.per_class", "data.subset_seed", "model.depth", "model.latent_components", "model.minibatch_std", "loss.gp_weight", "loss.r1_gamma",
                 "loss.instance_noise_std", "loss.instance_noise_steps", "loss.feature_matching",
                 "loss.mode_seeking", "optim.warmup_steps", "optim.ema_half_life_images")
_UNIT = ("augment.ada_initial_p",)
_NUMERIC = _POSITIVE + _NON_NEGATIVE + _UNIT + (
    "optim.b1", "optim.b2", "loss.real_label", "augment.ada_target", "augment.ada_fixed_p",
    "data.test_fraction")
_INTEGER = ("seed", "num_steps", "batch_size", "checkpoint_every", "keep_checkpoints",
            "log_every", "sample_every", "data.resolution", "data.channels", "data.split_seed",
            "data.per_class", "data.subset_seed", "model.latent_dim", "model.width",
            "model.latent_components", "model.depth", "model.minibatch_std", "loss.r1_interval",
            "loss.instance_noise_steps", "optim.warmup_steps", "optim.n_critic",
            "augment.ada_interval")


MAX_SEED = 2 ** 63 - 1  # jax.random.key takes an int64

# Every key the trainer reads (configs/default.py sets each one; a test keeps them in step).
KNOWN_KEYS = frozenset({
    "seed", "num_steps", "batch_size", "checkpoint_every", "keep_checkpoints", "log_every",
    "sample_every", "data.source", "data.data_dir", "data.resolution", "data.channels",
    "data.test_fraction", "data.split_seed", "data.per_class", "data.class_counts",
    "data.subset_seed", "data.placement", "model.architecture", "model.latent_dim", "model.width",
    "model.latent_components", "model.latent_component_std",
    "model.depth", "model.spectral_norm", "model.minibatch_std", "model.conditional", "model.conditioning",
    "model.compute_dtype", "model.conv_impl", "model.cpu_conv_library", "loss.name", "loss.gp_weight", "loss.r1_gamma", "loss.r1_interval",
    "loss.real_label", "loss.instance_noise_std", "loss.instance_noise_steps",
    "loss.feature_matching", "loss.mode_seeking", "optim.g_lr", "optim.d_lr", "optim.b1", "optim.b2",
    "optim.schedule", "optim.warmup_steps", "optim.n_critic", "optim.reuse_fake", "optim.ema_half_life_images",
    "augment.kind", "augment.policy", "augment.ada_pipes", "augment.ada_target",
    "augment.ada_speed_images", "augment.ada_interval", "augment.ada_initial_p",
    "augment.ada_fixed_p",
})


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the first unknown, missing or impossible key."""
    flat = flatten(config)
    unknown = sorted(set(flat) - KNOWN_KEYS)
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown}; see configs/default.py for every key")
    missing = sorted(KNOWN_KEYS - set(flat))
    if missing:
        raise ValueError(f"config is missing key(s) {missing}; start from configs/default.py "
                         "(`from configs import default` then `default.get_config()` works in "
                         "any config file)")
    for key, choices in _CHOICES.items():
        if flat[key] not in choices:
            raise ValueError(f"config key {key!r} must be one of {choices}, got {flat[key]!r}")
    for key in _INTEGER:  # a config file may build its own ConfigDict: 6e0 steps, 2.5 rows
        if isinstance(flat[key], bool) or not isinstance(flat[key], int):
            raise ValueError(f"config key {key!r} must be an int, got {flat[key]!r}")
    for key in _NUMERIC:  # NaN passes no range check below, and inf passes some
        if isinstance(flat[key], bool) or not isinstance(flat[key], numbers.Real) \
                or not math.isfinite(flat[key]):
            raise ValueError(f"config key {key!r} must be a finite number, got {flat[key]!r}")
    for key in _POSITIVE:
        if not flat[key] > 0:
            raise ValueError(f"config key {key!r} must be > 0, got {flat[key]!r}")
    for key in _NON_NEGATIVE:
        if not flat[key] >= 0:
            raise ValueError(f"config key {key!r} must be >= 0, got {flat[key]!r}")
    for key in ("seed", "data.split_seed", "data.subset_seed"):
        if not flat[key] <= MAX_SEED:
            raise ValueError(f"config key {key!r} must be <= 2**63 - 1, got {flat[key]!r}")
    if flat["model.minibatch_std"] and flat["batch_size"] % flat["model.minibatch_std"]:
        raise ValueError(f"config key 'batch_size' ({flat['batch_size']}) must be divisible by "
                         f"'model.minibatch_std' ({flat['model.minibatch_std']})")
    if flat["loss.mode_seeking"] > 0 and flat["optim.reuse_fake"]:
        raise ValueError("config key 'optim.reuse_fake' cannot be combined with "
                         "'loss.mode_seeking' > 0 (mode seeking pairs the G update's latents)")
    if flat["loss.mode_seeking"] > 0 and flat["batch_size"] < 2:
        raise ValueError("config key 'loss.mode_seeking' needs pairs of samples: 'batch_size' "
                         f"must be >= 2, got {flat['batch_size']}")
    if not 0 <= flat["data.test_fraction"] < 1:
        raise ValueError(f"config key 'data.test_fraction' must be in [0, 1), got {flat['data.test_fraction']!r}")
    for key in _UNIT:
        if not 0 <= flat[key] <= 1:
            raise ValueError(f"config key {key!r} must be in [0, 1], got {flat[key]!r}")
    for key in ("optim.b1", "optim.b2"):  # Adam's moment decays; 1 divides by 1 - 1 = 0
        if not 0 <= flat[key] < 1:
            raise ValueError(f"config key {key!r} must be in [0, 1), got {flat[key]!r}")
    if not 0 < flat["loss.real_label"] <= 1:
        raise ValueError(f"config key 'loss.real_label' must be in (0, 1] (1: no label "
                         f"smoothing), got {flat['loss.real_label']!r}")
    if flat["loss.instance_noise_std"] > 0 and flat["loss.instance_noise_steps"] < 1:
        raise ValueError("config key 'loss.instance_noise_steps' must be >= 1 when "
                         "'loss.instance_noise_std' > 0 (the steps over which the noise anneals "
                         f"to 0), got {flat['loss.instance_noise_steps']!r}")
    if flat["optim.schedule"] == "cosine" and flat["optim.warmup_steps"] >= flat["num_steps"]:
        raise ValueError("config key 'optim.warmup_steps' must be < 'num_steps' under "
                         f"optim.schedule 'cosine' (the decay follows the warm-up), got "
                         f"{flat['optim.warmup_steps']} >= {flat['num_steps']}")
    if flat["model.architecture"] == "mlp" and flat["model.depth"] < 1:
        raise ValueError("config key 'model.depth' must be >= 1 for model.architecture 'mlp' "
                         f"(hidden layers; 0 derives it for 'dcgan' only), got {flat['model.depth']!r}")
    if not 0 < flat["augment.ada_target"] < 1:
        raise ValueError(f"config key 'augment.ada_target' must be in (0, 1), got {flat['augment.ada_target']!r}")
    if flat["augment.ada_fixed_p"] > 1:
        raise ValueError(f"config key 'augment.ada_fixed_p' must be <= 1 (< 0: adaptive), got {flat['augment.ada_fixed_p']!r}")
    if flat["loss.name"] in ("wgan", "hinge") and flat["loss.real_label"] != 1.0:
        raise ValueError("config key 'loss.real_label' must be 1.0 with loss.name 'wgan' or 'hinge'")
    if flat["augment.kind"] != "none" and flat["model.architecture"] != "dcgan":
        raise ValueError("config key 'augment.kind' needs image data (model.architecture 'dcgan')")
    if flat["augment.kind"] != "none":  # build the pipeline once: it names what it cannot parse
        from ganaug_jax import augment
        key, build = (("augment.policy", lambda spec: augment.diffaugment(policy=spec))
                      if flat["augment.kind"] == "diffaugment" else
                      ("augment.ada_pipes", lambda spec: augment.ada(pipes=spec)))
        try:
            build(flat[key])
        except ValueError as error:
            raise ValueError(f"config key {key!r}: {error}") from None
