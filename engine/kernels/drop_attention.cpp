// Attention of a layer that drops tokens, fused into one call, for float32 on AVX-512 CPUs.
//
// Such a layer needs every query's attention row (to rank keys by the attention they receive)
// but only the kept queries' context. Run as separate torch ops it makes several passes over
// the (heads, n, n) probabilities: scores, softmax, the reduction for significance, a row
// gather, the context matmul and a head merge, each a dispatch and a round trip through
// memory. Here each (example, head) computes its score rows a block at a time, takes the
// softmax and adds the rows into that head's significance while the block is still in L1;
// the kept tokens are picked per example; then only the kept rows' context is computed and
// written straight into the merged-heads layout the output projection reads.
//
// Semantics match the engine's torch path: significance sums the probabilities over heads
// and real queries; slot 0 ([CLS]) always stays; the kept slots come out in position order.
// Real tokens must be a prefix of each example's slots (the engine's right padding keeps
// them so): example b attends over its first lengths[b] slots only.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "common.h"

namespace {

using dynlen_kernels::exp_ps;
using dynlen_kernels::kLanes;
using dynlen_kernels::pick_kept;
using dynlen_kernels::tail_mask;

constexpr int kScoreRows = 12;  // query rows per score block: 12 accumulators, one key vector
constexpr int kContextRows = 6;  // kept rows per context block: up to 6 x 4 accumulators

inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// Where one (example, head) reads its queries, keys and values: row i of q starts at q + i * q_row.
struct HeadView {
  const float* q;
  const float* k;
  const float* v;
  int64_t q_row, k_row, v_row;
};

// Scores of MR query rows against all keys (scaled), from the keys transposed into kt (d x ld).
template <int MR>
void score_block(const HeadView& h, int64_t i0, int64_t length, int64_t d, const float* kt, int64_t ld, float scale,
                 float* probs) {
  const __m512 s = _mm512_set1_ps(scale);
  for (int64_t j0 = 0; j0 < length; j0 += kLanes) {
    __m512 acc[MR];
    for (int r = 0; r < MR; ++r) acc[r] = _mm512_setzero_ps();
    for (int64_t c = 0; c < d; ++c) {
      const __m512 key = _mm512_loadu_ps(kt + c * ld + j0);
      for (int r = 0; r < MR; ++r) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(h.q[(i0 + r) * h.q_row + c]), key, acc[r]);
    }
    for (int r = 0; r < MR; ++r) _mm512_storeu_ps(probs + (i0 + r) * ld + j0, _mm512_mul_ps(acc[r], s));
  }
}

using ScoreBlock = void (*)(const HeadView&, int64_t, int64_t, int64_t, const float*, int64_t, float, float*);
constexpr ScoreBlock kScoreBlocks[kScoreRows + 1] = {
    nullptr, score_block<1>, score_block<2>, score_block<3>, score_block<4>, score_block<5>, score_block<6>,
    score_block<7>, score_block<8>, score_block<9>, score_block<10>, score_block<11>, score_block<12>};

// Softmax of one row in place, and the row added into the head's significance.
void softmax_row(float* row, int64_t length, float* significance) {
  __m512 vmax = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t j = 0; j < length; j += kLanes) {
    const __mmask16 m = tail_mask(length - j);
    vmax = _mm512_max_ps(vmax, _mm512_mask_loadu_ps(vmax, m, row + j));
  }
  const __m512 top = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
  __m512 vsum = _mm512_setzero_ps();
  for (int64_t j = 0; j < length; j += kLanes) {
    const __mmask16 m = tail_mask(length - j);
    const __m512 e = _mm512_maskz_mov_ps(m, exp_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, row + j), top)));
    _mm512_storeu_ps(row + j, e);
    vsum = _mm512_add_ps(vsum, e);
  }
  const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(vsum));
  for (int64_t j = 0; j < length; j += kLanes) {
    const __m512 p = _mm512_mul_ps(_mm512_loadu_ps(row + j), inv);
    _mm512_storeu_ps(row + j, p);
    _mm512_storeu_ps(significance + j, _mm512_add_ps(_mm512_loadu_ps(significance + j), p));
  }
}

