// XLA:CPU kernels for the fused pipeline: one resample plus one colour matrix per image,
// in one pass over the output, as XLA FFI handlers (see _warp.py for the Python side).
//
// XLA:CPU lowers the bilinear 2x2 patch gather of _resample.py to a scalar loop that runs
// far below memory speed; these kernels compute exactly the same formulas (_resample.py and
// _colour.apply are the reference), threaded over row blocks on XLA's intra-op pool.
//
//   ganaug_warp: images (..., H, W, C), geometry (..., 3, 3), colour (..., C+1, C+1) or
//     (..., 0) for none, mean_slope (..., C, C) or (..., 0) for none, active (...) bool
//     -> out (..., H, W, C) = colour @ [r, 1] + mean_slope @ means, r = resample(images,
//        geometry), means (..., C) = the per-image channel means of r (what contrast needs:
//        a colour matrix that depends on them is affine in them through its offset).
//     Images whose `active` is false are copied unchanged (out = images, bit for bit; their
//     means are the input's): the samples a pipeline applies no op to.
// Attributes: border (0 reflect, 1 constant, 2 edge), interpolation (0 bilinear, 1 nearest),
// fill (float, the constant border's value).

#include <Python.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <type_traits>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#include <xmmintrin.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define GANAUG_AVX2_PATH 1  // compiled for AVX2 with a target attribute, used where the CPU has it
#endif

#include "ganaug_jax/csrc/parallel_for.h"
#include "ganaug_jax/csrc/python_module.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using ganaug::ParallelFor;

namespace {

enum Border : int32_t { kReflect = 0, kConstant = 1, kEdge = 2 };
enum Interpolation : int32_t { kBilinear = 0, kNearest = 1 };

struct Geometry {
  int64_t images, height, width, channels;
};

constexpr int64_t kMaxChannels = 16;
constexpr int64_t kTile = 128;
constexpr float kAhead = 2.0f;

// floor for finite floats of moderate size, without a libm call (baseline x86-64 has no
// SSE4.1 round instruction).
inline float Floor(float v) {
  const float t = static_cast<float>(static_cast<int32_t>(v));
  return t > v ? t - 1.0f : t;
}

// Round half to even (jnp.round) for v >= 0.
inline float RoundHalfEven(float v) {
  const float r = Floor(v + 0.5f);
  if (r - v == 0.5f && static_cast<int32_t>(r) % 2 != 0) return r - 1.0f;
  return r;
}

// Half-sample symmetric reflection into [-0.5, size - 0.5] (_resample._reflect).
inline float Reflect(float coord, float size) {
  const float period = 2.0f * size;
  float t = coord + 0.5f;
  t = t - period * Floor(t * (1.0f / period));
  if (t > size) t = period - t;
  return t - 0.5f;
}

// maxps / minps on one lane: b when either operand is NaN (std::max and std::min return a).
inline float MaxPs(float a, float b) { return a > b ? a : b; }
inline float MinPs(float a, float b) { return a < b ? a : b; }

// Share of a bilinear sample inside the image along one axis (_resample._inside_weight), as
// the vector paths compute it (a NaN coordinate counts as inside).
inline float InsideWeight(float coord, float size) {
  const float outside = MaxPs(MaxPs(-coord, coord - (size - 1.0f)), 0.0f);
  return MinPs(MaxPs(1.0f - outside, 0.0f), 1.0f);
}

// One output row's source coordinates, per thread and reused from call to call (a work item
// is one small image at 32x32: allocating these per item cost more than the item).
// inside_x/y are only read under the constant border, which writes them for every pixel.
struct RowScratch {
  std::vector<float> sx, sy, inside_x, inside_y, fx, fy;
  std::vector<int32_t> offset;

  void Reserve(int64_t w) {
    if (static_cast<int64_t>(sx.size()) >= w) return;
    for (std::vector<float>* v : {&sx, &sy, &fx, &fy}) v->resize(w);
    inside_x.assign(w, 1.0f);
    inside_y.assign(w, 1.0f);
    offset.resize(w);
  }
};

#if defined(GANAUG_AVX2_PATH)
// The AVX2 paths below give the same bits as the 4-lane ones; GANAUG_WARP_NO_AVX2 set in the
// environment when the module loads turns them off (tests compare the two).
bool UseAvx2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && std::getenv("GANAUG_WARP_NO_AVX2") == nullptr;
}
const bool kCpuHasAvx2 = UseAvx2();

// [w0 w0 w0 w0 w1 w1 w1 w1] from weights[0..1]: one load and one permute (a broadcast per
// 128-bit half cost three instructions per weight, and 1 - w was a scalar op each).
[[gnu::target("avx2"), gnu::always_inline]] inline __m256 PairWeights(const float* weights) {
  const __m128 two = _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(weights)));
  return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(two),
                                  _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1));
}

