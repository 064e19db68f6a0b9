// XLA:CPU kernels for the 4x4 stride-2 convolution with padding 1 (convs.py), on oneDNN.
//
//   ganaug_onednn_conv_forward:         x (N, H, W, C), k (4, 4, C, O) -> y (N, H/2, W/2, O)
//   ganaug_onednn_conv_backward_data:   dy (N, H/2, W/2, O), k (4, 4, C, O) -> dx (N, H, W, C)
//   ganaug_onednn_conv_backward_weights: x (N, H, W, C), dy (N, H/2, W/2, O) -> dk (4, 4, C, O)
// float32, row-major NHWC activations and HWIO kernels, H and W even: the products of
// convs.down_conv and of its gradients (up_conv's forward is backward_data with the adjoint
// kernel). oneDNN reads and writes the NHWC activations in place; the kernel is reordered
// to the blocked layout its primitive picked (a few hundred KB per call).
//
// XLA:CPU runs these convolutions on Eigen, whose AVX-512 kernels reach 70-80 % of what
// oneDNN's brgemm convolutions do on a 2-core Zen 4, and needs layout kernels around its
// kernel gradients (benchmarks/NOTES.md, step 12). oneDNN threads with OpenMP over all
// cores, so calls are serialised by one mutex (XLA may issue independent products from two
// threads at once). Primitives are created once per shape and kept.

#include <Python.h>

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "ganaug_jax/csrc/python_module.h"
#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using dnnl::memory;
using Tag = memory::format_tag;
constexpr auto kF32 = memory::data_type::f32;

enum Mode : int64_t { kForward = 0, kBackwardData = 1, kBackwardWeights = 2 };

// (mode, N, H, W, C, O) with H, W the input's (larger) spatial size.
using Key = std::array<int64_t, 6>;

struct Conv {
  memory::desc src, dst, hwio;  // plain layouts of the caller's buffers
  memory::desc blocked;         // the primitive's weights (or diff weights) layout
  dnnl::primitive primitive;
  dnnl::reorder weights_reorder;  // hwio -> blocked (forward, backward_data) or back
  memory blocked_weights;
};

struct State {
  std::mutex mutex;
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  std::map<Key, std::unique_ptr<Conv>> convs;
};

State& GlobalState() {
  static State* state = new State();  // never destroyed: XLA may call during shutdown
  return *state;
}

std::unique_ptr<Conv> MakeConv(const dnnl::engine& engine, const Key& key) {
  const auto [mode, n, h, w, c, o] = key;
  auto conv = std::make_unique<Conv>();
  conv->src = memory::desc({n, c, h, w}, kF32, Tag::nhwc);
  conv->dst = memory::desc({n, o, h / 2, w / 2}, kF32, Tag::nhwc);
  conv->hwio = memory::desc({o, c, 4, 4}, kF32, Tag::hwio);
  const memory::desc any({o, c, 4, 4}, kF32, Tag::any);
  const memory::dims strides{2, 2}, padding{1, 1};
  const auto algorithm = dnnl::algorithm::convolution_direct;
  dnnl::convolution_forward::primitive_desc forward(
      engine, dnnl::prop_kind::forward_training, algorithm, conv->src, any, conv->dst, strides,
      padding, padding);
  if (mode == kForward) {
    conv->blocked = forward.weights_desc();
    conv->primitive = dnnl::convolution_forward(forward);
  } else if (mode == kBackwardData) {
    dnnl::convolution_backward_data::primitive_desc backward(
        engine, algorithm, conv->src, any, conv->dst, strides, padding, padding, forward);
    conv->blocked = backward.weights_desc();
    conv->primitive = dnnl::convolution_backward_data(backward);
  } else {
    dnnl::convolution_backward_weights::primitive_desc backward(
        engine, algorithm, conv->src, any, conv->dst, strides, padding, padding, forward);
    conv->blocked = backward.diff_weights_desc();
    conv->primitive = dnnl::convolution_backward_weights(backward);
  }
  conv->blocked_weights = memory(conv->blocked, engine);
  const memory plain(conv->hwio, engine, DNNL_MEMORY_NONE);
  conv->weights_reorder = mode == kBackwardWeights
                              ? dnnl::reorder(conv->blocked_weights, plain)
                              : dnnl::reorder(plain, conv->blocked_weights);
  return conv;
}

