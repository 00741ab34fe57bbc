// Torch-free core of batched linear CKA (header only; float / double; OpenMP when compiled with it).
//
// Math (Kornblith et al. 2019, linear kernel). For taps X_a (n x d_a) of model A and Y_b (n x d_b)
// of model B on the same n examples:
//   1. centre every tap's columns (Xc = X - 1 mean(X)); then K = Xc Xc^T is already the doubly
//      centred Gram H K H, so the biased HSIC is <K, L>_F / (n-1)^2;
//   2. the unbiased HSIC (Song et al. 2012; Nguyen et al. 2020 eq. 3, the one pytorch-cka 1.1.3's
//      cka.hsic and torch-cka 0.21's _HSIC use) works on Grams with a zeroed diagonal:
//        HSIC_u(K, L) = [tr(K~ L~) + 1^T K~ 1 * 1^T L~ 1 / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1] / (n(n-3))
//      It is invariant to centring the features (checked numerically against pytorch-cka), so the
//      same centred Grams serve both estimators; centring first also keeps float32 from cancelling;
//   3. CKA(a, b) = HSIC(K_a, L_b) / sqrt(HSIC(K_a, K_a) HSIC(L_b, L_b)).
//
// Only the lower block "staircase" of each symmetric Gram is stored and computed (about
// (b+1)/(2b) of the n^2 entries for b row blocks): panel i holds rows [e_i, e_{i+1}) and columns
// [0, e_{i+1}), row-major, panels back to back. Entries of the off-diagonal blocks stand for two
// entries of the full Gram (weight 2), the square diagonal block is stored whole (weight 1).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace cnr_fast {
namespace cka {

// Rows per staircase block. Matches the sweet spot measured with MKL sgemm on 2 cores
// (n=1000: 4 blocks of 250 rows = 0.63 of a full Gram's flops, 1.4x faster than one X X^T).
constexpr int64_t kDefaultBlockRows = 256;

struct Staircase {
  int64_t n = 0;
  std::vector<int64_t> edges;    // blocks()+1 row edges, edges[0] = 0, edges.back() = n
  std::vector<int64_t> offsets;  // blocks()+1 panel offsets, offsets.back() = size()
  int64_t blocks() const { return static_cast<int64_t>(edges.size()) - 1; }
  int64_t size() const { return offsets.back(); }
  int64_t rows(int64_t i) const { return edges[i + 1] - edges[i]; }
  int64_t cols(int64_t i) const { return edges[i + 1]; }  // panel i spans columns [0, edges[i+1])
};

inline Staircase make_staircase(int64_t n, int64_t block_rows = kDefaultBlockRows) {
  if (n < 0) throw std::invalid_argument("make_staircase: n < 0");
  if (block_rows < 1) block_rows = 1;
  Staircase s;
  s.n = n;
  int64_t b = std::max<int64_t>(1, (n + block_rows / 2) / block_rows);  // round(n / block_rows)
  if (b > n) b = std::max<int64_t>(1, n);
  s.edges.resize(b + 1);
  for (int64_t i = 0; i <= b; ++i) s.edges[i] = (i * n + b / 2) / b;  // balanced blocks
  s.edges[0] = 0;
  s.edges[b] = n;
  s.offsets.assign(b + 1, 0);
  for (int64_t i = 0; i < b; ++i) s.offsets[i + 1] = s.offsets[i] + s.rows(i) * s.cols(i);
  return s;
}

// Below this many element operations a loop runs on one thread: waking a team costs more than it
// saves, and on shared cores a team member that lost its core stalls the region (libgomp spins).
constexpr int64_t kParallelGrain = int64_t(1) << 16;

inline int resolve_threads(int nthreads) {
#ifdef _OPENMP
  return nthreads > 0 ? nthreads : omp_get_max_threads();
#else
  (void)nthreads;
  return 1;
#endif
}

// out (n x d, contiguous) = x - column means of x; x is n x d with row stride ld, column stride 1.
// Means accumulate in double.
template <typename T>
void center_columns(const T* x, int64_t n, int64_t d, int64_t ld, T* out, int nthreads = 0) {
  if (n == 0 || d == 0) return;
  const int nt = resolve_threads(nthreads);
  std::vector<double> mean(static_cast<size_t>(d), 0.0);
  const int64_t chunk = 1024;  // columns per task: row-major sweep, vectorisable inner loop
  const int64_t nchunks = (d + chunk - 1) / chunk;
  const bool par = n * d >= kParallelGrain;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1) if (par)
  for (int64_t ck = 0; ck < nchunks; ++ck) {
    const int64_t c0 = ck * chunk, c1 = std::min(d, c0 + chunk);
    double* m = mean.data();
    for (int64_t r = 0; r < n; ++r) {
      const T* row = x + r * ld;
      for (int64_t c = c0; c < c1; ++c) m[c] += static_cast<double>(row[c]);
    }
    for (int64_t c = c0; c < c1; ++c) m[c] /= static_cast<double>(n);
  }
  std::vector<T> mean_t(mean.begin(), mean.end());
  const T* mt = mean_t.data();
#pragma omp parallel for num_threads(nt) schedule(dynamic, 16) if (par)
  for (int64_t r = 0; r < n; ++r) {
    const T* row = x + r * ld;
    T* o = out + r * d;
#pragma omp simd
    for (int64_t c = 0; c < d; ++c) o[c] = row[c] - mt[c];
  }
}