// One pair of BilinearPairs3: the colour-transformed pixels x and x + 1 of the row in raw
// lanes [r0 g0 b0 - r1 g1 b1 -], their sum added to *total; false (nothing done) if a patch
// is not readable with 4-float loads (checked only if kCheckReadable).
template <int32_t kBorder, bool kCheckReadable>
[[gnu::target("avx2"), gnu::always_inline]] inline bool BilinearPair3(
    const float* image, const float* image_end, int64_t w, int64_t x, const int32_t* row_offset,
    const float* row_fx, const float* row_fy, const float* row_inside_x,
    const float* row_inside_y, float fill, const float* colour, const __m256* columns,
    __m256 offset, __m128* total, __m256* result) {
  const float* a0 = image + static_cast<int64_t>(row_offset[x]) * 3;
  const float* a1 = image + static_cast<int64_t>(row_offset[x + 1]) * 3;
  const float* b0 = a0 + w * 3;
  const float* b1 = a1 + w * 3;
  if (kCheckReadable && (b0 + 7 > image_end || b1 + 7 > image_end)) return false;
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 vfx = PairWeights(row_fx + x), vfy = PairWeights(row_fy + x);
  const __m256 vgx = _mm256_sub_ps(one, vfx), vgy = _mm256_sub_ps(one, vfy);
  const __m256 top = _mm256_add_ps(
      _mm256_mul_ps(_mm256_loadu2_m128(a1, a0), vgx),
      _mm256_mul_ps(_mm256_loadu2_m128(a1 + 3, a0 + 3), vfx));
  const __m256 bottom = _mm256_add_ps(
      _mm256_mul_ps(_mm256_loadu2_m128(b1, b0), vgx),
      _mm256_mul_ps(_mm256_loadu2_m128(b1 + 3, b0 + 3), vfx));
  __m256 p = _mm256_add_ps(_mm256_mul_ps(top, vgy), _mm256_mul_ps(bottom, vfy));
  if constexpr (kBorder == kConstant) {
    const float in0 = row_inside_x[x] * row_inside_y[x];
    const float in1 = row_inside_x[x + 1] * row_inside_y[x + 1];
    p = _mm256_add_ps(
        _mm256_mul_ps(p, _mm256_setr_m128(_mm_set1_ps(in0), _mm_set1_ps(in1))),
        _mm256_setr_m128(_mm_set1_ps(fill * (1.0f - in0)), _mm_set1_ps(fill * (1.0f - in1))));
  }
  *total = _mm_add_ps(_mm_add_ps(*total, _mm256_castps256_ps128(p)), _mm256_extractf128_ps(p, 1));
  __m256 v = p;
  if (colour != nullptr) {
    v = offset;
    v = _mm256_add_ps(v, _mm256_mul_ps(_mm256_shuffle_ps(p, p, 0x00), columns[0]));
    v = _mm256_add_ps(v, _mm256_mul_ps(_mm256_shuffle_ps(p, p, 0x55), columns[1]));
    v = _mm256_add_ps(v, _mm256_mul_ps(_mm256_shuffle_ps(p, p, 0xAA), columns[2]));
  }
  *result = v;
  return true;
}

// 3-channel bilinear output pixels two at a time (one per 128-bit half of a 256-bit vector),
// with the same products in the same order per lane as WarpRows' 4-lane path, so the same
// bits. Starts at pixel x of output row y and stops before x_end, or before a patch that is
// not readable with 4-float loads. Four pixels (two pairs) are stored as 12 packed floats (one
// 8-float and one 4-float store, no overlap); a last pair as 8 floats, which spill 2 onto the
// next pixel (so not on a row's last pixel), or as 4 + 2 floats before an unreadable patch.
// Returns where it stopped; the pixels' sum is added to *row_total in pixel order. No FMA:
// a*b+c stays two roundings. kCheckReadable false: the caller knows every patch is readable.
template <int32_t kBorder, bool kCheckReadable>
[[gnu::target("avx2")]] int64_t BilinearPairs3(
    const float* image, const float* image_end, int64_t w, int64_t y, int64_t x,
    int64_t x_end, const int32_t* row_offset, const float* row_fx, const float* row_fy,
    const float* row_inside_x, const float* row_inside_y, float fill, const float* colour,
    const __m128* colour_columns, const __m128* colour_offset, __m128* row_total, float* out) {
  __m256 columns[3], offset = _mm256_setzero_ps();
  if (colour != nullptr) {
    for (int k = 0; k < 3; ++k) columns[k] = _mm256_broadcast_ps(&colour_columns[k]);
    offset = _mm256_broadcast_ps(colour_offset);
  }
  // Lanes of one pair: [r0 g0 b0 - r1 g1 b1 -]. pack: the pair as 6 leading floats; tail:
  // the next pair's r0 g0 into lanes 6, 7; rest: the next pair's b0 r1 g1 b1 into lanes 0-3.
  const __m256i pack = _mm256_setr_epi32(0, 1, 2, 4, 5, 6, 7, 3);
  const __m256i tail = _mm256_setr_epi32(0, 0, 0, 0, 0, 0, 0, 1);
  const __m256i rest = _mm256_setr_epi32(2, 4, 5, 6, 0, 0, 0, 0);
  __m128 total = *row_total;
  float* const row_out = out + y * w * 3;
  // The arguments of BilinearPair3 that do not change along the row.
#define GANAUG_PAIR(at, result)                                                           \
  BilinearPair3<kBorder, kCheckReadable>(image, image_end, w, at, row_offset, row_fx, row_fy, \
                                         row_inside_x, row_inside_y, fill, colour, columns,  \
                                         offset, &total, result)
  for (; x + 4 <= x_end; x += 4) {
    __m256 first, second;
    if (!GANAUG_PAIR(x, &first)) break;
    if (!GANAUG_PAIR(x + 2, &second)) {  // the first pair alone: its 6 floats, no spill
      const __m256 packed = _mm256_permutevar8x32_ps(first, pack);
      _mm_storeu_ps(row_out + x * 3, _mm256_castps256_ps128(packed));
      _mm_storel_pi(reinterpret_cast<__m64*>(row_out + x * 3 + 4),
                    _mm256_extractf128_ps(packed, 1));
      *row_total = total;
      return x + 2;
    }
    const __m256 low = _mm256_blend_ps(_mm256_permutevar8x32_ps(first, pack),
                                       _mm256_permutevar8x32_ps(second, tail), 0xC0);
    _mm256_storeu_ps(row_out + x * 3, low);
    _mm_storeu_ps(row_out + x * 3 + 8,
                  _mm256_castps256_ps128(_mm256_permutevar8x32_ps(second, rest)));
  }
  for (; x + 2 <= x_end && x + 2 < w; x += 2) {
    __m256 v;
    if (!GANAUG_PAIR(x, &v)) break;
    _mm256_storeu_ps(row_out + x * 3, _mm256_permutevar8x32_ps(v, pack));
  }
#undef GANAUG_PAIR
  *row_total = total;
  return x;
}

