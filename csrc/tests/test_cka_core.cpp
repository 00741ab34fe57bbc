// Torch-free test of csrc/cka/cka_core.h against a plain full-matrix float64 implementation of the
// same formulas. Built and run by CMakeLists.txt (ctest); exits non-zero on the first failure.
#include "cka/cka_core.h"

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

namespace ck = cnr_fast::cka;

static int g_failures = 0;

#define CHECK(cond, ...)                          \
  do {                                            \
    if (!(cond)) {                                \
      std::fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
      std::fprintf(stderr, __VA_ARGS__);          \
      std::fprintf(stderr, "\n");                 \
      ++g_failures;                               \
    }                                             \
  } while (0)

// Full n x n centred Gram of x (n x d) in double.
static std::vector<double> full_gram(const std::vector<double>& x, int64_t n, int64_t d) {
  std::vector<double> mean(d, 0.0), xc(x);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < d; ++c) mean[c] += x[r * d + c] / n;
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < d; ++c) xc[r * d + c] -= mean[c];
  std::vector<double> k(n * n, 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t c = 0; c < d; ++c) k[i * n + j] += xc[i * d + c] * xc[j * d + c];
  return k;
}

// Textbook formulas on full matrices: biased tr(KHLH) (features already centred -> tr(KL)), and
// the unbiased estimator written literally with ones vectors on zero-diagonal Grams.
static double hsic_ref(const std::vector<double>& k, const std::vector<double>& l, int64_t n, bool unbiased) {
  if (!unbiased) {
    double s = 0;
    for (int64_t i = 0; i < n * n; ++i) s += k[i] * l[i];
    return s / double(n - 1) / double(n - 1);
  }
  std::vector<double> kt(k), lt(l);
  for (int64_t i = 0; i < n; ++i) kt[i * n + i] = lt[i * n + i] = 0;
  double tr = 0, sk = 0, sl = 0, kl1 = 0;
  std::vector<double> k1(n, 0), l1(n, 0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      tr += kt[i * n + j] * lt[j * n + i];
      sk += kt[i * n + j];
      sl += lt[i * n + j];
      k1[i] += kt[i * n + j];
      l1[i] += lt[i * n + j];
    }
  for (int64_t i = 0; i < n; ++i) kl1 += k1[i] * l1[i];  // 1^T K L 1 with K, L symmetric
  const double nd = double(n);
  return (tr + sk * sl / ((nd - 1) * (nd - 2)) - 2.0 / (nd - 2) * kl1) / (nd * (nd - 3));
}

