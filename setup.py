"""Builds the optional XLA:CPU kernels: the augmentation pipeline's (ganaug_jax/augment/_warp_cpu.cc)
and the convolutions' kernel-gradient layout (ganaug_jax/models/_layout_cpu.cc).

Everything else is in pyproject.toml. The extension is optional: where it does not build
(no C++17 compiler), the package installs without it and runs the same pipeline in pure
JAX (ganaug_jax.augment.fast_kernels_available() says which).
"""

import os

import jaxlib
from setuptools import Extension, setup

_HEADERS = ["ganaug_jax/csrc/parallel_for.h", "ganaug_jax/csrc/python_module.h"]


def _kernel(name: str, source: str) -> Extension:
    return Extension(
        name,
        sources=[source],
        depends=_HEADERS,
        include_dirs=[os.path.dirname(os.path.abspath(__file__)),
                      os.path.join(os.path.dirname(jaxlib.__file__), "include")],
        extra_compile_args=["-std=c++17", "-O3", "-fvisibility=hidden"],
        language="c++",
        optional=True,
    )


setup(ext_modules=[
    _kernel("ganaug_jax.augment._warp_cpu", "ganaug_jax/augment/_warp_cpu.cc"),
    _kernel("ganaug_jax.models._layout_cpu", "ganaug_jax/models/_layout_cpu.cc"),
])