// Probabilities (length x ld, row-major) and per-key significance for one (example, head).
void head_probabilities(const HeadView& h, int64_t length, int64_t d, int64_t ld, float scale, float* probs,
                        float* significance, std::vector<float>& kt) {
  kt.assign(static_cast<size_t>(d * ld), 0.0f);
  for (int64_t j = 0; j < length; ++j)
    for (int64_t c = 0; c < d; ++c) kt[c * ld + j] = h.k[j * h.k_row + c];
  std::fill(significance, significance + ld, 0.0f);
  for (int64_t i0 = 0; i0 < length; i0 += kScoreRows) {
    const int rows = static_cast<int>(std::min<int64_t>(kScoreRows, length - i0));
    kScoreBlocks[rows](h, i0, length, d, kt.data(), ld, scale, probs);
    for (int r = 0; r < rows; ++r) softmax_row(probs + (i0 + r) * ld, length, significance);
  }
}

// Context of MR kept rows for NV value vectors (16 columns each) starting at column c0.
template <int MR, int NV>
void context_block(const float* probs, int64_t ld, const int64_t* slots, const HeadView& h, int64_t length,
                   int64_t c0, int64_t d, float* out, int64_t out_row) {
  __m512 acc[MR][NV];
  __mmask16 mask[NV];
  for (int v = 0; v < NV; ++v) mask[v] = tail_mask(d - c0 - v * kLanes);
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  const float* rows[MR];
  for (int r = 0; r < MR; ++r) rows[r] = probs + slots[r] * ld;
  for (int64_t j = 0; j < length; ++j) {
    __m512 value[NV];
    for (int v = 0; v < NV; ++v) value[v] = _mm512_maskz_loadu_ps(mask[v], h.v + j * h.v_row + c0 + v * kLanes);
    for (int r = 0; r < MR; ++r) {
      const __m512 p = _mm512_set1_ps(rows[r][j]);
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(p, value[v], acc[r][v]);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) _mm512_mask_storeu_ps(out + r * out_row + c0 + v * kLanes, mask[v], acc[r][v]);
}

using ContextBlock = void (*)(const float*, int64_t, const int64_t*, const HeadView&, int64_t, int64_t, int64_t, float*,
                              int64_t);
template <int MR>
constexpr ContextBlock context_for(int nv) {
  return nv == 1 ? context_block<MR, 1> : nv == 2 ? context_block<MR, 2> : nv == 3 ? context_block<MR, 3> : context_block<MR, 4>;
}

ContextBlock pick_context(int rows, int nv) {
  switch (rows) {
    case 1: return context_for<1>(nv);
    case 2: return context_for<2>(nv);
    case 3: return context_for<3>(nv);
    case 4: return context_for<4>(nv);
    case 5: return context_for<5>(nv);
    default: return context_for<6>(nv);
  }
}

}  // namespace

