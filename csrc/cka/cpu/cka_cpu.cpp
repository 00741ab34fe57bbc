// CPU batched linear CKA: torch tensors -> cka_core.h. The Grams go through at::mm (MKL / BLAS),
// one call per staircase panel, so only the lower block triangle is computed (the n x n Gram is
// symmetric); centring and every reduction are cka_core.h's OpenMP loops.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <vector>

#include "cka/cka_core.h"
#include "cka/cka_torch.h"

namespace cnr_fast {
namespace cka {

namespace {

template <typename T>
at::Tensor staircase_gram(const at::Tensor& tap, const Staircase& s, int nthreads) {
  const int64_t n = s.n, d = tap.size(1);
  at::Tensor xc = at::empty({n, d}, tap.options().memory_format(at::MemoryFormat::Contiguous));
  center_columns<T>(tap.const_data_ptr<T>(), n, d, tap.stride(0), xc.mutable_data_ptr<T>(), nthreads);
  at::Tensor g = at::empty({s.size()}, xc.options());
  for (int64_t i = 0; i < s.blocks(); ++i) {
    const int64_t rows = s.rows(i), cols = s.cols(i);
    at::Tensor panel = g.narrow(0, s.offsets[i], rows * cols).view({rows, cols});
    // rows [e_i, e_{i+1}) of Xc times the first e_{i+1} rows of Xc, transposed: the transposed view
    // goes to BLAS as a "T" operand, no copy.
    at::mm_out(panel, xc.narrow(0, s.edges[i], rows), xc.narrow(0, 0, cols).t());
  }
  return g;
}

template <typename T>
at::Tensor run(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b, const TapsInfo& info, bool unbiased,
               bool diag) {
  const int nthreads = at::get_num_threads();
  const Staircase s = make_staircase(info.n);
  std::vector<at::Tensor> keep;
  std::vector<const T*> ga, gb;
  for (const auto& t : a) {
    keep.push_back(staircase_gram<T>(flat_tap(t, info.n, info.dtype), s, nthreads));
    ga.push_back(keep.back().template const_data_ptr<T>());
  }
  for (const auto& t : b) {
    keep.push_back(staircase_gram<T>(flat_tap(t, info.n, info.dtype), s, nthreads));
    gb.push_back(keep.back().template const_data_ptr<T>());
  }
  const int64_t ta = static_cast<int64_t>(a.size()), tb = static_cast<int64_t>(b.size());
  at::Tensor out = diag ? at::empty({ta}, at::kDouble) : at::empty({ta, tb}, at::kDouble);
  cka_from_grams<T>(ga, gb, s, unbiased, diag, out.mutable_data_ptr<double>(), nthreads);
  return out;
}

}  // namespace

at::Tensor cka_matrix_cpu(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b, bool unbiased,
                          bool diag) {
  const TapsInfo info = check_taps(a, b, unbiased, diag, c10::DeviceType::CPU);
  if (info.dtype == at::kDouble) return run<double>(a, b, info, unbiased, diag);
  return run<float>(a, b, info, unbiased, diag);
}

}  // namespace cka
}  // namespace cnr_fast
