// CUDA batched linear CKA. cuBLAS (through at::mm) computes every tap's centred Gram into one
// (T, n, n) stack; row_stats_kernel takes the row sums and zeroes the diagonals (unbiased);
// the pair products <G_a, G_b>_F are one GEMM (T_a x n^2) @ (n^2 x T_b) in float64, taken in column
// chunks so the float64 copies stay small; finalize_cka_kernel turns the terms into CKA values.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <vector>

#include "cka/cka_torch.h"
#include "cka/cuda/cka_kernels.cuh"

namespace cnr_fast {
namespace cka {

namespace {

// Elements of the flattened Grams converted to float64 at a time, per model (32 MiB of doubles
// per tap row block at most).
constexpr int64_t kChunk = int64_t(1) << 22;

at::Tensor stacked_grams(const std::vector<at::Tensor>& taps, const TapsInfo& info) {
  const int64_t n = info.n, T = static_cast<int64_t>(taps.size());
  at::Tensor g = at::empty({T, n, n}, taps[0].options().dtype(info.dtype));
  for (int64_t t = 0; t < T; ++t) {
    at::Tensor x = flat_tap(taps[t], n, info.dtype);
    // Column means in float64 (a float32 mean of 10^4 values already carries ~1e-4 relative error).
    at::Tensor xc = x - at::mean(x, {0}, /*keepdim=*/true, at::kDouble).to(info.dtype);
    at::Tensor gt = g.select(0, t);
    at::mm_out(gt, xc, xc.t());  // full fp32/fp64 sgemm: respects torch.backends.cuda.matmul.allow_tf32
  }
  return g;
}

}  // namespace

at::Tensor cka_matrix_cuda(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b, bool unbiased,
                           bool diag) {
  const TapsInfo info = check_taps(a, b, unbiased, diag, c10::DeviceType::CUDA);
  c10::cuda::CUDAGuard guard(a[0].device());
  const int64_t n = info.n, ta = static_cast<int64_t>(a.size()), tb = static_cast<int64_t>(b.size());
  at::Tensor ga = stacked_grams(a, info);
  at::Tensor gb = stacked_grams(b, info);
  const auto dopt = ga.options().dtype(at::kDouble);
  at::Tensor row_a = at::empty({ta, n}, dopt), diag_a = at::empty({ta, n}, dopt);
  at::Tensor row_b = at::empty({tb, n}, dopt), diag_b = at::empty({tb, n}, dopt);
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(ga.scalar_type(), "cnr_fast_cka_row_stats", [&] {
    cuda::row_stats_kernel<scalar_t><<<dim3(static_cast<unsigned>(n), static_cast<unsigned>(ta)), cuda::kRowThreads, 0,
                                       stream>>>(ga.data_ptr<scalar_t>(), n, row_a.data_ptr<double>(),
                                                 diag_a.data_ptr<double>(), unbiased);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    cuda::row_stats_kernel<scalar_t><<<dim3(static_cast<unsigned>(n), static_cast<unsigned>(tb)), cuda::kRowThreads, 0,
                                       stream>>>(gb.data_ptr<scalar_t>(), n, row_b.data_ptr<double>(),
                                                 diag_b.data_ptr<double>(), unbiased);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  // Pair products in float64 (sums of n^2 terms), chunk by chunk.
  const int64_t nn = n * n;
  at::Tensor fa = ga.view({ta, nn}), fb = gb.view({tb, nn});
  at::Tensor cross = diag ? at::zeros({ta}, dopt) : at::zeros({ta, tb}, dopt);
  at::Tensor self_a = at::zeros({ta}, dopt), self_b = at::zeros({tb}, dopt);
  for (int64_t c0 = 0; c0 < nn; c0 += kChunk) {
    const int64_t len = std::min(kChunk, nn - c0);
    at::Tensor ca = fa.narrow(1, c0, len).to(at::kDouble);
    at::Tensor cb = fb.narrow(1, c0, len).to(at::kDouble);
    if (diag)
      cross.add_((ca * cb).sum(1));
    else
      cross.addmm_(ca, cb.t());
    self_a.add_((ca * ca).sum(1));
    self_b.add_((cb * cb).sum(1));
  }
  at::Tensor sum_a, sum_b, rowdot, rowdot_a, rowdot_b;
  if (unbiased) {
    sum_a = row_a.sum(1);
    sum_b = row_b.sum(1);
    rowdot = diag ? (row_a * row_b).sum(1) : at::mm(row_a, row_b.t());
    rowdot_a = (row_a * row_a).sum(1);
    rowdot_b = (row_b * row_b).sum(1);
  } else {
    sum_a = sum_b = rowdot = rowdot_a = rowdot_b = at::zeros({1}, dopt);  // unread
  }
  cross = cross.contiguous();
  rowdot = rowdot.contiguous();
  const int64_t count = diag ? ta : ta * tb;
  at::Tensor out = at::empty({count}, dopt);
  const int threads = 128;
  const unsigned blocks = static_cast<unsigned>((count + threads - 1) / threads);
  cuda::finalize_cka_kernel<<<blocks, threads, 0, stream>>>(
      cross.data_ptr<double>(), self_a.data_ptr<double>(), self_b.data_ptr<double>(), sum_a.data_ptr<double>(),
      sum_b.data_ptr<double>(), rowdot.data_ptr<double>(), rowdot_a.data_ptr<double>(), rowdot_b.data_ptr<double>(), ta,
      tb, n, unbiased, diag, out.data_ptr<double>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return diag ? out : out.view({ta, tb});
}

}  // namespace cka
}  // namespace cnr_fast
