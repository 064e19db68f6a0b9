// XLA:CPU kernel for the kernel gradient of the 4x4 stride-2 convolutions (see _layout.py).
//
//   ganaug_padded_space_to_depth: x (N, H, W, C), H and W even, 2- or 4-byte elements
//     -> s (4C, H/2 + 1, W/2 + 1, N), x's dtype, both row-major,
//        s[(2 rh + rw) C + c, i, j, n] = x[n, 2i + rh - 1, 2j + rw - 1, c] (0 outside x):
//        the once-padded x's space-to-depth with the batch minor, the operand XLA:CPU's
//        Eigen convolution wants when the batch is the contracted feature dimension
//        (convs._kernel_grad, form 'conv').
//
// XLA fuses the same pad, space-to-depth and transpose into one loop that walks the output
// in order and reads x one element per cache line (2-8 GB/s measured). This kernel copies the
// N x C block of one source pixel into a contiguous buffer (whole cache lines), then
// transposes it in 16 x 16 tiles (4 x 4 SSE sub-blocks for 4-byte elements) into C rows of
// N; threaded over (phase, output row) on XLA's intra-op pool (8-40 GB/s measured,
// benchmarks/NOTES.md step 9). It only moves elements: its output equals the jnp reference
// bit for bit, in any dtype of its width.

#include <Python.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>

#if defined(__SSE2__)
#include <xmmintrin.h>
#endif

#include "ganaug_jax/csrc/parallel_for.h"
#include "ganaug_jax/csrc/python_module.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kTile = 16;

// One tile: dst[c * dst_stride + n] = block[n * cols + c] for n in [n0, n1), c in [c0, c1).
template <typename T>
void TransposeTile(const T* block, int64_t cols, int64_t n0, int64_t n1, int64_t c0,
                   int64_t c1, T* dst, int64_t dst_stride) {
  for (int64_t c = c0; c < c1; ++c) {
    T* out = dst + c * dst_stride;
    const T* in = block + c;
    for (int64_t n = n0; n < n1; ++n) out[n] = in[n * cols];
  }
}

#if defined(__SSE2__)
// 4-byte elements: 4 x 4 sub-blocks through SSE registers, the edges element by element.
template <>
void TransposeTile<uint32_t>(const uint32_t* block, int64_t cols, int64_t n0, int64_t n1,
                             int64_t c0, int64_t c1, uint32_t* dst, int64_t dst_stride) {
  const int64_t n4 = n0 + (n1 - n0) / 4 * 4, c4 = c0 + (c1 - c0) / 4 * 4;
  const float* in = reinterpret_cast<const float*>(block);
  float* out = reinterpret_cast<float*>(dst);
  for (int64_t c = c0; c < c4; c += 4) {
    for (int64_t n = n0; n < n4; n += 4) {
      __m128 r0 = _mm_loadu_ps(in + n * cols + c), r1 = _mm_loadu_ps(in + (n + 1) * cols + c);
      __m128 r2 = _mm_loadu_ps(in + (n + 2) * cols + c);
      __m128 r3 = _mm_loadu_ps(in + (n + 3) * cols + c);
      _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
      _mm_storeu_ps(out + c * dst_stride + n, r0);
      _mm_storeu_ps(out + (c + 1) * dst_stride + n, r1);
      _mm_storeu_ps(out + (c + 2) * dst_stride + n, r2);
      _mm_storeu_ps(out + (c + 3) * dst_stride + n, r3);
    }
  }
  for (int64_t c = c0; c < c1; ++c) {
    uint32_t* row = dst + c * dst_stride;
    const uint32_t* from = block + c;
    for (int64_t n = (c < c4 ? n4 : n0); n < n1; ++n) row[n] = from[n * cols];
  }
}
#endif

// dst[c * dst_stride + n] = src[n * src_stride + c] for n < rows, c < cols. The rows are
// first copied whole into `block` (rows x cols, contiguous): x's batch stride is often a
// power of two, so reading a column of tiles straight from x maps every row to the same
// cache set; from the block every tile is cache-resident.
template <typename T>
void Transpose(const T* src, int64_t src_stride, int64_t rows, int64_t cols, T* block, T* dst,
               int64_t dst_stride) {
  for (int64_t n = 0; n < rows; ++n) {
    std::memcpy(block + n * cols, src + n * src_stride, cols * sizeof(T));
  }
  for (int64_t n0 = 0; n0 < rows; n0 += kTile) {
    for (int64_t c0 = 0; c0 < cols; c0 += kTile) {
      TransposeTile(block, cols, n0, std::min(rows, n0 + kTile), c0, std::min(cols, c0 + kTile),
                    dst, dst_stride);
    }
  }
}