// WarpRows' per-row source coordinates (its 4-lane loop) 8 pixels at a time: the same
// operations per lane, so the same values. Fills the row arrays from pixel x while x + 8 <=
// x_end and returns where it stopped. m: the 2x3 map; ys: the row's centred y.
struct RowArrays {
  float *sx, *sy, *inside_x, *inside_y, *fx, *fy;
  int32_t* offset;
};

// Reflect and InsideWeight on 8 lanes, as the 4-lane loop computes them.
[[gnu::target("avx2")]] inline __m256 Reflect8(__m256 coord, __m256 size) {
  const __m256 one = _mm256_set1_ps(1.0f), half = _mm256_set1_ps(0.5f);
  const __m256 period = _mm256_add_ps(size, size);
  __m256 t = _mm256_add_ps(coord, half);
  const __m256 q = _mm256_mul_ps(t, _mm256_div_ps(one, period));
  __m256 floor_q = _mm256_cvtepi32_ps(_mm256_cvttps_epi32(q));
  floor_q = _mm256_sub_ps(floor_q, _mm256_and_ps(_mm256_cmp_ps(floor_q, q, _CMP_GT_OQ), one));
  t = _mm256_sub_ps(t, _mm256_mul_ps(period, floor_q));
  const __m256 over = _mm256_cmp_ps(t, size, _CMP_GT_OQ);
  t = _mm256_or_ps(_mm256_and_ps(over, _mm256_sub_ps(period, t)), _mm256_andnot_ps(over, t));
  return _mm256_sub_ps(t, half);
}

[[gnu::target("avx2")]] inline __m256 InsideWeight8(__m256 coord, __m256 last) {
  const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
  const __m256 outside = _mm256_max_ps(
      _mm256_max_ps(_mm256_sub_ps(zero, coord), _mm256_sub_ps(coord, last)), zero);
  return _mm256_min_ps(_mm256_max_ps(_mm256_sub_ps(one, outside), zero), one);
}

template <int32_t kBorder>
[[gnu::target("avx2")]] int64_t Coordinates8(const float* m, float cx, float cy, float fw,
                                             float fh, float ys, int64_t x, int64_t x_end,
                                             const float* image, int64_t c,
                                             int64_t prefetch_shift, const RowArrays& row) {
  const __m256 zero = _mm256_setzero_ps();
  const __m256 vw = _mm256_set1_ps(fw), vh = _mm256_set1_ps(fh);
  const __m256 wmax = _mm256_set1_ps(fw - 1.0f), hmax = _mm256_set1_ps(fh - 1.0f);
  const __m256 wtap = _mm256_set1_ps(fw - 2.0f), htap = _mm256_set1_ps(fh - 2.0f);
  const __m256 vys = _mm256_set1_ps(ys);
  const __m256 bx = _mm256_add_ps(_mm256_mul_ps(_mm256_set1_ps(m[1]), vys), zero);
  const __m256 by = _mm256_mul_ps(_mm256_set1_ps(m[4]), vys);
  __m256 columns = _mm256_add_ps(_mm256_set1_ps(static_cast<float>(x)),
                                 _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7));
  const __m256 eight = _mm256_set1_ps(8.0f);
  for (; x + 8 <= x_end; x += 8, columns = _mm256_add_ps(columns, eight)) {
    const __m256 xs = _mm256_sub_ps(columns, _mm256_set1_ps(cx));
    __m256 sx = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(
        _mm256_mul_ps(_mm256_set1_ps(m[0]), xs), bx), _mm256_set1_ps(m[2])), _mm256_set1_ps(cx));
    __m256 sy = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(
        _mm256_mul_ps(_mm256_set1_ps(m[3]), xs), by), _mm256_set1_ps(m[5])), _mm256_set1_ps(cy));
    if constexpr (kBorder == kReflect) {
      sx = Reflect8(sx, vw);
      sy = Reflect8(sy, vh);
    } else if constexpr (kBorder == kConstant) {
      _mm256_storeu_ps(&row.inside_x[x], InsideWeight8(sx, wmax));
      _mm256_storeu_ps(&row.inside_y[x], InsideWeight8(sy, hmax));
    }
    sx = _mm256_min_ps(_mm256_max_ps(sx, zero), wmax);
    sy = _mm256_min_ps(_mm256_max_ps(sy, zero), hmax);
    _mm256_storeu_ps(&row.sx[x], sx);
    _mm256_storeu_ps(&row.sy[x], sy);
    const __m256 x0 = _mm256_min_ps(_mm256_cvtepi32_ps(_mm256_cvttps_epi32(sx)), wtap);
    const __m256 y0 = _mm256_min_ps(_mm256_cvtepi32_ps(_mm256_cvttps_epi32(sy)), htap);
    _mm256_storeu_ps(&row.fx[x], _mm256_sub_ps(sx, x0));
    _mm256_storeu_ps(&row.fy[x], _mm256_sub_ps(sy, y0));
    const __m256i offsets = _mm256_cvttps_epi32(_mm256_add_ps(_mm256_mul_ps(y0, vw), x0));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(&row.offset[x]), offsets);
    for (int lane : {0, 4}) {  // as the 4-lane loop: one prefetch per 4 pixels
      const uintptr_t ahead = reinterpret_cast<uintptr_t>(image) +
          static_cast<uintptr_t>(row.offset[x + lane] + prefetch_shift) * c * 4;
      _mm_prefetch(reinterpret_cast<const char*>(ahead), _MM_HINT_T0);
    }
  }
  return x;
}
#endif

