"""setuptools' build step for the optional XLA:CPU kernels declared in pyproject.toml
([tool.setuptools] ext-modules: the augmentation pipeline's ganaug_jax/augment/_warp_cpu.cc,
the convolutions' ganaug_jax/models/_layout_cpu.cc and ganaug_jax/models/_onednn_cpu.cc). It
adds the XLA FFI headers that jaxlib ships (a build requirement) to each kernel's include path,
and oneDNN's headers and library (the build requirements onednn-devel-cpu-gomp and
onednn-cpu-gomp) to _onednn_cpu's, which pyproject.toml cannot name.

The kernels are optional: where they do not build (no C++17 compiler, no oneDNN wheel for the
platform), the package installs without them and runs the same code in pure JAX
(`augment.fast_kernels_available()`, `models.convs.fast_kernels_available()` and
`models.convs.onednn_available()` say which). Used at install time only.
"""

import importlib.metadata
import os

from setuptools.command.build_ext import build_ext

ONEDNN_EXTENSION = "ganaug_jax.models._onednn_cpu"


def installed_file_dir(distribution: str, name: str) -> str | None:
    """The directory of the file whose path ends with `name` (e.g. 'oneapi/dnnl/dnnl.hpp')
    that the installed `distribution` ships, or None when it is not installed or ships none."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in dist.files or ():
        if file.as_posix().endswith("/" + name):
            return os.path.dirname(os.path.abspath(dist.locate_file(file)))
    return None


class BuildExt(build_ext):
    def build_extensions(self):
        import jaxlib
        include = os.path.join(os.path.dirname(jaxlib.__file__), "include")
        for extension in self.extensions:
            extension.include_dirs.append(include)
        onednn = [e for e in self.extensions if e.name == ONEDNN_EXTENSION]
        headers = installed_file_dir("onednn-devel-cpu-gomp", "oneapi/dnnl/dnnl.hpp")
        library = installed_file_dir("onednn-cpu-gomp", "libdnnl.so.3")
        for extension in onednn:
            if headers is None or library is None:
                print(f"ganaug_jax: not building {ONEDNN_EXTENSION}: oneDNN's wheels "
                      "(onednn-devel-cpu-gomp, onednn-cpu-gomp) are not installed")
                self.extensions.remove(extension)
                continue
            # headers is .../include/oneapi/dnnl; the sources include "oneapi/dnnl/dnnl.hpp"
            extension.include_dirs.append(os.path.dirname(os.path.dirname(headers)))
            # linked by soname; _onednn.py loads that library from the wheel before importing
            extension.extra_link_args.append(os.path.join(library, "libdnnl.so.3"))
        super().build_extensions()
