// y = x @ W^T + b with int8 operands and int32 sums, for CPUs with AVX512-VNNI.
//
// The int8 precision of the engine: each weight row (output channel) quantized once, symmetric,
// to int8 with its own scale; each x row quantized at every call, symmetric, with its own scale
// (dynamic, per token: no calibration, and a token with large activations costs only its own
// row's resolution). vpdpbusd multiplies unsigned by signed bytes, so x is shifted by +128 and
// the shift's contribution, 128 * sum_k W[c][k], is taken off each column's sum (precomputed).
// y[r][c] = (sum - 128 * wsum[c]) * x_scale[r] * w_scale[c] + b[c], float32 out.
//
// Panels hold 32 output columns for each group of four k, as vpdpbusd reads them: for group j and
// column c, W[c][4j .. 4j+3] are adjacent, so one 64-byte line holds a group for 16 columns.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include "common.h"

#include <cmath>

namespace {

constexpr int64_t kPanel = 32;
constexpr int kRows = 12;

#define DYNLEN_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))

template <int MR>
DYNLEN_VNNI void row_block(const int32_t* x, int64_t K4, const int8_t* panel, const float* x_scale,
                           const float* w_scale, const int32_t* w_shift, const float* bias, float* y, int64_t ldy) {
  __m512i lo[MR], hi[MR];
  for (int r = 0; r < MR; ++r) { lo[r] = _mm512_setzero_si512(); hi[r] = _mm512_setzero_si512(); }
  for (int64_t j = 0; j < K4; ++j) {
    const int8_t* w = panel + j * kPanel * 4;
    const __m512i w_lo = _mm512_loadu_si512(w), w_hi = _mm512_loadu_si512(w + 64);
    _mm_prefetch(reinterpret_cast<const char*>(w + 8 * kPanel * 4), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(w + 8 * kPanel * 4 + 64), _MM_HINT_T0);
    for (int r = 0; r < MR; ++r) {
      const __m512i a = _mm512_set1_epi32(x[r * K4 + j]);
      lo[r] = _mm512_dpbusd_epi32(lo[r], a, w_lo);
      hi[r] = _mm512_dpbusd_epi32(hi[r], a, w_hi);
    }
  }
  const __m512 ws_lo = _mm512_loadu_ps(w_scale), ws_hi = _mm512_loadu_ps(w_scale + 16);
  const __m512i sh_lo = _mm512_loadu_si512(w_shift), sh_hi = _mm512_loadu_si512(w_shift + 16);
  const __m512 b_lo = _mm512_loadu_ps(bias), b_hi = _mm512_loadu_ps(bias + 16);
  for (int r = 0; r < MR; ++r) {
    const __m512 xs = _mm512_set1_ps(x_scale[r]);
    const __m512 s_lo = _mm512_cvtepi32_ps(_mm512_sub_epi32(lo[r], sh_lo));
    const __m512 s_hi = _mm512_cvtepi32_ps(_mm512_sub_epi32(hi[r], sh_hi));
    _mm512_storeu_ps(y + r * ldy, _mm512_fmadd_ps(_mm512_mul_ps(s_lo, xs), ws_lo, b_lo));
    _mm512_storeu_ps(y + r * ldy + 16, _mm512_fmadd_ps(_mm512_mul_ps(s_hi, xs), ws_hi, b_hi));
  }
}

using RowBlock = void (*)(const int32_t*, int64_t, const int8_t*, const float*, const float*, const int32_t*,
                          const float*, float*, int64_t);
constexpr RowBlock kBlocks[kRows + 1] = {nullptr, row_block<1>, row_block<2>, row_block<3>, row_block<4>,
                                         row_block<5>, row_block<6>, row_block<7>, row_block<8>,
                                         row_block<9>, row_block<10>, row_block<11>, row_block<12>};

// One row to unsigned bytes (x / scale rounded to nearest even, +128), zero-padded (as 128) to a
// multiple of four; returns the row's scale.
DYNLEN_VNNI float quantize_row(const float* src, int64_t K, uint8_t* dst, int64_t K_padded) {
  __m512 top = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) top = _mm512_max_ps(top, _mm512_abs_ps(_mm512_loadu_ps(src + k)));
  float peak = _mm512_reduce_max_ps(top);
  for (; k < K; ++k) peak = std::max(peak, std::fabs(src[k]));
  const float scale = peak > 0.f ? peak / 127.f : 1.f;
  const __m512 inverse = _mm512_set1_ps(1.f / scale);
  const __m512i low = _mm512_set1_epi32(-127), high = _mm512_set1_epi32(127), shift = _mm512_set1_epi32(128);
  for (k = 0; k + 16 <= K; k += 16) {
    __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(src + k), inverse));  // round to nearest even
    q = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(q, low), high), shift);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + k), _mm512_cvtepi32_epi8(q));
  }
  const float inv = 1.f / scale;
  for (; k < K; ++k) {
    const long q = std::lrint(src[k] * inv);
    dst[k] = static_cast<uint8_t>(std::max(-127L, std::min(127L, q)) + 128);
  }
  for (; k < K_padded; ++k) dst[k] = 128;
  return scale;
}

}  // namespace

