// Token selection of a dropping layer under the look-ahead probes, in one call.
//
// The probe's first map already ran inside the layer's q/k/v GEMM (its columns are `hidden`
// here). What is left per token is a GELU, a 2-output map, and per example a softmax of the start
// and of the end logits over the real slots, their sum, and the top slots. As torch ops that is
// about ten dispatches per layer, each on a few thousand numbers and slower than the arithmetic;
// here it is one pass over the rows and the same kept-slot rule as the drop-attention kernel.
//
// Semantics match the engine's torch path (`lookahead` significance, `_select_kept`): significance
// is softmax(start) + softmax(end) over an example's real slots; the first `protect` slots
// (at least [CLS]) always stay; the kept slots come out in position order. Real tokens must be a
// prefix of each example's slots, as the engine's right padding keeps them.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common.h"

namespace {

using dynlen_kernels::gelu_ps;
using dynlen_kernels::kLanes;
using dynlen_kernels::pick_kept;
using dynlen_kernels::tail_mask;

// Softmax of logits[0..length) (stride 2, one of the two columns) added into significance.
void add_softmax(const float* logits, int64_t length, float* significance) {
  float top = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < length; ++j) top = std::max(top, logits[2 * j]);
  std::vector<float> e(static_cast<size_t>(length));
  float total = 0.0f;
  for (int64_t j = 0; j < length; ++j) total += (e[j] = std::exp(logits[2 * j] - top));
  const float inv = 1.0f / total;
  for (int64_t j = 0; j < length; ++j) significance[j] += e[j] * inv;
}

}  // namespace

// hidden: (batch, n, width) float32 with unit last stride, the probe's first map before its GELU;
// weight (2, width) and bias (2): its output map. lengths, keep, protect: one int per example (lists
// on the Python side, no tensors to make at every layer): real slots,
// slots to keep and leading slots that always stay. Returns the kept slots (batch, max(keep)); an
// example keeping fewer fills its last slots with slot 0, which the caller marks as not real.
torch::Tensor probe_select(torch::Tensor hidden, torch::Tensor weight, torch::Tensor bias,
                           const std::vector<int64_t>& lengths, const std::vector<int64_t>& keep,
                           const std::vector<int64_t>& protect) {
  TORCH_CHECK(hidden.dim() == 3 && hidden.scalar_type() == torch::kFloat32 && hidden.device().is_cpu() &&
                  hidden.stride(2) == 1,
              "hidden must be a (batch, tokens, width) float32 CPU tensor with unit stride along width");
  const int64_t batch = hidden.size(0), n = hidden.size(1), width = hidden.size(2);
  auto w = weight.to(torch::kFloat32).contiguous();
  auto b = bias.to(torch::kFloat32).contiguous();
  TORCH_CHECK(w.dim() == 2 && w.size(0) == 2 && w.size(1) == width && b.numel() == 2,
              "weight must be (2, width) and bias (2,) for a probe of that width");
  TORCH_CHECK(static_cast<int64_t>(lengths.size()) == batch && static_cast<int64_t>(keep.size()) == batch &&
                  static_cast<int64_t>(protect.size()) == batch,
              "lengths, keep and protect need one entry per example");
  const int64_t* L = lengths.data();
  const int64_t* K = keep.data();
  const int64_t* P = protect.data();
  int64_t most = 0;
  for (int64_t e = 0; e < batch; ++e) {
    TORCH_CHECK(1 <= K[e] && K[e] <= L[e] && L[e] <= n, "need 1 <= keep <= length <= tokens for every example");
    most = std::max(most, K[e]);
  }
  auto slots = torch::zeros({batch, most}, torch::kLong);
  int64_t* slot = slots.data_ptr<int64_t>();
  const float* x = hidden.data_ptr<float>();
  const float* W = w.data_ptr<float>();
  const float* B = b.data_ptr<float>();
  const int64_t row = hidden.stride(1), example = hidden.stride(0);

  at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> logits, significance;
    for (int64_t e = begin; e < end; ++e) {
      logits.assign(static_cast<size_t>(2 * L[e]), 0.0f);
      for (int64_t j = 0; j < L[e]; ++j) {
        const float* h = x + e * example + j * row;
        __m512 start = _mm512_setzero_ps(), stop = _mm512_setzero_ps();
        for (int64_t c = 0; c < width; c += kLanes) {
          const __mmask16 m = tail_mask(width - c);
          const __m512 g = gelu_ps(_mm512_maskz_loadu_ps(m, h + c));
          start = _mm512_fmadd_ps(g, _mm512_maskz_loadu_ps(m, W + c), start);
          stop = _mm512_fmadd_ps(g, _mm512_maskz_loadu_ps(m, W + width + c), stop);
        }
        logits[2 * j] = _mm512_reduce_add_ps(start) + B[0];
        logits[2 * j + 1] = _mm512_reduce_add_ps(stop) + B[1];
      }
      significance.assign(static_cast<size_t>(L[e]), 0.0f);
      add_softmax(logits.data(), L[e], significance.data());
      add_softmax(logits.data() + 1, L[e], significance.data());
      pick_kept(significance.data(), L[e], K[e], std::max<int64_t>(1, std::min(P[e], K[e])), slot + e * most);
    }
  });
  return slots;
}