// Resamples rows [row_begin, row_end) of one image, writes colour @ [pixel, 1] to `out`
// (row-major, W * C per row) and adds the resampled (pre-colour) values to sums[0..C).
// kC is the channel count, or 0 for `g.channels`. `image_end` bounds the whole input
// buffer (the vector path reads one float past a 2x2 patch).
template <int kC, int32_t kBorder, int32_t kInterpolation>
void WarpRows(const Geometry& g, const float* image, const float* image_end, const float* m,
              const float* colour, float fill, int64_t row_begin, int64_t row_end, float* out,
              double* sums) {
  const int64_t h = g.height, w = g.width, c = kC > 0 ? kC : g.channels;
  const float fw = static_cast<float>(w), fh = static_cast<float>(h);
  const float cx = (fw - 1.0f) / 2.0f, cy = (fh - 1.0f) / 2.0f;
  float pixel[kC > 0 ? kC : kMaxChannels];
  float row_total[kC > 0 ? kC : kMaxChannels];
  // Summed here and written to `sums` once: neighbouring work items' sums share cache lines.
  double local_sums[kC > 0 ? kC : kMaxChannels] = {};
#if defined(__SSE2__)
  __m128 colour_columns[3], colour_offset = _mm_setzero_ps();
  if constexpr (kC == 3) {
    if (colour != nullptr) {
      for (int k = 0; k < 3; ++k) {
        colour_columns[k] = _mm_setr_ps(colour[k], colour[4 + k], colour[8 + k], 0.0f);
      }
      colour_offset = _mm_setr_ps(colour[3], colour[7], colour[11], 0.0f);
    }
  }
#endif
  // Source coordinates of one output row, computed in a branch-free loop first (which the
  // compiler vectorises), then used pixel by pixel.
  thread_local RowScratch scratch;
  scratch.Reserve(w);
  float* const row_sx = scratch.sx.data();
  float* const row_sy = scratch.sy.data();
  float* const row_inside_x = scratch.inside_x.data();
  float* const row_inside_y = scratch.inside_y.data();
  float* const row_fx = scratch.fx.data();
  float* const row_fy = scratch.fy.data();
  int32_t* const row_offset = scratch.offset.data();
  const float m0 = m[0], m1 = m[1], m2 = m[2], m3 = m[3], m4 = m[4], m5 = m[5];
  // Source pixels kAhead output rows below, plus one row (the patch's bottom row).
  // (0 for a non-finite or huge matrix: only an address hint, but lround must not overflow.)
  const bool moderate = std::fabs(m1) < 1e6f && std::fabs(m4) < 1e6f;
  [[maybe_unused]] const int64_t prefetch_shift = !moderate ? 0 :
      static_cast<int64_t>(std::lround(kAhead * m4 + 1.0f)) * w +
      static_cast<int64_t>(std::lround(kAhead * m1));
  // Output tiles of kTile columns keep each tile's source region in cache (a rotated row
  // reads a diagonal band of the input); 128 measured best against 32, 64, 256 and whole
  // rows, from 64x64 to 512x512 (narrower tiles repeat the per-row set-up more often).
  for (int64_t x_begin = 0; x_begin < w; x_begin += kTile) {
  const int64_t x_end = std::min(w, x_begin + kTile);
  for (int64_t y = row_begin; y < row_end; ++y) {
    const float ys = static_cast<float>(y) - cy;
    // Per output pixel: source coordinates, border handling, tap offset and weights.
    auto coordinates = [&](int64_t x, float sx, float sy) {
      if constexpr (kBorder == kReflect) {
        sx = Reflect(sx, fw);
        sy = Reflect(sy, fh);
      } else if constexpr (kBorder == kConstant) {
        row_inside_x[x] = InsideWeight(sx, fw);
        row_inside_y[x] = InsideWeight(sy, fh);
      }
      // NaN goes to 0, as in the vector paths: the tap read below stays inside the image
      // whatever the matrix holds.
      sx = MinPs(MaxPs(sx, 0.0f), fw - 1.0f);
      sy = MinPs(MaxPs(sy, 0.0f), fh - 1.0f);
      row_sx[x] = sx;
      row_sy[x] = sy;
      // sx, sy >= 0 here, so truncation is floor.
      const float x0 = std::min(static_cast<float>(static_cast<int32_t>(sx)), fw - 2.0f);
      const float y0 = std::min(static_cast<float>(static_cast<int32_t>(sy)), fh - 2.0f);
      row_fx[x] = sx - x0;
      row_fy[x] = sy - y0;
      row_offset[x] = static_cast<int32_t>(y0) * static_cast<int32_t>(w) + static_cast<int32_t>(x0);
    };
    int64_t x = x_begin;
#if defined(__SSE2__)
    {
      const __m128 one = _mm_set1_ps(1.0f), zero = _mm_setzero_ps(), half = _mm_set1_ps(0.5f);
      const __m128 vw = _mm_set1_ps(fw), vh = _mm_set1_ps(fh);
      const __m128 wmax = _mm_set1_ps(fw - 1.0f), hmax = _mm_set1_ps(fh - 1.0f);
      const __m128 wtap = _mm_set1_ps(fw - 2.0f), htap = _mm_set1_ps(fh - 2.0f);
      auto floor4 = [&](__m128 v) {
        const __m128 t = _mm_cvtepi32_ps(_mm_cvttps_epi32(v));
        return _mm_sub_ps(t, _mm_and_ps(_mm_cmpgt_ps(t, v), one));
      };
      auto reflect4 = [&](__m128 coord, __m128 size) {
        const __m128 period = _mm_add_ps(size, size);
        __m128 t = _mm_add_ps(coord, half);
        t = _mm_sub_ps(t, _mm_mul_ps(period, floor4(_mm_mul_ps(t, _mm_div_ps(one, period)))));
        const __m128 over = _mm_cmpgt_ps(t, size);
        t = _mm_or_ps(_mm_and_ps(over, _mm_sub_ps(period, t)), _mm_andnot_ps(over, t));
        return _mm_sub_ps(t, half);
      };
      auto inside4 = [&](__m128 coord, __m128 last) {
        const __m128 outside = _mm_max_ps(_mm_max_ps(_mm_sub_ps(zero, coord),
                                                     _mm_sub_ps(coord, last)), zero);
        return _mm_min_ps(_mm_max_ps(_mm_sub_ps(one, outside), zero), one);
      };
      const __m128 vys = _mm_set1_ps(ys);
      const __m128 bx = _mm_add_ps(_mm_mul_ps(_mm_set1_ps(m1), vys), _mm_setzero_ps());
      const __m128 by = _mm_mul_ps(_mm_set1_ps(m4), vys);
      // The 4 column indices as floats, stepped by 4 (exact: indices are below 2^24).
      __m128 columns = _mm_setr_ps(static_cast<float>(x), static_cast<float>(x + 1),
                                   static_cast<float>(x + 2), static_cast<float>(x + 3));
      const __m128 four = _mm_set1_ps(4.0f);
#if defined(GANAUG_AVX2_PATH)
      if (kCpuHasAvx2) {
        const int64_t start = x;
        x = Coordinates8<kBorder>(m, cx, cy, fw, fh, ys, x, x_end, image, c, prefetch_shift,
                                  {row_sx, row_sy, row_inside_x, row_inside_y, row_fx, row_fy,
                                   row_offset});
        columns = _mm_add_ps(columns, _mm_set1_ps(static_cast<float>(x - start)));
      }
#endif
      for (; x + 4 <= x_end; x += 4, columns = _mm_add_ps(columns, four)) {
        const __m128 xs = _mm_sub_ps(columns, _mm_set1_ps(cx));
        __m128 sx = _mm_add_ps(_mm_add_ps(_mm_add_ps(_mm_mul_ps(_mm_set1_ps(m0), xs), bx),
                                          _mm_set1_ps(m2)), _mm_set1_ps(cx));
        __m128 sy = _mm_add_ps(_mm_add_ps(_mm_add_ps(_mm_mul_ps(_mm_set1_ps(m3), xs), by),
                                          _mm_set1_ps(m5)), _mm_set1_ps(cy));
        if constexpr (kBorder == kReflect) {
          sx = reflect4(sx, vw);
          sy = reflect4(sy, vh);
        } else if constexpr (kBorder == kConstant) {
          _mm_storeu_ps(&row_inside_x[x], inside4(sx, wmax));
          _mm_storeu_ps(&row_inside_y[x], inside4(sy, hmax));
        }
        sx = _mm_min_ps(_mm_max_ps(sx, zero), wmax);
        sy = _mm_min_ps(_mm_max_ps(sy, zero), hmax);
        _mm_storeu_ps(&row_sx[x], sx);
        _mm_storeu_ps(&row_sy[x], sy);
        const __m128 x0 = _mm_min_ps(_mm_cvtepi32_ps(_mm_cvttps_epi32(sx)), wtap);
        const __m128 y0 = _mm_min_ps(_mm_cvtepi32_ps(_mm_cvttps_epi32(sy)), htap);
        _mm_storeu_ps(&row_fx[x], _mm_sub_ps(sx, x0));
        _mm_storeu_ps(&row_fy[x], _mm_sub_ps(sy, y0));
        // y0 * W + x0 is exact in float32 for images below 2^24 pixels (checked on entry).
        const __m128i offsets = _mm_cvttps_epi32(_mm_add_ps(_mm_mul_ps(y0, vw), x0));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(&row_offset[x]), offsets);
        // The patch rows the same pixels read kAhead output rows later: the CPU's hardware
        // prefetchers do not follow a tile's diagonal band through the input.
        const uintptr_t ahead = reinterpret_cast<uintptr_t>(image) +
            static_cast<uintptr_t>(_mm_cvtsi128_si32(offsets) + prefetch_shift) * c * 4;
        _mm_prefetch(reinterpret_cast<const char*>(ahead), _MM_HINT_T0);
      }
    }
#endif
    for (; x < x_end; ++x) {
      const float xs = static_cast<float>(x) - cx;
      // Same association as _resample.source_coordinates: ((a * xs + b * ys) + t) + centre.
      coordinates(x, m0 * xs + m1 * ys + m2 + cx, m3 * xs + m4 * ys + m5 + cy);
    }
    for (int64_t k = 0; k < c; ++k) row_total[k] = 0.0f;
#if defined(__SSE2__)
    __m128 row_total_v = _mm_setzero_ps();
#endif
    int64_t x_pixel = x_begin;
#if defined(GANAUG_AVX2_PATH) && defined(__SSE2__)
    if constexpr (kC == 3 && kInterpolation == kBilinear) {
      if (kCpuHasAvx2) {
        // The furthest patch (y0 = H - 2, x0 = W - 2) read with 4-float loads ends one
        // float past the image: only the buffer's last image needs the check per pair
        // (skipping it elsewhere measured 1.05-1.10x on the kernel).
        auto pairs = [&](auto check_readable) {
          return BilinearPairs3<kBorder, decltype(check_readable)::value>(
              image, image_end, w, y, x_begin, x_end, row_offset, row_fx, row_fy, row_inside_x,
              row_inside_y, fill, colour, colour_columns, &colour_offset, &row_total_v, out);
        };
        x_pixel = image + h * w * 3 + 1 <= image_end ? pairs(std::false_type())
                                                     : pairs(std::true_type());
      }
    }
#endif
    for (int64_t x = x_pixel; x < x_end; ++x) {
      const float sx = row_sx[x], sy = row_sy[x];
      const float inside_x = row_inside_x[x], inside_y = row_inside_y[x];
      float inside = inside_x * inside_y;
#if defined(__SSE2__)
      if constexpr (kC == 3 && kInterpolation == kBilinear) {
        // One 4-lane vector per pixel (lane 3 unused): the 2x2 patch is two rows of six
        // floats, read as [0..3] and [3..6]. The same products in the same order as the
        // scalar code below.
        const float* a = image + static_cast<int64_t>(row_offset[x]) * 3;
        const float* b = a + w * 3;
        // The 4-lane store spills onto the next pixel: not on a row's last pixel.
        if (b + 7 <= image_end && x + 1 < w) {
          const float fx = row_fx[x], fy = row_fy[x];
          const __m128 vfx = _mm_set1_ps(fx), vgx = _mm_set1_ps(1.0f - fx);
          const __m128 top = _mm_add_ps(_mm_mul_ps(_mm_loadu_ps(a), vgx),
                                        _mm_mul_ps(_mm_loadu_ps(a + 3), vfx));
          const __m128 bottom = _mm_add_ps(_mm_mul_ps(_mm_loadu_ps(b), vgx),
                                           _mm_mul_ps(_mm_loadu_ps(b + 3), vfx));
          __m128 p = _mm_add_ps(_mm_mul_ps(top, _mm_set1_ps(1.0f - fy)),
                                _mm_mul_ps(bottom, _mm_set1_ps(fy)));
          if constexpr (kBorder == kConstant) {
            p = _mm_add_ps(_mm_mul_ps(p, _mm_set1_ps(inside)),
                           _mm_set1_ps(fill * (1.0f - inside)));
          }
          row_total_v = _mm_add_ps(row_total_v, p);
          if (colour == nullptr) {
            _mm_storeu_ps(out + (y * w + x) * 3, p);
            continue;
          }
          __m128 v = colour_offset;
          v = _mm_add_ps(v, _mm_mul_ps(_mm_shuffle_ps(p, p, 0x00), colour_columns[0]));
          v = _mm_add_ps(v, _mm_mul_ps(_mm_shuffle_ps(p, p, 0x55), colour_columns[1]));
          v = _mm_add_ps(v, _mm_mul_ps(_mm_shuffle_ps(p, p, 0xAA), colour_columns[2]));
          _mm_storeu_ps(out + (y * w + x) * 3, v);
          continue;
        }
      }
#endif
      if constexpr (kInterpolation == kNearest) {
        const int64_t x0 = static_cast<int64_t>(RoundHalfEven(sx));
        const int64_t y0 = static_cast<int64_t>(RoundHalfEven(sy));
        const float* src = image + (y0 * w + x0) * c;
        for (int64_t k = 0; k < c; ++k) pixel[k] = src[k];
        inside = (inside_x >= 0.5f && inside_y >= 0.5f) ? 1.0f : 0.0f;
      } else {
        // sx, sy >= 0 here, so truncation is floor.
        const int64_t ix = std::min<int64_t>(static_cast<int64_t>(sx), w - 2);
        const int64_t iy = std::min<int64_t>(static_cast<int64_t>(sy), h - 2);
        const float fx = sx - static_cast<float>(ix), fy = sy - static_cast<float>(iy);
        const float gx = 1.0f - fx, gy = 1.0f - fy;
        const float* a = image + (iy * w + ix) * c;
        const float* b = a + w * c;
        for (int64_t k = 0; k < c; ++k) {
          const float top = a[k] * gx + a[k + c] * fx;
          const float bottom = b[k] * gx + b[k + c] * fx;
          pixel[k] = top * gy + bottom * fy;
        }
      }
      if constexpr (kBorder == kConstant) {
        for (int64_t k = 0; k < c; ++k) pixel[k] = pixel[k] * inside + fill * (1.0f - inside);
      }
#if defined(__SSE2__)
      if constexpr (kC == 3) {  // the vector path's accumulator: one summation order
        row_total_v = _mm_add_ps(row_total_v, _mm_setr_ps(pixel[0], pixel[1], pixel[2], 0.0f));
      } else {
        for (int64_t k = 0; k < c; ++k) row_total[k] += pixel[k];
      }
#else
      for (int64_t k = 0; k < c; ++k) row_total[k] += pixel[k];
#endif
      float* dst = out + (y * w + x) * c;
      if (colour == nullptr) {
        for (int64_t k = 0; k < c; ++k) dst[k] = pixel[k];
        continue;
      }
      // _colour.apply: offset first, then input channels in order.
      for (int64_t j = 0; j < c; ++j) {
        const float* row = colour + j * (c + 1);
        float v = row[c];
        for (int64_t k = 0; k < c; ++k) v += pixel[k] * row[k];
        dst[j] = v;
      }
    }
#if defined(__SSE2__)
    if constexpr (kC == 3) {
      alignas(16) float lanes[4];
      _mm_store_ps(lanes, row_total_v);
      for (int k = 0; k < 3; ++k) row_total[k] += lanes[k];
    }
#endif
    for (int64_t k = 0; k < c; ++k) local_sums[k] += row_total[k];
  }
  }
  for (int64_t k = 0; k < c; ++k) sums[k] += local_sums[k];
}