// q, k, v: (batch, heads, n, head_dim) float32 views with unit last stride; lengths, keep: one int per
// example (lists on the Python side), real slots and slots to keep; protect: leading slots that always stay
// (0 or 1 both mean [CLS] only). Returns the kept rows' context (batch, width,
// heads * head_dim) and their slots (batch, width), width = max(keep). An example keeping fewer
// than width fills its last slots with slot 0, whose rows the caller marks as not real.
std::vector<torch::Tensor> drop_attention(torch::Tensor q, torch::Tensor k, torch::Tensor v,
                                          const std::vector<int64_t>& lengths, const std::vector<int64_t>& keep,
                                          const std::vector<int64_t>& protect, double scale) {
  for (const auto* t : {&q, &k, &v}) {
    TORCH_CHECK(t->dim() == 4 && t->scalar_type() == torch::kFloat32 && t->device().is_cpu(),
                "q, k, v must be 4-D float32 CPU tensors (batch, heads, tokens, head_dim)");
    TORCH_CHECK(t->stride(3) == 1, "q, k, v need unit stride along head_dim");
    TORCH_CHECK(t->sizes() == q.sizes(), "q, k, v must have the same shape");
  }
  const int64_t batch = q.size(0), heads = q.size(1), n = q.size(2), d = q.size(3);
  TORCH_CHECK(static_cast<int64_t>(lengths.size()) == batch && static_cast<int64_t>(keep.size()) == batch &&
                  static_cast<int64_t>(protect.size()) == batch,
              "lengths, keep and protect need one entry per example");
  const int64_t* protected_slots = protect.data();
  const int64_t* L = lengths.data();
  const int64_t* K = keep.data();
  int64_t width = 0;
  for (int64_t b = 0; b < batch; ++b) {
    TORCH_CHECK(1 <= K[b] && K[b] <= L[b] && L[b] <= n, "need 1 <= keep <= length <= tokens for every example");
    width = std::max(width, K[b]);
  }
  const int64_t ld = round_up(n, kLanes);
  auto probs = torch::empty({batch * heads, n * ld}, q.options());
  auto significance = torch::empty({batch * heads, ld}, q.options());
  auto context = torch::empty({batch, width, heads * d}, q.options());
  auto slots = torch::zeros({batch, width}, torch::kLong);
  float* P = probs.data_ptr<float>();
  float* S = significance.data_ptr<float>();
  float* C = context.data_ptr<float>();
  int64_t* slot = slots.data_ptr<int64_t>();
  const float* qp = q.data_ptr<float>();
  const float* kp_ = k.data_ptr<float>();
  const float* vp = v.data_ptr<float>();
  auto view = [&](int64_t task) {
    const int64_t b = task / heads, h = task % heads;
    return HeadView{qp + b * q.stride(0) + h * q.stride(1), kp_ + b * k.stride(0) + h * k.stride(1),
                    vp + b * v.stride(0) + h * v.stride(1), q.stride(2), k.stride(2), v.stride(2)};
  };
  const float s = static_cast<float>(scale);

  at::parallel_for(0, batch * heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> kt;
    for (int64_t task = begin; task < end; ++task)
      head_probabilities(view(task), L[task / heads], d, ld, s, P + task * n * ld, S + task * ld, kt);
  });

  at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> total(static_cast<size_t>(ld));
    for (int64_t b = begin; b < end; ++b) {
      std::fill(total.begin(), total.end(), 0.0f);
      for (int64_t h = 0; h < heads; ++h) {  // a fixed order: the same sums for any thread count
        const float* part = S + (b * heads + h) * ld;
        for (int64_t j = 0; j < L[b]; ++j) total[j] += part[j];
      }
      pick_kept(total.data(), L[b], K[b], std::max<int64_t>(1, std::min(protected_slots[b], K[b])), slot + b * width);
    }
  });

  at::parallel_for(0, batch * heads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / heads, h = task % heads;
      const HeadView hv = view(task);
      const float* probs_bh = P + task * n * ld;
      float* out = C + b * width * heads * d + h * d;
      for (int64_t c0 = 0; c0 < d; c0 += 4 * kLanes) {
        const int nv = static_cast<int>((std::min<int64_t>(4 * kLanes, d - c0) + kLanes - 1) / kLanes);
        for (int64_t s0 = 0; s0 < width; s0 += kContextRows) {
          const int rows = static_cast<int>(std::min<int64_t>(kContextRows, width - s0));
          pick_context(rows, nv)(probs_bh, ld, slot + b * width + s0, hv, L[b], c0, d, out + s0 * heads * d,
                                 heads * d);
        }
      }
    }
  });
  return {context, slots};
}
