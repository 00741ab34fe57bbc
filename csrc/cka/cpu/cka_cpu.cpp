// CPU batched linear CKA: torch tensors -> cka_core.h. The Grams go through at::mm (MKL / BLAS),
// one call per staircase panel, so only the lower block triangle is computed (the n x n Gram is
// symmetric); every reduction is cka_core.h's OpenMP loops.
//
// Threads: the (tap, panel) GEMMs are independent tasks handed out dynamically, largest first,
// each one single-threaded BLAS, instead of one multi-threaded BLAS call after another. Measured
// on 2 cores shared with other jobs (load ~5): sequential 2-thread MKL calls on 250-row panels
// ran 1.4x slower than one X X^T per tap (every call's barrier waits for a thread that lost its
// core), while on a quiet core the staircase is 1.5x faster. Tasks keep both properties.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <vector>

#include "cka/cka_core.h"
#include "cka/cka_torch.h"

namespace cnr_fast {
namespace cka {

namespace {

// Rows of a staircase panel per GEMM task. Small enough that the last task of the region is short
// (a thread that finished early spins at the barrier until the others are done: ~8 ms for a
// 64 x 1000 x 6272 task here), large enough for BLAS to run at full speed.
constexpr int64_t kGemmRows = 64;

struct GemmTask {
  int64_t tap;    // index into the combined A + B list
  int64_t panel;  // staircase panel
  int64_t row0;   // first row of the task within the panel
  int64_t rows;
  double cost;    // rows * cols * d
};

template <typename T>
at::Tensor run(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b, const TapsInfo& info, bool unbiased,
               bool diag) {
  c10::NoGradGuard no_grad;
  const int nthreads = std::max(1, at::get_num_threads());
  const int64_t n = info.n, ta = static_cast<int64_t>(a.size()), tb = static_cast<int64_t>(b.size());
  const Staircase s = make_staircase(n);

  std::vector<at::Tensor> taps;  // (n, d) views / copies in the compute dtype
  for (const auto& t : a) taps.push_back(flat_tap(t, n, info.dtype));
  for (const auto& t : b) taps.push_back(flat_tap(t, n, info.dtype));
  const int64_t ntaps = static_cast<int64_t>(taps.size());
  std::vector<at::Tensor> xc(ntaps), grams(ntaps);
  for (int64_t u = 0; u < ntaps; ++u) {
    xc[u] = at::empty({n, taps[u].size(1)}, taps[u].options().memory_format(at::MemoryFormat::Contiguous));
    grams[u] = at::empty({s.size()}, xc[u].options());
  }
  // Largest first, so the last tasks to finish are small ones.
  std::vector<int64_t> by_size(ntaps);
  for (int64_t u = 0; u < ntaps; ++u) by_size[u] = u;
  std::stable_sort(by_size.begin(), by_size.end(),
                   [&](int64_t x, int64_t y) { return taps[x].size(1) > taps[y].size(1); });
  std::vector<GemmTask> tasks;
  for (int64_t u = 0; u < ntaps; ++u)
    for (int64_t i = 0; i < s.blocks(); ++i)
      for (int64_t r0 = 0; r0 < s.rows(i); r0 += kGemmRows) {
        const int64_t rows = std::min(kGemmRows, s.rows(i) - r0);
        tasks.push_back({u, i, r0, rows, double(rows) * double(s.cols(i)) * double(taps[u].size(1))});
      }
  std::stable_sort(tasks.begin(), tasks.end(), [](const GemmTask& x, const GemmTask& y) { return x.cost > y.cost; });

  const at::ThreadLocalState tls;  // grad mode, dispatch keys ... of the calling thread, for the workers
  // 1. Centre every tap (one task per tap).
#pragma omp parallel for num_threads(nthreads) schedule(dynamic, 1) if (nthreads > 1 && ntaps > 1)
  for (int64_t k = 0; k < ntaps; ++k) {
    const int64_t u = by_size[k];
    center_columns<T>(taps[u].const_data_ptr<T>(), n, taps[u].size(1), taps[u].stride(0), xc[u].mutable_data_ptr<T>(),
                      /*nthreads=*/ntaps > 1 ? 1 : nthreads);
  }
  // 2. Staircase panels: rows [e_i, e_{i+1}) of Xc times the first e_{i+1} rows of Xc, transposed
  //    (handed to BLAS as a "T" operand, no copy). Inside the parallel region BLAS runs on one thread.
  const bool task_parallel = nthreads > 1 && tasks.size() > 1;
#pragma omp parallel num_threads(nthreads) if (task_parallel)
  {
    at::ThreadLocalStateGuard guard(tls);
#pragma omp for schedule(dynamic, 1)
    for (int64_t k = 0; k < static_cast<int64_t>(tasks.size()); ++k) {
      const GemmTask& t = tasks[k];
      const int64_t cols = s.cols(t.panel);
      at::Tensor out = grams[t.tap].narrow(0, s.offsets[t.panel] + t.row0 * cols, t.rows * cols).view({t.rows, cols});
      at::mm_out(out, xc[t.tap].narrow(0, s.edges[t.panel] + t.row0, t.rows), xc[t.tap].narrow(0, 0, cols).t());
    }
  }
  xc.clear();
  // 3. HSIC terms and CKA.
  std::vector<const T*> ga, gb;
  for (int64_t u = 0; u < ta; ++u) ga.push_back(grams[u].template const_data_ptr<T>());
  for (int64_t u = 0; u < tb; ++u) gb.push_back(grams[ta + u].template const_data_ptr<T>());
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
