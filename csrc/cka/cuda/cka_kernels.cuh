// Torch-free CUDA kernels of batched linear CKA (see csrc/cka/cka_core.h for the math).
// Used by cka_cuda.cu (torch extension) and by csrc/tests/test_cka_cuda.cu (CMake, no torch).
//
// Layout on the device: the Grams of one model's T taps are stacked as a (T, n, n) row-major
// array of full (not staircase) centred Grams; cuBLAS fills them, these kernels reduce them.
#pragma once

#include <cstdint>
#include <math_constants.h>

namespace cnr_fast {
namespace cka {
namespace cuda {

constexpr int kRowThreads = 256;

// One block per (row r, tap t): rowsum[t*n + r] = sum_{c != r} G[t, r, c], diag[t*n + r] = G[t, r, r];
// with zero_diag the diagonal entry is then set to 0 (the unbiased estimator's K~), so the same
// pass serves the row sums and the diagonal zeroing.
template <typename T>
__global__ void row_stats_kernel(T* __restrict__ grams, int64_t n, double* __restrict__ rowsum,
                                 double* __restrict__ diag, bool zero_diag) {
  const int64_t r = blockIdx.x;
  const int64_t t = blockIdx.y;
  T* row = grams + (t * n + r) * n;
  double acc = 0.0;
  for (int64_t c = threadIdx.x; c < n; c += blockDim.x)
    if (c != r) acc += static_cast<double>(row[c]);
  __shared__ double buf[kRowThreads];
  buf[threadIdx.x] = acc;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) buf[threadIdx.x] += buf[threadIdx.x + s];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    rowsum[t * n + r] = buf[0];
    diag[t * n + r] = static_cast<double>(row[r]);
    if (zero_diag) row[r] = T(0);
  }
}

// One thread per output. Inputs (all double):
//   cross[p]  = <G_a, G_b>_F of the pair (Grams already with a zeroed diagonal when unbiased),
//   self_a[a] = <G_a, G_a>_F, self_b[b] likewise,
//   unbiased only: sum_a[a] = 1^T K~_a 1, rowdot[p] = (K~_a 1) . (L~_b 1), rowdot_a[a], rowdot_b[b].
// diag_only: p = t indexes (t, t); otherwise p = a * tb + b. out[p] = CKA.
__device__ inline double hsic_value(double cross, double sum_u, double sum_v, double rowdot, int64_t n,
                                    bool unbiased) {
  const double nd = static_cast<double>(n);
  if (!unbiased) return cross / ((nd - 1.0) * (nd - 1.0));
  return (cross + sum_u * sum_v / ((nd - 1.0) * (nd - 2.0)) - 2.0 / (nd - 2.0) * rowdot) / (nd * (nd - 3.0));
}

__global__ void finalize_cka_kernel(const double* __restrict__ cross, const double* __restrict__ self_a,
                                    const double* __restrict__ self_b, const double* __restrict__ sum_a,
                                    const double* __restrict__ sum_b, const double* __restrict__ rowdot,
                                    const double* __restrict__ rowdot_a, const double* __restrict__ rowdot_b,
                                    int64_t ta, int64_t tb, int64_t n, bool unbiased, bool diag_only,
                                    double* __restrict__ out) {
  const int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t count = diag_only ? ta : ta * tb;
  if (p >= count) return;
  const int64_t a = diag_only ? p : p / tb;
  const int64_t b = diag_only ? p : p % tb;
  const double su = unbiased ? sum_a[a] : 0.0, sv = unbiased ? sum_b[b] : 0.0;
  const double hxy = hsic_value(cross[p], su, sv, unbiased ? rowdot[p] : 0.0, n, unbiased);
  const double hxx = hsic_value(self_a[a], su, su, unbiased ? rowdot_a[a] : 0.0, n, unbiased);
  const double hyy = hsic_value(self_b[b], sv, sv, unbiased ? rowdot_b[b] : 0.0, n, unbiased);
  const double den = hxx * hyy;  // <= 0: NaN, as cka_core.h's cka_ratio
  out[p] = den > 0.0 ? hxy / sqrt(den) : CUDART_NAN;
}

}  // namespace cuda
}  // namespace cka
}  // namespace cnr_fast
