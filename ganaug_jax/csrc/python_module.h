// The Python side of the package's XLA:CPU FFI extensions: handlers() -> {target: capsule}.
#ifndef GANAUG_JAX_CSRC_PYTHON_MODULE_H_
#define GANAUG_JAX_CSRC_PYTHON_MODULE_H_

#include <Python.h>

#include <initializer_list>
#include <utility>

namespace ganaug {

// A new dict mapping each target name to a capsule of its XLA FFI handler (what
// jax.ffi.register_ffi_target takes), or nullptr with a Python error set.
inline PyObject* HandlerDict(std::initializer_list<std::pair<const char*, void*>> entries) {
  PyObject* dict = PyDict_New();
  if (dict == nullptr) return nullptr;
  for (const auto& [name, fn] : entries) {
    PyObject* capsule = PyCapsule_New(fn, nullptr, nullptr);
    if (capsule == nullptr || PyDict_SetItemString(dict, name, capsule) < 0) {
      Py_XDECREF(capsule);
      Py_DECREF(dict);
      return nullptr;
    }
    Py_DECREF(capsule);
  }
  return dict;
}

}  // namespace ganaug

#endif  // GANAUG_JAX_CSRC_PYTHON_MODULE_H_