// Staircase of X X^T for x (n x d, contiguous). Plain loops with double accumulation: the torch-free
// path and the test oracle; the torch extension fills the same layout with BLAS (at::mm) instead.
template <typename T>
void gram_staircase(const T* x, int64_t n, int64_t d, const Staircase& s, T* out, int nthreads = 0) {
  if (s.n != n) throw std::invalid_argument("gram_staircase: staircase built for another n");
  const int nt = resolve_threads(nthreads);
  for (int64_t i = 0; i < s.blocks(); ++i) {
    const int64_t r0 = s.edges[i], rows = s.rows(i), cols = s.cols(i);
    T* panel = out + s.offsets[i];
#pragma omp parallel for num_threads(nt) schedule(dynamic, 4) if (rows * cols * d >= kParallelGrain)
    for (int64_t rr = 0; rr < rows; ++rr) {
      const T* xr = x + (r0 + rr) * d;
      for (int64_t c = 0; c < cols; ++c) {
        const T* xc = x + c * d;
        double acc = 0.0;
#pragma omp simd reduction(+ : acc)
        for (int64_t k = 0; k < d; ++k) acc += static_cast<double>(xr[k]) * static_cast<double>(xc[k]);
        panel[rr * cols + c] = static_cast<T>(acc);
      }
    }
  }
}

template <typename T>
inline T dot(const T* a, const T* b, int64_t len) {
  // Row dots of at most n terms in the input precision (float32: ~1e-7 * sqrt(n) relative error),
  // summed over rows in double by the caller; `omp simd` lets the compiler vectorise the sum.
  T acc = T(0);
#pragma omp simd reduction(+ : acc)
  for (int64_t k = 0; k < len; ++k) acc += a[k] * b[k];
  return acc;
}

// HSIC terms of a list of staircase Grams `g[0..ntaps)` (all on the same Staircase).
// Pairs (u, v) index into g. For each pair:
//   off[p]  = sum_{r != c} K_u[r,c] K_v[r,c]       (tr(K~ L~))
//   diag[p] = sum_r K_u[r,r] K_v[r,r]
// and per tap: rowsum[u*n + r] = sum_{c != r} K_u[r,c], offsum[u] = sum_r rowsum[u*n + r].
//
// Work is split into a fixed number of tasks (independent of the thread count) handed out
// dynamically, each with its own partial sums, reduced in task order: the result is bitwise
// reproducible for any thread count, and a thread that loses its core to a neighbour's process
// (2 shared cores) does not hold the others at a barrier.
constexpr int64_t kRowTasks = 64;
constexpr int64_t kColBlock = 64;

