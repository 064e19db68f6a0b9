"""Builds the optional XLA:CPU kernels of the augmentation pipeline (ganaug_jax/augment/_warp_cpu.cc).

Everything else is in pyproject.toml. The extension is optional: where it does not build
(no C++17 compiler), the package installs without it and runs the same pipeline in pure
JAX (ganaug_jax.augment.fast_kernels_available() says which).
"""

import os

import jaxlib
from setuptools import Extension, setup

setup(ext_modules=[Extension(
    "ganaug_jax.augment._warp_cpu",
    sources=["ganaug_jax/augment/_warp_cpu.cc"],
    include_dirs=[os.path.join(os.path.dirname(jaxlib.__file__), "include")],
    extra_compile_args=["-std=c++17", "-O3", "-fvisibility=hidden"],
    language="c++",
    optional=True,
)])
