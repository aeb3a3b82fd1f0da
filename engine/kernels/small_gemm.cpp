// y = x @ W^T + b for float32 on AVX-512 CPUs, written for the few-row GEMMs of a
// length-adaptive encoder at batch 1: once tokens are dropped a layer multiplies a handful of
// rows by weights far larger than its activations, and the BLAS path on this class of CPU
// spends most of that call streaming and re-packing the weights.
//
// Weights are packed once (pack_weight) into panels of 32 output columns laid out k-major,
// so one panel is one sequential stream; each panel is read once per block of up to 12 rows
// and the 12 x 32 block of outputs stays in 24 vector registers for the whole k loop.
// Panels are shared out over torch's intra-op threads, so torch.set_num_threads applies.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include "common.h"

namespace {

constexpr int64_t kPanel = 32;
constexpr int kRows = 12;

template <int MR>
void row_block(const float* x, int64_t K, const float* panel, const float* bias, float* y, int64_t ldy) {
  __m512 lo[MR], hi[MR];
  const __m512 b_lo = _mm512_loadu_ps(bias), b_hi = _mm512_loadu_ps(bias + 16);
  for (int r = 0; r < MR; ++r) { lo[r] = b_lo; hi[r] = b_hi; }
  for (int64_t k = 0; k < K; ++k) {
    const __m512 w_lo = _mm512_loadu_ps(panel + k * kPanel), w_hi = _mm512_loadu_ps(panel + k * kPanel + 16);
    // Software prefetch, L1, a few steps ahead: the panel (8 k-steps, two cache lines each) and
    // every row of x (two lines ahead, once per line). In a forward the weights of the other
    // layers have passed through the caches since this panel was last read, and the hardware
    // prefetcher alone left the k loop waiting on them (about 6% of a batch-1 forward on one thread).
    // Prefetches past the end of either buffer are harmless: they never fault.
    _mm_prefetch(reinterpret_cast<const char*>(panel + (k + 8) * kPanel), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(panel + (k + 8) * kPanel + 16), _MM_HINT_T0);
    if ((k & 15) == 0) {
      for (int r = 0; r < MR; ++r) _mm_prefetch(reinterpret_cast<const char*>(x + r * K + k + 32), _MM_HINT_T0);
    }
    for (int r = 0; r < MR; ++r) {
      const __m512 a = _mm512_set1_ps(x[r * K + k]);
      lo[r] = _mm512_fmadd_ps(a, w_lo, lo[r]);
      hi[r] = _mm512_fmadd_ps(a, w_hi, hi[r]);
    }
  }
  for (int r = 0; r < MR; ++r) {
    _mm512_storeu_ps(y + r * ldy, lo[r]);
    _mm512_storeu_ps(y + r * ldy + 16, hi[r]);
  }
}

using RowBlock = void (*)(const float*, int64_t, const float*, const float*, float*, int64_t);
constexpr RowBlock kBlocks[kRows + 1] = {nullptr, row_block<1>, row_block<2>, row_block<3>, row_block<4>,
                                         row_block<5>, row_block<6>, row_block<7>, row_block<8>,
                                         row_block<9>, row_block<10>, row_block<11>, row_block<12>};

}  // namespace

// (N, K) weight and (N,) bias -> (ceil(N/32), K, 32) panels and a bias padded to match.
std::vector<torch::Tensor> pack_weight(torch::Tensor weight, torch::Tensor bias) {
  TORCH_CHECK(weight.dim() == 2 && weight.scalar_type() == torch::kFloat32, "weight must be a 2-D float32 tensor");
  const int64_t n = weight.size(0), k = weight.size(1), padded = (n + kPanel - 1) / kPanel * kPanel;
  auto w = torch::zeros({padded, k}, weight.options());
  w.narrow(0, 0, n).copy_(weight);
  auto b = torch::zeros({padded}, weight.options());
  b.narrow(0, 0, n).copy_(bias);
  return {w.view({padded / kPanel, kPanel, k}).transpose(1, 2).contiguous(), b};
}

// x (M, K) contiguous float32, panels from pack_weight -> (M, padded N).
torch::Tensor packed_linear(torch::Tensor x, torch::Tensor panels, torch::Tensor bias) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous() && x.scalar_type() == torch::kFloat32, "x must be contiguous 2-D float32");
  TORCH_CHECK(panels.dim() == 3 && panels.size(1) == x.size(1) && panels.size(2) == kPanel, "panels do not match x");
  const int64_t M = x.size(0), K = x.size(1), P = panels.size(0), N = P * kPanel;
  auto y = torch::empty({M, N}, x.options());
  const float* X = x.data_ptr<float>();
  const float* W = panels.data_ptr<float>();
  const float* B = bias.data_ptr<float>();
  float* Y = y.data_ptr<float>();
  dynlen_kernels::for_each_panel_block(P, M, kRows, [&](int64_t p, int64_t m0, int rows) {
    kBlocks[rows](X + m0 * K, K, W + p * K * kPanel, B + p * kPanel, Y + m0 * N + p * kPanel, N);
  });
  return y;
}

// How many threads at::parallel_for really ran ``tasks`` tasks on: it must follow
// torch.set_num_threads, which it only does when this file is built with OpenMP.
int64_t parallel_width(int64_t tasks) {
  std::vector<char> seen(static_cast<size_t>(std::max(1, at::get_num_threads())) + 1, 0);
  at::parallel_for(0, tasks, 1, [&](int64_t, int64_t) {
    const int id = at::get_thread_num();
    if (id >= 0 && static_cast<size_t>(id) < seen.size()) seen[id] = 1;
  });
  return std::count(seen.begin(), seen.end(), 1);
}