template <typename T>
void staircase_terms(const std::vector<const T*>& g, const Staircase& s, const std::vector<std::pair<int64_t, int64_t>>& pairs,
                     bool want_rowsums, std::vector<double>& off, std::vector<double>& diag, std::vector<double>& rowsum,
                     std::vector<double>& offsum, int nthreads = 0) {
  const int64_t n = s.n, ntaps = static_cast<int64_t>(g.size()), np = static_cast<int64_t>(pairs.size());
  const int nt = resolve_threads(nthreads);
  const int64_t ntasks = std::min<int64_t>(kRowTasks, std::max<int64_t>(n, 1));
  std::vector<double> part(static_cast<size_t>(ntasks * 2 * np), 0.0);
  std::vector<int64_t> panel_of(static_cast<size_t>(n));
  for (int64_t i = 0; i < s.blocks(); ++i)
    for (int64_t r = s.edges[i]; r < s.edges[i + 1]; ++r) panel_of[r] = i;
  if (want_rowsums) rowsum.assign(static_cast<size_t>(ntaps * n), 0.0);

  // 1. Row pass. Task k takes rows k, k + ntasks, ... (panels get wider down the staircase, so
  //    interleaving balances the tasks). Row r of panel i = [off-diagonal blocks: columns 0..e_i),
  //    weight 2 | square diagonal block: columns e_i..e_{i+1}, stored whole, weight 1].
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1) if ((np + ntaps) * s.size() >= kParallelGrain)
  for (int64_t k = 0; k < ntasks; ++k) {
    double* my_off = part.data() + k * 2 * np;
    double* my_diag = my_off + np;
    for (int64_t r = k; r < n; r += ntasks) {
      const int64_t i = panel_of[r];
      const int64_t e0 = s.edges[i], cols = s.cols(i);
      const int64_t base = s.offsets[i] + (r - e0) * cols;  // start of row r in the panel
      for (int64_t p = 0; p < np; ++p) {
        const T* ku = g[pairs[p].first] + base;
        const T* kv = g[pairs[p].second] + base;
        const double d_rr = static_cast<double>(ku[r]) * static_cast<double>(kv[r]);
        const double lower = e0 > 0 ? static_cast<double>(dot(ku, kv, e0)) : 0.0;
        const double blk = static_cast<double>(dot(ku + e0, kv + e0, cols - e0));
        my_off[p] += 2.0 * lower + blk - d_rr;
        my_diag[p] += d_rr;
      }
      if (want_rowsums)  // the stored part of row r, diagonal excluded; row r is this task's alone
        for (int64_t u = 0; u < ntaps; ++u) {
          const T* ku = g[u] + base;
          double own = 0.0;
          for (int64_t c = 0; c < cols; ++c) own += static_cast<double>(ku[c]);
          rowsum[u * n + r] += own - static_cast<double>(ku[r]);
        }
    }
  }
  // 2. Column pass (unbiased only): row c also owns the mirrored entries K[r, c], r >= e_i > c, of
  //    the off-diagonal blocks below it. Task = (tap, block of kColBlock columns).
  if (want_rowsums && s.blocks() > 1) {
    const int64_t last = s.edges[s.blocks() - 1];  // columns >= this are never in an off-diagonal block
    const int64_t nblk = (last + kColBlock - 1) / kColBlock;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1) if (ntaps * s.size() >= kParallelGrain)
    for (int64_t task = 0; task < ntaps * nblk; ++task) {
      const int64_t u = task / nblk, c0 = (task % nblk) * kColBlock, c1 = std::min(last, c0 + kColBlock);
      double acc[kColBlock] = {0.0};
      for (int64_t i = 1; i < s.blocks(); ++i) {
        const int64_t e0 = s.edges[i], cols = s.cols(i);
        if (e0 <= c0) continue;  // columns c0.. are in panel i's diagonal block or beyond
        const int64_t cend = std::min(c1, e0);
        const T* panel = g[u] + s.offsets[i];
        for (int64_t rr = 0; rr < s.rows(i); ++rr) {
          const T* row = panel + rr * cols;
          for (int64_t c = c0; c < cend; ++c) acc[c - c0] += static_cast<double>(row[c]);
        }
      }
      for (int64_t c = c0; c < c1; ++c) rowsum[u * n + c] += acc[c - c0];
    }
  }
  off.assign(np, 0.0);
  diag.assign(np, 0.0);
  for (int64_t k = 0; k < ntasks; ++k) {
    const double* p = part.data() + k * 2 * np;
    for (int64_t q = 0; q < np; ++q) {
      off[q] += p[q];
      diag[q] += p[np + q];
    }
  }
  if (want_rowsums) {
    offsum.assign(static_cast<size_t>(ntaps), 0.0);
    for (int64_t u = 0; u < ntaps; ++u)
      for (int64_t r = 0; r < n; ++r) offsum[u] += rowsum[u * n + r];
  }
}

// HSIC from the terms above. Biased: <Kc, Lc> / (n-1)^2. Unbiased: Song et al. U-statistic.
inline double hsic_biased(double off, double diag, int64_t n) {
  const double m = static_cast<double>(n - 1);
  return (off + diag) / (m * m);
}

inline double hsic_unbiased(double off, double sum_u, double sum_v, double rowdot, int64_t n) {
  const double nd = static_cast<double>(n);
  return (off + sum_u * sum_v / ((nd - 1.0) * (nd - 2.0)) - 2.0 / (nd - 2.0) * rowdot) / (nd * (nd - 3.0));
}

// CKA = hxy / sqrt(hxx * hyy). A product <= 0 (a constant tap, or an unbiased self-HSIC that came
// out negative on tiny n) gives NaN, like the reference's 0/0; pytorch-cka would clamp instead.
inline double cka_ratio(double hxy, double hxx, double hyy) {
  const double den = hxx * hyy;
  if (!(den > 0.0)) return std::numeric_limits<double>::quiet_NaN();
  return hxy / std::sqrt(den);
}

