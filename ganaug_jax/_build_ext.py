"""setuptools' build step for the optional XLA:CPU kernels declared in pyproject.toml
([tool.setuptools] ext-modules: the augmentation pipeline's ganaug_jax/augment/_warp_cpu.cc and
the convolutions' ganaug_jax/models/_layout_cpu.cc). It adds the XLA FFI headers that jaxlib
ships (a build requirement) to each kernel's include path, which pyproject.toml cannot name.

The kernels are optional: where they do not build (no C++17 compiler), the package installs
without them and runs the same code in pure JAX (`augment.fast_kernels_available()` and
`models.convs.fast_kernels_available()` say which). Used at install time only.
"""

import os

from setuptools.command.build_ext import build_ext


class BuildExt(build_ext):
    def build_extensions(self):
        import jaxlib
        include = os.path.join(os.path.dirname(jaxlib.__file__), "include")
        for extension in self.extensions:
            extension.include_dirs.append(include)
        super().build_extensions()