bool has_vnni() { return __builtin_cpu_supports("avx512vnni"); }

// (N, K) float32 weight and (N,) bias -> int8 panels (ceil(N/32), ceil(K/4), 32, 4), per-column
// scales, per-column shift 128 * sum_k q[c][k] (int32), and a float32 bias, all padded to the panels.
std::vector<torch::Tensor> pack_weight_int8(torch::Tensor weight, torch::Tensor bias) {
  TORCH_CHECK(weight.dim() == 2, "weight must be 2-D");
  const int64_t n = weight.size(0), k = weight.size(1);
  const int64_t padded = (n + kPanel - 1) / kPanel * kPanel, k4 = (k + 3) / 4 * 4;
  auto w = weight.to(torch::kFloat32);
  auto scale = (w.abs().amax(1) / 127.0).clamp_min(1e-12);
  auto q = torch::zeros({padded, k4}, w.options().dtype(torch::kInt8));
  q.narrow(0, 0, n).narrow(1, 0, k).copy_((w / scale.unsqueeze(1)).round().clamp(-127, 127).to(torch::kInt8));
  auto scales = torch::ones({padded}, w.options());
  scales.narrow(0, 0, n).copy_(scale);
  auto shift = q.to(torch::kInt32).sum(1).mul(128).to(torch::kInt32);
  auto b = torch::zeros({padded}, w.options());
  b.narrow(0, 0, n).copy_(bias);
  auto panels = q.view({padded / kPanel, kPanel, k4 / 4, 4}).permute({0, 2, 1, 3}).contiguous();
  return {panels, scales, shift, b};
}

// x (M, K) contiguous float32, the four tensors of pack_weight_int8 -> (M, padded N) float32.
torch::Tensor packed_linear_int8(torch::Tensor x, torch::Tensor panels, torch::Tensor scales, torch::Tensor shift,
                                 torch::Tensor bias) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && x.scalar_type() == torch::kFloat32, "x must be contiguous 2-D float32");
  TORCH_CHECK(panels.dim() == 4 && panels.scalar_type() == torch::kInt8 && panels.size(2) == kPanel,
              "panels must come from pack_weight_int8");
  const int64_t M = x.size(0), K = x.size(1), K4 = panels.size(1), P = panels.size(0), N = P * kPanel;
  TORCH_CHECK(K4 == (K + 3) / 4, "panels do not match x");
  TORCH_CHECK(has_vnni(), "this CPU has no AVX512-VNNI");
  auto quantized = torch::empty({M, K4 * 4}, x.options().dtype(torch::kUInt8));
  auto x_scale = torch::empty({M}, x.options());
  auto y = torch::empty({M, N}, x.options());
  const float* X = x.data_ptr<float>();
  uint8_t* XQ = quantized.data_ptr<uint8_t>();
  float* XS = x_scale.data_ptr<float>();
  for (int64_t m = 0; m < M; ++m) XS[m] = quantize_row(X + m * K, K, XQ + m * K4 * 4, K4 * 4);
  const auto* XP = reinterpret_cast<const int32_t*>(XQ);
  const int8_t* W = panels.data_ptr<int8_t>();
  const float* WS = scales.data_ptr<float>();
  const int32_t* SH = shift.data_ptr<int32_t>();
  const float* B = bias.data_ptr<float>();
  float* Y = y.data_ptr<float>();
  dynlen_kernels::for_each_panel_block(P, M, kRows, [&](int64_t p, int64_t m0, int rows) {
    kBlocks[rows](XP + m0 * K4, K4, W + p * K4 * kPanel * 4, XS + m0, WS + p * kPanel, SH + p * kPanel,
                    B + p * kPanel, Y + m0 * N + p * kPanel, N);
  });
  return y;
}