// CKA between staircase Grams of A's taps (ga, ta of them) and B's (gb, tb of them), all built from
// column-centred features. diag_only: only pairs (t, t) (needs ta == tb), out has ta entries;
// otherwise out is ta x tb row-major.
template <typename T>
void cka_from_grams(const std::vector<const T*>& ga, const std::vector<const T*>& gb, const Staircase& s, bool unbiased,
                    bool diag_only, double* out, int nthreads = 0) {
  const int64_t ta = static_cast<int64_t>(ga.size()), tb = static_cast<int64_t>(gb.size()), n = s.n;
  if (diag_only && ta != tb) throw std::invalid_argument("cka_from_grams: diag needs as many taps in A as in B");
  if (unbiased && n < 4) throw std::invalid_argument("cka_from_grams: the unbiased estimator needs n >= 4");
  if (!unbiased && n < 2) throw std::invalid_argument("cka_from_grams: CKA needs n >= 2");
  std::vector<const T*> g(ga);
  g.insert(g.end(), gb.begin(), gb.end());
  // Pairs: self terms of every tap first, then the cross pairs asked for.
  std::vector<std::pair<int64_t, int64_t>> pairs;
  for (int64_t u = 0; u < ta + tb; ++u) pairs.emplace_back(u, u);
  if (diag_only) {
    for (int64_t t = 0; t < ta; ++t) pairs.emplace_back(t, ta + t);
  } else {
    for (int64_t a = 0; a < ta; ++a)
      for (int64_t b = 0; b < tb; ++b) pairs.emplace_back(a, ta + b);
  }
  std::vector<double> off, dg, rowsum, offsum;
  staircase_terms(g, s, pairs, unbiased, off, dg, rowsum, offsum, nthreads);
  auto hsic = [&](int64_t p) {
    const int64_t u = pairs[p].first, v = pairs[p].second;
    if (!unbiased) return hsic_biased(off[p], dg[p], n);
    double rowdot = 0.0;
    const double* ru = rowsum.data() + u * n;
    const double* rv = rowsum.data() + v * n;
    for (int64_t r = 0; r < n; ++r) rowdot += ru[r] * rv[r];
    return hsic_unbiased(off[p], offsum[u], offsum[v], rowdot, n);
  };
  std::vector<double> self(static_cast<size_t>(ta + tb));
  for (int64_t u = 0; u < ta + tb; ++u) self[u] = hsic(u);
  int64_t p = ta + tb;
  if (diag_only) {
    for (int64_t t = 0; t < ta; ++t, ++p) out[t] = cka_ratio(hsic(p), self[t], self[ta + t]);
  } else {
    for (int64_t a = 0; a < ta; ++a)
      for (int64_t b = 0; b < tb; ++b, ++p) out[a * tb + b] = cka_ratio(hsic(p), self[a], self[ta + b]);
  }
}

// Whole pipeline without torch: features (row-major n x d_t, contiguous) -> CKA. Plain-loop Grams,
// so it is the oracle of the ctest and of the CUDA kernels' test, not the fast path.
template <typename T>
void cka_matrix(const std::vector<const T*>& xa, const std::vector<int64_t>& da, const std::vector<const T*>& xb,
                const std::vector<int64_t>& db, int64_t n, bool unbiased, bool diag_only, double* out,
                int64_t block_rows = kDefaultBlockRows, int nthreads = 0) {
  const Staircase s = make_staircase(n, block_rows);
  auto grams = [&](const std::vector<const T*>& xs, const std::vector<int64_t>& ds) {
    std::vector<std::vector<T>> gs;
    for (size_t t = 0; t < xs.size(); ++t) {
      std::vector<T> xc(static_cast<size_t>(n * ds[t]));
      center_columns(xs[t], n, ds[t], ds[t], xc.data(), nthreads);
      gs.emplace_back(static_cast<size_t>(s.size()));
      gram_staircase(xc.data(), n, ds[t], s, gs.back().data(), nthreads);
    }
    return gs;
  };
  auto gsa = grams(xa, da);
  auto gsb = grams(xb, db);
  std::vector<const T*> pa, pb;
  for (auto& v : gsa) pa.push_back(v.data());
  for (auto& v : gsb) pb.push_back(v.data());
  cka_from_grams(pa, pb, s, unbiased, diag_only, out, nthreads);
}

}  // namespace cka
}  // namespace cnr_fast