using RowsFn = void (*)(const Geometry&, const float*, const float*, const float*,
                        const float*, float, int64_t, int64_t, float*, double*);

template <int kC>
RowsFn SelectForChannels(int32_t border, int32_t interpolation) {
  const bool nearest = interpolation == kNearest;
  switch (border) {
    case kReflect:
      return nearest ? WarpRows<kC, kReflect, kNearest> : WarpRows<kC, kReflect, kBilinear>;
    case kConstant:
      return nearest ? WarpRows<kC, kConstant, kNearest> : WarpRows<kC, kConstant, kBilinear>;
    default:
      return nearest ? WarpRows<kC, kEdge, kNearest> : WarpRows<kC, kEdge, kBilinear>;
  }
}

// The specialised row function: channel counts 1 and 3 are unrolled, others run generic.
RowsFn Select(int64_t channels, int32_t border, int32_t interpolation) {
  if (channels == 1) return SelectForChannels<1>(border, interpolation);
  if (channels == 3) return SelectForChannels<3>(border, interpolation);
  return SelectForChannels<0>(border, interpolation);
}

ffi::Error CheckArgs(const ffi::Buffer<ffi::F32>& images, const ffi::Buffer<ffi::F32>& geometry,
                     Geometry* g) {
  auto dims = images.dimensions();
  auto mdims = geometry.dimensions();
  if (dims.size() < 3 || mdims.size() != dims.size() - 1) {
    return ffi::Error::InvalidArgument("ganaug_warp: images (..., H, W, C), geometry (..., 3, 3)");
  }
  const size_t r = dims.size();
  g->height = dims[r - 3];
  g->width = dims[r - 2];
  g->channels = dims[r - 1];
  g->images = 1;
  for (size_t i = 0; i + 3 < r; ++i) {
    if (mdims[i] != dims[i]) return ffi::Error::InvalidArgument("ganaug_warp: batch dims differ");
    g->images *= dims[i];
  }
  if (mdims[r - 3] != 3 || mdims[r - 2] != 3) {
    return ffi::Error::InvalidArgument("ganaug_warp: geometry must be (..., 3, 3)");
  }
  if (g->height < 2 || g->width < 2 || g->channels < 1 || g->channels > kMaxChannels) {
    return ffi::Error::InvalidArgument(
        "ganaug_warp: images must be at least 2x2 with 1 to 16 channels");
  }
  return ffi::Error::Success();
}