// Runs one product. x: the (N, H, W, C) side, y: the (N, H/2, W/2, O) side, k: (4, 4, C, O);
// `mode` says which of the three is written.
ffi::Error Run(Mode mode, const Key& key, float* x, float* y, float* k) {
  State& state = GlobalState();
  std::lock_guard<std::mutex> lock(state.mutex);
  try {
    std::unique_ptr<Conv>& slot = state.convs[key];
    if (!slot) slot = MakeConv(state.engine, key);
    Conv& conv = *slot;
    memory src(conv.src, state.engine, x), dst(conv.dst, state.engine, y),
        weights(conv.hwio, state.engine, k);
    if (mode == kBackwardWeights) {
      conv.primitive.execute(state.stream, {{DNNL_ARG_SRC, src},
                                            {DNNL_ARG_DIFF_DST, dst},
                                            {DNNL_ARG_DIFF_WEIGHTS, conv.blocked_weights}});
      conv.weights_reorder.execute(state.stream, conv.blocked_weights, weights);
    } else {
      conv.weights_reorder.execute(state.stream, weights, conv.blocked_weights);
      if (mode == kForward) {
        conv.primitive.execute(state.stream, {{DNNL_ARG_SRC, src},
                                              {DNNL_ARG_WEIGHTS, conv.blocked_weights},
                                              {DNNL_ARG_DST, dst}});
      } else {
        conv.primitive.execute(state.stream, {{DNNL_ARG_DIFF_DST, dst},
                                              {DNNL_ARG_WEIGHTS, conv.blocked_weights},
                                              {DNNL_ARG_DIFF_SRC, src}});
      }
    }
    state.stream.wait();
  } catch (const dnnl::error& error) {
    return ffi::Error::Internal(std::string("oneDNN convolution failed: ") + error.what());
  }
  return ffi::Error::Success();
}

ffi::Error BadShapes() {
  return ffi::Error::InvalidArgument(
      "ganaug oneDNN convolution: expected (N, H, W, C), (N, H/2, W/2, O), (4, 4, C, O)");
}

using F32 = ffi::Buffer<ffi::F32>;
using F32Result = ffi::ResultBuffer<ffi::F32>;

// The key of a product, or nullopt when the shapes are not what the Python side promises.
std::optional<Key> MakeKey(Mode mode, ffi::Span<const int64_t> big, ffi::Span<const int64_t> small,
                          ffi::Span<const int64_t> kernel) {
  if (big.size() != 4 || small.size() != 4 || kernel.size() != 4 || big[1] % 2 ||
      big[2] % 2 || small[0] != big[0] || small[1] * 2 != big[1] || small[2] * 2 != big[2] ||
      kernel[0] != 4 || kernel[1] != 4 || kernel[2] != big[3] || kernel[3] != small[3]) {
    return std::nullopt;
  }
  return Key{mode, big[0], big[1], big[2], big[3], small[3]};
}

ffi::Error ForwardImpl(F32 x, F32 k, F32Result y) {
  const auto key = MakeKey(kForward, x.dimensions(), y->dimensions(), k.dimensions());
  if (!key) return BadShapes();
  return Run(kForward, *key, x.typed_data(), y->typed_data(), k.typed_data());
}

ffi::Error BackwardDataImpl(F32 dy, F32 k, F32Result dx) {
  const auto key = MakeKey(kBackwardData, dx->dimensions(), dy.dimensions(), k.dimensions());
  if (!key) return BadShapes();
  return Run(kBackwardData, *key, dx->typed_data(), dy.typed_data(), k.typed_data());
}

ffi::Error BackwardWeightsImpl(F32 x, F32 dy, F32Result dk) {
  const auto key = MakeKey(kBackwardWeights, x.dimensions(), dy.dimensions(), dk->dimensions());
  if (!key) return BadShapes();
  return Run(kBackwardWeights, *key, x.typed_data(), dy.typed_data(), dk->typed_data());
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(GanaugOnednnForward, ForwardImpl,
                              ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<ffi::Buffer<ffi::F32>>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(GanaugOnednnBackwardData, BackwardDataImpl,
                              ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<ffi::Buffer<ffi::F32>>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(GanaugOnednnBackwardWeights, BackwardWeightsImpl,
                              ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<ffi::Buffer<ffi::F32>>());

static PyObject* Handlers(PyObject*, PyObject*) {
  return ganaug::HandlerDict(
      {{"ganaug_onednn_conv_forward", reinterpret_cast<void*>(GanaugOnednnForward)},
       {"ganaug_onednn_conv_backward_data", reinterpret_cast<void*>(GanaugOnednnBackwardData)},
       {"ganaug_onednn_conv_backward_weights",
        reinterpret_cast<void*>(GanaugOnednnBackwardWeights)}});
}

static PyMethodDef kMethods[] = {
    {"handlers", Handlers, METH_NOARGS, "XLA FFI handler capsules by target name."},
    {nullptr, nullptr, 0, nullptr}};

static PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "_onednn_cpu",
                              "XLA:CPU oneDNN kernels of the 4x4 stride-2 convolutions.", -1,
                              kMethods};

PyMODINIT_FUNC PyInit__onednn_cpu(void) { return PyModule_Create(&kModule); }
