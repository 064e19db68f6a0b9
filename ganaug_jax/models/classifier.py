"""A small convolutional classifier for the downstream protocol and the domain feature space.

`Classifier(num_classes)` maps images (N, H, W, C) float32 in [-1, 1] (H, W >= 8) to
(logits (N, K) float32, features (N, F) float32): 3x3 convolutions with stride-2 stages down to
4x4 or less, then a dense feature layer (the space used for Fréchet distance, precision/recall,
memorisation and the privacy filter). No batch norm: a trained classifier is a plain params
pytree, so inference does not depend on the batch. Dropout only with train=True (rng 'dropout').
"""

import flax.linen as nn
import jax.numpy as jnp


class Classifier(nn.Module):
    num_classes: int
    width: int = 32
    features: int = 128
    dropout: float = 0.3

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        h = nn.relu(nn.Conv(self.width, (3, 3))(x))
        channels, size = self.width, x.shape[1]
        while size > 4:
            channels *= 2
            h = nn.relu(nn.Conv(channels, (3, 3), strides=2)(h))
            size = (size + 1) // 2
        h = h.reshape(h.shape[0], -1)
        h = nn.Dropout(self.dropout, deterministic=not train)(h)
        features = nn.relu(nn.Dense(self.features)(h))
        logits = nn.Dense(self.num_classes)(
            nn.Dropout(self.dropout, deterministic=not train)(features))
        return logits.astype(jnp.float32), features.astype(jnp.float32)