// Work items: whole images up to kWholeImageBytes (the output is still in cache when the
// mean correction is added), else blocks of rows of about 16k output pixels.
constexpr int64_t kWholeImageBytes = 1 << 20;

int64_t RowsPerBlock(const Geometry& g) {
  if (g.height * g.width * g.channels * 4 <= kWholeImageBytes) return g.height;
  return std::max<int64_t>(1, std::min<int64_t>(g.height, 16384 / g.width));
}

// Copies rows [row_begin, row_end) of one image to `out` and adds their values to
// sums[0..C) (an image no op is applied to).
void CopyRows(const Geometry& g, const float* image, int64_t row_begin, int64_t row_end,
              float* out, double* sums) {
  const int64_t c = g.channels, row = g.width * c;
  std::copy(image + row_begin * row, image + row_end * row, out + row_begin * row);
  double local_sums[kMaxChannels] = {};
  for (int64_t y = row_begin; y < row_end; ++y) {
    float row_total[kMaxChannels] = {};
    const float* pixel = image + y * row;
    for (int64_t x = 0; x < g.width; ++x, pixel += c) {
      for (int64_t k = 0; k < c; ++k) row_total[k] += pixel[k];
    }
    for (int64_t k = 0; k < c; ++k) local_sums[k] += row_total[k];
  }
  for (int64_t k = 0; k < c; ++k) sums[k] += local_sums[k];
}