template <typename T>
static void run_case(int64_t n, const std::vector<int64_t>& da, const std::vector<int64_t>& db, bool unbiased,
                     int64_t block_rows, double tol, std::mt19937& rng) {
  std::normal_distribution<double> nd(0.0, 1.0);
  auto make = [&](const std::vector<int64_t>& ds, std::vector<std::vector<double>>& xd, std::vector<std::vector<T>>& xt) {
    for (int64_t d : ds) {
      std::vector<double> x(n * d);
      for (auto& v : x) v = std::max(0.0, nd(rng)) + 0.2 * nd(rng) + 0.5;  // ReLU-like, non-zero mean, never constant
      xd.push_back(x);
      xt.emplace_back(x.begin(), x.end());
    }
  };
  std::vector<std::vector<double>> xad, xbd;
  std::vector<std::vector<T>> xat, xbt;
  make(da, xad, xat);
  make(db, xbd, xbt);
  // Tie B's first tap to A's first one so that some values are far from 0.
  if (da[0] == db[0])
    for (int64_t i = 0; i < n * da[0]; ++i) {
      xbd[0][i] = 2.0 * xad[0][i] + 0.1 * nd(rng);
      xbt[0][i] = static_cast<T>(xbd[0][i]);
    }
  std::vector<const T*> pa, pb;
  for (auto& v : xat) pa.push_back(v.data());
  for (auto& v : xbt) pb.push_back(v.data());
  const int64_t ta = da.size(), tb = db.size();
  std::vector<double> got(ta * tb);
  ck::cka_matrix(pa, da, pb, db, n, unbiased, false, got.data(), block_rows);
  std::vector<std::vector<double>> ka, kb;
  for (int64_t a = 0; a < ta; ++a) ka.push_back(full_gram(xad[a], n, da[a]));
  for (int64_t b = 0; b < tb; ++b) kb.push_back(full_gram(xbd[b], n, db[b]));
  for (int64_t a = 0; a < ta; ++a)
    for (int64_t b = 0; b < tb; ++b) {
      const double want = hsic_ref(ka[a], kb[b], n, unbiased) /
                          std::sqrt(hsic_ref(ka[a], ka[a], n, unbiased) * hsic_ref(kb[b], kb[b], n, unbiased));
      const double g = got[a * tb + b];
      CHECK(std::fabs(g - want) <= tol, "n=%lld da=%lld db=%lld unbiased=%d block=%lld T=%s: got %.10f want %.10f",
            (long long)n, (long long)da[a], (long long)db[b], (int)unbiased, (long long)block_rows,
            sizeof(T) == 4 ? "float" : "double", g, want);
    }
  if (ta == tb) {  // diag mode = diagonal of the full matrix
    std::vector<double> dgot(ta);
    ck::cka_matrix(pa, da, pb, db, n, unbiased, true, dgot.data(), block_rows);
    for (int64_t t = 0; t < ta; ++t)
      CHECK(std::fabs(dgot[t] - got[t * tb + t]) <= 1e-12 || (std::isnan(dgot[t]) && std::isnan(got[t * tb + t])),
            "diag mode t=%lld: %.12f vs %.12f", (long long)t, dgot[t], got[t * tb + t]);
  }
  // CKA(X, X) = 1
  std::vector<double> self(ta * ta);
  ck::cka_matrix(pa, da, pa, da, n, unbiased, true, self.data(), block_rows);
  for (int64_t t = 0; t < ta; ++t) CHECK(std::fabs(self[t] - 1.0) <= tol, "CKA(X,X) = %.10f", self[t]);
}

int main() {
  std::mt19937 rng(1234);
  // Staircase layout covers every entry of the lower triangle exactly once per (r, c <= panel end).
  for (int64_t n : {1, 2, 7, 33, 256, 1000})
    for (int64_t br : {1, 3, 64, 256}) {
      auto s = ck::make_staircase(n, br);
      int64_t total = 0;
      for (int64_t i = 0; i < s.blocks(); ++i) total += s.rows(i) * s.cols(i);
      CHECK(s.edges.front() == 0 && s.edges.back() == n && total == s.size(), "staircase n=%lld br=%lld",
            (long long)n, (long long)br);
    }
  for (bool unbiased : {false, true})
    for (int64_t n : {7, 33})
      for (int64_t br : {1, 3, 256}) {
        run_case<double>(n, {1, 5, 130}, {5, 1}, unbiased, br, 1e-10, rng);
        run_case<float>(n, {1, 5, 130}, {5, 1}, unbiased, br, 2e-4, rng);
        run_case<double>(n, {5, 130}, {5, 9}, unbiased, br, 1e-10, rng);
      }
  // Larger n exercises multi-panel staircases with the default block size.
  run_case<float>(600, {40, 7}, {40, 300}, true, ck::kDefaultBlockRows, 1e-4, rng);
  run_case<double>(600, {40, 7}, {40, 300}, false, ck::kDefaultBlockRows, 1e-10, rng);
  // Errors: unbiased needs n >= 4, diag needs equal tap counts.
  {
    std::vector<float> x(3 * 2, 1.0f);
    std::vector<const float*> p{x.data()};
    std::vector<int64_t> d{2};
    double out[1];
    bool threw = false;
    try {
      ck::cka_matrix(p, d, p, d, 3, true, false, out);
    } catch (const std::invalid_argument&) {
      threw = true;
    }
    CHECK(threw, "unbiased with n=3 must throw");
  }
  if (g_failures) {
    std::fprintf(stderr, "%d failure(s)\n", g_failures);
    return 1;
  }
  std::printf("test_cka_core: all passed\n");
  return 0;
}
