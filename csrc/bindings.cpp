// Python module cnr_fast._C (pybind11). cnr_fast/_native.py is the only importer; cnr_fast/ops/cka.py
// wraps cka_matrix in torch.library.custom_op("cnr_fast::cka_matrix") with a fake (meta) kernel, so
// the op is safe under torch.compile.
#include <torch/extension.h>
#include <torch/version.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include <string>
#include <vector>

#include "cka/cka_torch.h"

namespace {

at::Tensor cka_matrix(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b, bool unbiased, bool diag) {
  TORCH_CHECK(!a.empty(), "cka_matrix: feats_a is empty");
  if (a[0].is_cuda()) {
#ifdef CNR_FAST_WITH_CUDA
    return cnr_fast::cka::cka_matrix_cuda(a, b, unbiased, diag);
#else
    TORCH_CHECK(false, "cka_matrix: cnr_fast._C was built without CUDA (rebuild with CNR_FAST_CUDA=1, see setup.py)");
#endif
  }
  return cnr_fast::cka::cka_matrix_cpu(a, b, unbiased, diag);
}

int omp_max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "cnr-fast native ops (csrc/): batched linear CKA";
  m.def("cka_matrix", &cka_matrix, pybind11::arg("feats_a"), pybind11::arg("feats_b"), pybind11::arg("unbiased"),
        pybind11::arg("diag"), pybind11::call_guard<pybind11::gil_scoped_release>(),
        "Linear CKA between every tap of A and every tap of B (or only pairs (t, t) with diag); float64 result.");
  m.def("omp_max_threads", &omp_max_threads, "OpenMP threads the core's loops may use (1 without OpenMP)");
#ifdef CNR_FAST_WITH_CUDA
  m.attr("has_cuda") = true;
#else
  m.attr("has_cuda") = false;
#endif
#ifdef _OPENMP
  m.attr("openmp") = true;
#else
  m.attr("openmp") = false;
#endif
  // torch the extension was compiled against; _native.py refuses a build for another torch
  m.attr("torch_version") = std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + "." +
                            std::to_string(TORCH_VERSION_PATCH);
}