// out[pixel] += slope @ mean for every pixel of rows [row_begin, row_end) of one image.
void AddCorrection(const float* slope, const float* mean, int64_t c, int64_t row_begin,
                   int64_t row_end, int64_t width, float* out) {
  float shift[kMaxChannels];
  for (int64_t j = 0; j < c; ++j) {
    float v = 0.0f;
    for (int64_t k = 0; k < c; ++k) v += slope[j * c + k] * mean[k];
    shift[j] = v;
  }
  // The shift repeated over 4 pixels: a flat add of period 4 * C floats, which the compiler
  // vectorises whatever C is.
  float pattern[4 * kMaxChannels];
  const int64_t period = 4 * c;
  for (int64_t i = 0; i < period; ++i) pattern[i] = shift[i % c];
  float* p = out + row_begin * width * c;
  float* const end = out + row_end * width * c;
  for (; p + period <= end; p += period) {
    for (int64_t i = 0; i < period; ++i) p[i] += pattern[i];
  }
  for (int64_t i = 0; p + i < end; ++i) p[i] += pattern[i];
}

ffi::Error WarpImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> images,
                    ffi::Buffer<ffi::F32> geometry, ffi::Buffer<ffi::F32> colour,
                    ffi::Buffer<ffi::F32> mean_slope, ffi::Buffer<ffi::PRED> active,
                    ffi::ResultBuffer<ffi::F32> out,
                    ffi::ResultBuffer<ffi::F32> means, int32_t border, int32_t interpolation,
                    float fill) {
  Geometry g;
  if (ffi::Error error = CheckArgs(images, geometry, &g); error.failure()) return error;
  const int64_t c = g.channels, pixels = g.height * g.width * c;
  // Empty colour / slope buffers mean: no colour transform / no mean correction.
  const bool has_colour = colour.element_count() != 0;
  if (has_colour &&
      colour.element_count() != static_cast<size_t>(g.images * (c + 1) * (c + 1))) {
    return ffi::Error::InvalidArgument("ganaug_warp: colour must be (..., C+1, C+1) or empty");
  }
  const bool has_slope = mean_slope.element_count() != 0;
  if (has_slope && mean_slope.element_count() != static_cast<size_t>(g.images * c * c)) {
    return ffi::Error::InvalidArgument("ganaug_warp: mean_slope must be (..., C, C) or empty");
  }
  if (active.element_count() != static_cast<size_t>(g.images)) {
    return ffi::Error::InvalidArgument("ganaug_warp: active must be (...) with the batch dims");
  }
  const bool* is_active = active.typed_data();
  const int64_t rows = RowsPerBlock(g);
  const int64_t blocks_per_image = (g.height + rows - 1) / rows;
  // Partial sums per block, reduced in block order: the means do not depend on threads.
  std::vector<double> partial(g.images * blocks_per_image * c, 0.0);
  const float* in = images.typed_data();
  const float* in_end = in + images.element_count();
  const float* mat = geometry.typed_data();
  const float* col = colour.typed_data();
  const float* slope = mean_slope.typed_data();
  float* dst = out->typed_data();
  float* mean = means->typed_data();
  const double count = static_cast<double>(g.height * g.width);
  auto image_mean = [&](int64_t n) {
    for (int64_t k = 0; k < c; ++k) {
      double total = 0.0;
      for (int64_t b = 0; b < blocks_per_image; ++b) {
        total += partial[(n * blocks_per_image + b) * c + k];
      }
      mean[n * c + k] = static_cast<float>(total / count);
    }
  };
  const RowsFn rows_fn = Select(c, border, interpolation);
  ParallelFor(pool, g.images * blocks_per_image, [&](int64_t i) {
    const int64_t n = i / blocks_per_image, b = i % blocks_per_image;
    const int64_t row_begin = b * rows, row_end = std::min(g.height, (b + 1) * rows);
    if (is_active[n]) {
      rows_fn(g, in + n * pixels, in_end, mat + n * 9,
              has_colour ? col + n * (c + 1) * (c + 1) : nullptr, fill, row_begin, row_end,
              dst + n * pixels, partial.data() + i * c);
    } else {
      CopyRows(g, in + n * pixels, row_begin, row_end, dst + n * pixels, partial.data() + i * c);
    }
    if (blocks_per_image == 1) {  // the whole image: its mean is known, its pixels cached
      image_mean(n);
      if (has_slope && is_active[n]) {
        AddCorrection(slope + n * c * c, mean + n * c, c, 0, g.height, g.width,
                      dst + n * pixels);
      }
    }
  });
  if (blocks_per_image > 1) {
    for (int64_t n = 0; n < g.images; ++n) image_mean(n);
    if (has_slope) {
      ParallelFor(pool, g.images * blocks_per_image, [&](int64_t i) {
        const int64_t n = i / blocks_per_image, b = i % blocks_per_image;
        if (!is_active[n]) return;
        AddCorrection(slope + n * c * c, mean + n * c, c, b * rows,
                      std::min(g.height, (b + 1) * rows), g.width, dst + n * pixels);
      });
    }
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(GanaugWarp, WarpImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::PRED>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int32_t>("border")
                                  .Attr<int32_t>("interpolation")
                                  .Attr<float>("fill"));

// The Python module: handlers() -> {"ganaug_warp": capsule}.
static PyObject* Handlers(PyObject*, PyObject*) {
  return ganaug::HandlerDict({{"ganaug_warp", reinterpret_cast<void*>(GanaugWarp)}});
}

static PyObject* UsesAvx2(PyObject*, PyObject*) {
#if defined(GANAUG_AVX2_PATH)
  return PyBool_FromLong(kCpuHasAvx2);
#else
  Py_RETURN_FALSE;
#endif
}

static PyMethodDef kMethods[] = {
    {"handlers", Handlers, METH_NOARGS, "XLA FFI handler capsules by target name."},
    {"uses_avx2", UsesAvx2, METH_NOARGS, "Whether the kernels run their AVX2 paths."},
    {nullptr, nullptr, 0, nullptr}};

static PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "_warp_cpu",
                              "XLA:CPU kernels of the fused augmentation pipeline.", -1,
                              kMethods};

PyMODINIT_FUNC PyInit__warp_cpu(void) { return PyModule_Create(&kModule); }
