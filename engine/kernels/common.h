// What dynlen's kernels share: AVX-512 vector helpers and the rule that picks the kept slots.
#pragma once

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

namespace dynlen_kernels {

// Every (panel, block of up to ``rows`` rows) pair of a packed GEMM, the panels shared out over
// torch's intra-op threads: the one driver of the fp32, bf16 and int8 small-GEMM kernels.
template <class Block>
void for_each_panel_block(int64_t panels, int64_t M, int rows, const Block& block) {
  at::parallel_for(0, panels, 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      for (int64_t m0 = 0; m0 < M; m0 += rows) block(p, m0, static_cast<int>(std::min<int64_t>(rows, M - m0)));
    }
  });
}

constexpr int64_t kLanes = 16;

inline __mmask16 tail_mask(int64_t remaining) {
  return remaining >= kLanes ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << remaining) - 1u);
}

// e^x for softmax arguments (x <= 0): range reduction to r in [-ln2/2, ln2/2], a degree-7
// polynomial (the Cephes expf coefficients, ~1 ulp), and the power of two applied by scalef.
inline __m512 exp_ps(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

// erf(x) to within 1.5e-7 (Abramowitz & Stegun 7.1.26), for the exact (erf) GELU.
inline __m512 erf_ps(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 a = _mm512_abs_ps(x);
  const __m512 t = _mm512_div_ps(one, _mm512_fmadd_ps(_mm512_set1_ps(0.3275911f), a, one));
  __m512 p = _mm512_set1_ps(1.061405429f);
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.453152027f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.421413741f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.284496736f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.254829592f));
  p = _mm512_mul_ps(p, t);
  const __m512 y = _mm512_fnmadd_ps(p, exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(a, a))), one);
  const __m512i sign = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(static_cast<int>(0x80000000u)));
  return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(y), sign));
}

// GELU, x * (1 + erf(x / sqrt 2)) / 2: torch's default (not the tanh approximation).
inline __m512 gelu_ps(__m512 x) {
  const __m512 half = _mm512_set1_ps(0.5f);
  const __m512 e = erf_ps(_mm512_mul_ps(x, _mm512_set1_ps(0.70710678118654752f)));
  return _mm512_mul_ps(_mm512_mul_ps(half, x), _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

// The keep most significant of an example's first length slots, in position order. The first
// protect slots ([CLS] and, when the question is kept, the question segment) always come first;
// protect is at least 1, so [CLS] always stays.
inline void pick_kept(const float* significance, int64_t length, int64_t keep, int64_t protect, int64_t* slots) {
  std::vector<int64_t> order(static_cast<size_t>(length));
  std::iota(order.begin(), order.end(), 0);
  auto more_significant = [&](int64_t a, int64_t b) {
    const bool pa = a < protect, pb = b < protect;
    if (pa || pb) return pa && (!pb || a < b);
    return significance[a] > significance[b] || (significance[a] == significance[b] && a < b);
  };
  if (keep < length) std::nth_element(order.begin(), order.begin() + keep, order.end(), more_significant);
  std::sort(order.begin(), order.begin() + keep);
  std::copy(order.begin(), order.begin() + keep, slots);
}

}  // namespace dynlen_kernels
