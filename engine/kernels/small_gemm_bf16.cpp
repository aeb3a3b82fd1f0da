// y = x @ W^T + b with bf16 operands and float32 accumulation, for CPUs with AVX512-BF16.
//
// The bf16 precision of the engine: weights held in bf16 (packed once per model, half the bytes
// the float32 panels stream), each x row rounded to bf16 once per call, products summed in
// float32 by vdpbf16ps, float32 out. Everything else the forward does (attention, softmax,
// LayerNorm, selection, gathers, restore) stays float32, so the drop-attention and probe-select
// kernels serve both precisions unchanged. torch's own bf16 linear (oneDNN) re-lays the weight
// out at every call; at batch 1 after tokens are dropped that, not the arithmetic, is the cost.
//
// Panels hold 32 output columns for each pair of k, as vdpbf16ps reads them: for k-pair j and
// column c, the two bf16 values (W[c][2j], W[c][2j+1]) are adjacent, so one 64-byte line holds
// the pair for 16 columns. The functions carry their own target attribute, so this file builds
// with the rest and is only called where the CPU reports avx512_bf16 (has_bf16).
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include "common.h"

#include <cstring>

namespace {

constexpr int64_t kPanel = 32;
constexpr int kRows = 12;

#define DYNLEN_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

// x (rows, K) pairs as int32 (two bf16 each), panel (K2, 32 columns x 2) bf16 pairs.
template <int MR>
DYNLEN_BF16 void row_block(const int32_t* x, int64_t K2, const uint16_t* panel, const float* bias, float* y,
                           int64_t ldy) {
  __m512 lo[MR], hi[MR];
  const __m512 b_lo = _mm512_loadu_ps(bias), b_hi = _mm512_loadu_ps(bias + 16);
  for (int r = 0; r < MR; ++r) { lo[r] = b_lo; hi[r] = b_hi; }
  for (int64_t j = 0; j < K2; ++j) {
    const uint16_t* w = panel + j * kPanel * 2;
    const __m512bh w_lo = (__m512bh)_mm512_loadu_si512(w), w_hi = (__m512bh)_mm512_loadu_si512(w + 32);
    _mm_prefetch(reinterpret_cast<const char*>(w + 8 * kPanel * 2), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(w + 8 * kPanel * 2 + 32), _MM_HINT_T0);
    for (int r = 0; r < MR; ++r) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32(x[r * K2 + j]);
      lo[r] = _mm512_dpbf16_ps(lo[r], a, w_lo);
      hi[r] = _mm512_dpbf16_ps(hi[r], a, w_hi);
    }
  }
  for (int r = 0; r < MR; ++r) {
    _mm512_storeu_ps(y + r * ldy, lo[r]);
    _mm512_storeu_ps(y + r * ldy + 16, hi[r]);
  }
}

using RowBlock = void (*)(const int32_t*, int64_t, const uint16_t*, const float*, float*, int64_t);
constexpr RowBlock kBlocks[kRows + 1] = {nullptr, row_block<1>, row_block<2>, row_block<3>, row_block<4>,
                                         row_block<5>, row_block<6>, row_block<7>, row_block<8>,
                                         row_block<9>, row_block<10>, row_block<11>, row_block<12>};

// One row of float32 to bf16 (round to nearest even, as torch's cast), zero-padded to an even length.
DYNLEN_BF16 void round_row(const float* src, int64_t K, uint16_t* dst, int64_t K_even) {
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    const __m512bh pair = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + k + 16), _mm512_loadu_ps(src + k));
    _mm512_storeu_si512(dst + k, (__m512i)pair);
  }
  for (; k < K; ++k) {
    uint32_t bits;
    std::memcpy(&bits, src + k, 4);
    bits += 0x7FFF + ((bits >> 16) & 1);
    dst[k] = static_cast<uint16_t>(bits >> 16);
  }
  for (; k < K_even; ++k) dst[k] = 0;
}

}  // namespace

bool has_bf16() { return __builtin_cpu_supports("avx512bf16"); }

// (N, K) float32 or bf16 weight and (N,) bias -> (ceil(N/32), ceil(K/2), 32, 2) bf16 panels and a float32 bias.
std::vector<torch::Tensor> pack_weight_bf16(torch::Tensor weight, torch::Tensor bias) {
  TORCH_CHECK(weight.dim() == 2, "weight must be 2-D");
  const int64_t n = weight.size(0), k = weight.size(1);
  const int64_t padded = (n + kPanel - 1) / kPanel * kPanel, k_even = (k + 1) / 2 * 2;
  auto w = torch::zeros({padded, k_even}, weight.options().dtype(torch::kBFloat16));
  w.narrow(0, 0, n).narrow(1, 0, k).copy_(weight);
  auto b = torch::zeros({padded}, weight.options().dtype(torch::kFloat32));
  b.narrow(0, 0, n).copy_(bias);
  // (P, 32, K2, 2) -> (P, K2, 32, 2): for each k-pair, the 32 columns' pairs in a row
  auto panels = w.view({padded / kPanel, kPanel, k_even / 2, 2}).permute({0, 2, 1, 3}).contiguous();
  return {panels, b};
}

// x (M, K) contiguous float32, panels from pack_weight_bf16 -> (M, padded N) float32.
torch::Tensor packed_linear_bf16(torch::Tensor x, torch::Tensor panels, torch::Tensor bias) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && x.scalar_type() == torch::kFloat32, "x must be contiguous 2-D float32");
  TORCH_CHECK(panels.dim() == 4 && panels.scalar_type() == torch::kBFloat16 && panels.size(2) == kPanel,
              "panels must come from pack_weight_bf16");
  const int64_t M = x.size(0), K = x.size(1), K2 = panels.size(1), P = panels.size(0), N = P * kPanel;
  TORCH_CHECK(K2 == (K + 1) / 2, "panels do not match x");
  TORCH_CHECK(has_bf16(), "this CPU has no AVX512-BF16");
  auto rounded = torch::empty({M, K2 * 2}, x.options().dtype(torch::kBFloat16));
  auto y = torch::empty({M, N}, x.options());
  const float* X = x.data_ptr<float>();
  auto* XB = reinterpret_cast<uint16_t*>(rounded.data_ptr<at::BFloat16>());
  for (int64_t m = 0; m < M; ++m) round_row(X + m * K, K, XB + m * K2 * 2, K2 * 2);
  const auto* XP = reinterpret_cast<const int32_t*>(XB);
  const auto* W = reinterpret_cast<const uint16_t*>(panels.data_ptr<at::BFloat16>());
  const float* B = bias.data_ptr<float>();
  float* Y = y.data_ptr<float>();
  dynlen_kernels::for_each_panel_block(P, M, kRows, [&](int64_t p, int64_t m0, int rows) {
    kBlocks[rows](XP + m0 * K2, K2, W + p * K2 * kPanel * 2, B + p * kPanel, Y + m0 * N + p * kPanel, N);
  });
  return y;
}
