// Torch-side argument checks shared by the CPU (cpu/cka_cpu.cpp) and CUDA (cuda/cka_cuda.cu) ops.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/accumulate.h>

#include <vector>

namespace cnr_fast {
namespace cka {

struct TapsInfo {
  int64_t n = 0;
  at::ScalarType dtype = at::kFloat;  // compute dtype: float64 if any input is float64, else float32
};

// feats_a / feats_b: lists of (n, ...) tensors, flattened to (n, d_t). Half / bfloat16 inputs are
// computed in float32 (Grams in 16 bits lose too much); integer inputs are refused.
inline TapsInfo check_taps(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b, bool unbiased,
                           bool diag, c10::DeviceType device_type) {
  TORCH_CHECK(!a.empty() && !b.empty(), "cka_matrix: both tap lists must be non-empty");
  TORCH_CHECK(!diag || a.size() == b.size(), "cka_matrix: pairs='diag' needs as many taps in A (", a.size(),
              ") as in B (", b.size(), ")");
  TapsInfo info;
  info.n = a[0].dim() > 0 ? a[0].size(0) : 0;
  const auto device = a[0].device();
  bool any_double = false;
  for (const auto* list : {&a, &b})
    for (const auto& t : *list) {
      TORCH_CHECK(t.defined(), "cka_matrix: undefined tensor");
      TORCH_CHECK(t.dim() >= 1, "cka_matrix: every tap must be (n, ...), got a 0-d tensor");
      TORCH_CHECK(t.size(0) == info.n, "cka_matrix: every tap needs the same number of examples n; got ", t.size(0),
                  " and ", info.n);
      TORCH_CHECK(t.device() == device, "cka_matrix: all taps must be on one device; got ", t.device(), " and ", device);
      TORCH_CHECK(at::isFloatingType(t.scalar_type()), "cka_matrix: taps must be floating point, got ",
                  t.scalar_type());
      TORCH_CHECK(c10::multiply_integers(t.sizes().slice(1)) > 0, "cka_matrix: a tap has no features");
      any_double = any_double || t.scalar_type() == at::kDouble;
    }
  TORCH_CHECK(device.type() == device_type, "cka_matrix: expected ", device_type, " tensors, got ", device);
  TORCH_CHECK(unbiased ? info.n >= 4 : info.n >= 2, "cka_matrix: n = ", info.n, " examples is too few (the ",
              unbiased ? "unbiased estimator needs n >= 4" : "biased estimator needs n >= 2", ")");
  info.dtype = any_double ? at::kDouble : at::kFloat;
  return info;
}

// (n, d) view (or copy) of a tap in the compute dtype with unit column stride.
inline at::Tensor flat_tap(const at::Tensor& t, int64_t n, at::ScalarType dtype) {
  at::Tensor x = t.reshape({n, -1});
  if (x.scalar_type() != dtype) x = x.to(dtype);
  if (x.size(1) > 1 && x.stride(1) != 1) x = x.contiguous();
  return x;
}

at::Tensor cka_matrix_cpu(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b, bool unbiased,
                          bool diag);
#ifdef CNR_FAST_WITH_CUDA
at::Tensor cka_matrix_cuda(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b, bool unbiased,
                           bool diag);
#endif

}  // namespace cka
}  // namespace cnr_fast