// The whole op on elements of type T (a same-sized unsigned integer: it only moves bits).
template <typename T>
void PaddedSpaceToDepth(ffi::ThreadPool& pool, const T* in, int64_t n, int64_t h, int64_t w,
                        int64_t c, T* out) {
  const int64_t hp = h / 2 + 1, wp = w / 2 + 1;
  const int64_t plane = hp * wp * n;  // one (phase, channel) slice of the output
  // Item (phase, i): row i of the C output planes of phase (rh, rw).
  ganaug::ParallelFor(pool, 4 * hp, [&](int64_t item) {
    // uninitialised: Transpose overwrites all of it before reading
    std::unique_ptr<T[]> block(new T[n * c]);
    const int64_t phase = item / hp, i = item % hp;
    const int64_t rh = phase / 2, rw = phase % 2;
    const int64_t y = 2 * i + rh - 1;
    T* rows = out + phase * c * plane + i * wp * n;  // + k * plane for channel k
    for (int64_t j = 0; j < wp; ++j) {
      const int64_t col = 2 * j + rw - 1;
      if (y < 0 || y >= h || col < 0 || col >= w) {
        for (int64_t k = 0; k < c; ++k) std::memset(rows + k * plane + j * n, 0, n * sizeof(T));
      } else {
        Transpose(in + (y * w + col) * c, h * w * c, n, c, block.get(), rows + j * n, plane);
      }
    }
  });
}

ffi::Error PaddedSpaceToDepthImpl(ffi::ThreadPool pool, ffi::AnyBuffer x,
                                  ffi::Result<ffi::AnyBuffer> s) {
  const auto dims = x.dimensions();
  if (dims.size() != 4 || dims[1] % 2 != 0 || dims[2] % 2 != 0) {
    return ffi::Error::InvalidArgument(
        "ganaug_padded_space_to_depth: x must be (N, H, W, C) with H and W even");
  }
  const int64_t n = dims[0], h = dims[1], w = dims[2], c = dims[3];
  const auto out_dims = s->dimensions();
  if (out_dims.size() != 4 || out_dims[0] != 4 * c || out_dims[1] != h / 2 + 1 ||
      out_dims[2] != w / 2 + 1 || out_dims[3] != n || s->element_type() != x.element_type()) {
    return ffi::Error::InvalidArgument(
        "ganaug_padded_space_to_depth: s must be (4C, H/2 + 1, W/2 + 1, N), x's dtype");
  }
  switch (ffi::ByteWidth(x.element_type())) {
    case 4:
      PaddedSpaceToDepth(pool, static_cast<const uint32_t*>(x.untyped_data()), n, h, w, c,
                         static_cast<uint32_t*>(s->untyped_data()));
      return ffi::Error::Success();
    case 2:
      PaddedSpaceToDepth(pool, static_cast<const uint16_t*>(x.untyped_data()), n, h, w, c,
                         static_cast<uint16_t*>(s->untyped_data()));
      return ffi::Error::Success();
    default:
      return ffi::Error::InvalidArgument(
          "ganaug_padded_space_to_depth: x must have 2- or 4-byte elements");
  }
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(GanaugPaddedSpaceToDepth, PaddedSpaceToDepthImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>());

static PyObject* Handlers(PyObject*, PyObject*) {
  return ganaug::HandlerDict({{"ganaug_padded_space_to_depth",
                               reinterpret_cast<void*>(GanaugPaddedSpaceToDepth)}});
}

static PyMethodDef kMethods[] = {
    {"handlers", Handlers, METH_NOARGS, "XLA FFI handler capsules by target name."},
    {nullptr, nullptr, 0, nullptr}};

static PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "_layout_cpu",
                              "XLA:CPU layout kernel of the convolutions' kernel gradients.",
                              -1, kMethods};

PyMODINIT_FUNC PyInit__layout_cpu(void) { return PyModule_Create(&kModule); }
