// Torch-free test of csrc/cka/cuda/cka_kernels.cuh: Grams by a plain kernel here, then the
// kernels' row statistics and CKA finalisation, against cka_core.h on the host.
// Exit 77 (ctest SKIP_RETURN_CODE) when no CUDA device is visible.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "cka/cka_core.h"
#include "cka/cuda/cka_kernels.cuh"

namespace ck = cnr_fast::cka;

#define CUDA_OK(expr)                                                                  \
  do {                                                                                 \
    cudaError_t e_ = (expr);                                                           \
    if (e_ != cudaSuccess) {                                                           \
      std::fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, cudaGetErrorString(e_)); \
      return 1;                                                                        \
    }                                                                                  \
  } while (0)

// g[t] = Xc Xc^T for centred features xc (n x d, on device), full n x n.
__global__ void gram_kernel(const double* xc, int64_t n, int64_t d, double* g) {
  const int64_t i = blockIdx.y, j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (j >= n) return;
  double s = 0;
  for (int64_t k = 0; k < d; ++k) s += xc[i * d + k] * xc[j * d + k];
  g[i * n + j] = s;
}

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("test_cka_cuda: no CUDA device, skipped\n");
    return 77;
  }
  const int64_t n = 37;
  const std::vector<int64_t> da{5, 130}, db{1, 5, 64};
  std::mt19937 rng(7);
  std::normal_distribution<double> nd(0, 1);
  auto make = [&](const std::vector<int64_t>& ds) {
    std::vector<std::vector<double>> xs;
    for (int64_t d : ds) {
      std::vector<double> x(n * d);
      for (auto& v : x) v = std::max(0.0, nd(rng)) + 0.3;
      xs.push_back(x);
    }
    return xs;
  };
  auto xa = make(da), xb = make(db);
  int failures = 0;
  for (bool unbiased : {false, true}) {
    // Host oracle.
    std::vector<const double*> pa, pb;
    for (auto& v : xa) pa.push_back(v.data());
    for (auto& v : xb) pb.push_back(v.data());
    std::vector<double> want(da.size() * db.size());
    ck::cka_matrix(pa, da, pb, db, n, unbiased, false, want.data());
    // Device: centred features -> Grams -> row stats -> pair sums (host, from the device Grams) -> finalize.
    auto device_terms = [&](const std::vector<std::vector<double>>& xs, const std::vector<int64_t>& ds,
                            std::vector<double>& grams, std::vector<double>& rowsum) -> int {
      const int64_t T = ds.size();
      double* g = nullptr;
      double *rs = nullptr, *dg = nullptr;
      CUDA_OK(cudaMalloc(&g, sizeof(double) * T * n * n));
      CUDA_OK(cudaMalloc(&rs, sizeof(double) * T * n));
      CUDA_OK(cudaMalloc(&dg, sizeof(double) * T * n));
      for (int64_t t = 0; t < T; ++t) {
        std::vector<double> xc(n * ds[t]);
        ck::center_columns(xs[t].data(), n, ds[t], ds[t], xc.data());
        double* dx = nullptr;
        CUDA_OK(cudaMalloc(&dx, sizeof(double) * xc.size()));
        CUDA_OK(cudaMemcpy(dx, xc.data(), sizeof(double) * xc.size(), cudaMemcpyHostToDevice));
        gram_kernel<<<dim3((n + 63) / 64, n), 64>>>(dx, n, ds[t], g + t * n * n);
        CUDA_OK(cudaGetLastError());
        CUDA_OK(cudaDeviceSynchronize());
        CUDA_OK(cudaFree(dx));
      }
      ck::cuda::row_stats_kernel<double><<<dim3(n, T), ck::cuda::kRowThreads>>>(g, n, rs, dg, unbiased);
      CUDA_OK(cudaGetLastError());
      grams.resize(T * n * n);
      rowsum.resize(T * n);
      CUDA_OK(cudaMemcpy(grams.data(), g, sizeof(double) * grams.size(), cudaMemcpyDeviceToHost));
      CUDA_OK(cudaMemcpy(rowsum.data(), rs, sizeof(double) * rowsum.size(), cudaMemcpyDeviceToHost));
      CUDA_OK(cudaFree(g));
      CUDA_OK(cudaFree(rs));
      CUDA_OK(cudaFree(dg));
      return 0;
    };
    std::vector<double> gA, gB, rA, rB;
    if (device_terms(xa, da, gA, rA) || device_terms(xb, db, gB, rB)) return 1;
    const int64_t ta = da.size(), tb = db.size(), nn = n * n;
    auto fro = [&](const double* x, const double* y) {
      double s = 0;
      for (int64_t k = 0; k < nn; ++k) s += x[k] * y[k];
      return s;
    };
    auto rdot = [&](const double* x, const double* y) {
      double s = 0;
      for (int64_t k = 0; k < n; ++k) s += x[k] * y[k];
      return s;
    };
    std::vector<double> cross(ta * tb), self_a(ta), self_b(tb), sum_a(ta), sum_b(tb), rowdot(ta * tb), rd_a(ta),
        rd_b(tb);
    for (int64_t a = 0; a < ta; ++a) {
      self_a[a] = fro(&gA[a * nn], &gA[a * nn]);
      rd_a[a] = rdot(&rA[a * n], &rA[a * n]);
      sum_a[a] = 0;
      for (int64_t r = 0; r < n; ++r) sum_a[a] += rA[a * n + r];
      for (int64_t b = 0; b < tb; ++b) {
        cross[a * tb + b] = fro(&gA[a * nn], &gB[b * nn]);
        rowdot[a * tb + b] = rdot(&rA[a * n], &rB[b * n]);
      }
    }
    for (int64_t b = 0; b < tb; ++b) {
      self_b[b] = fro(&gB[b * nn], &gB[b * nn]);
      rd_b[b] = rdot(&rB[b * n], &rB[b * n]);
      sum_b[b] = 0;
      for (int64_t r = 0; r < n; ++r) sum_b[b] += rB[b * n + r];
    }
    std::vector<std::vector<double>*> ins{&cross, &self_a, &self_b, &sum_a, &sum_b, &rowdot, &rd_a, &rd_b};
    std::vector<double*> dev(ins.size());
    for (size_t k = 0; k < ins.size(); ++k) {
      CUDA_OK(cudaMalloc(&dev[k], sizeof(double) * ins[k]->size()));
      CUDA_OK(cudaMemcpy(dev[k], ins[k]->data(), sizeof(double) * ins[k]->size(), cudaMemcpyHostToDevice));
    }
    double* dout = nullptr;
    CUDA_OK(cudaMalloc(&dout, sizeof(double) * ta * tb));
    ck::cuda::finalize_cka_kernel<<<1, 128>>>(dev[0], dev[1], dev[2], dev[3], dev[4], dev[5], dev[6], dev[7], ta, tb, n,
                                              unbiased, false, dout);
    CUDA_OK(cudaGetLastError());
    std::vector<double> got(ta * tb);
    CUDA_OK(cudaMemcpy(got.data(), dout, sizeof(double) * got.size(), cudaMemcpyDeviceToHost));
    for (auto* p : dev) CUDA_OK(cudaFree(p));
    CUDA_OK(cudaFree(dout));
    for (int64_t k = 0; k < ta * tb; ++k)
      if (!(std::fabs(got[k] - want[k]) <= 1e-10)) {
        std::fprintf(stderr, "FAIL unbiased=%d pair %lld: got %.12f want %.12f\n", (int)unbiased, (long long)k, got[k],
                     want[k]);
        ++failures;
      }
  }
  if (failures) return 1;
  std::printf("test_cka_cuda: all passed\n");
  return 0;
}
