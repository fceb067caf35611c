// CUDA kernels of the WNLL solver and the CUDA registration of the fastwnll::wnll_solve / wnll_adjoint ops.
// Semantics mirror csrc/cpu/wnll_cpu.cpp exactly (same sums in the same order per row; only the rounding
// of fused multiply-adds and the grouping of the column reductions differ).
//
// Layout of the work: a group of G lanes (G = 4, 8, 16 or 32, the smallest covering min(C, 32)) handles
// one query row, lane c handling column c; C > 32 columns are handled in chunks of 32 by successive
// launches. Blocks stride over the rows (grid capped at full occupancy of the device).
//
// Column reductions (pq, rz, zz) are single-pass and deterministic: every thread sums its rows in a fixed
// order, every block sums its groups in a fixed order into a partial, and the last block to finish sums the
// partials in block order. The count of finished blocks lives in one int per (device, stream), zero
// between kernels (the last block resets it); kernels on one stream run in order, so they share it.
//
// Only c10/cuda headers are used (not ATen/cuda/CUDAContext.h, which needs the cuBLAS/cuSPARSE headers that a
// minimal CUDA toolkit lacks).
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <initializer_list>
#include <map>
#include <mutex>
#include <type_traits>
#include <utility>

#include "../wnll.h"

namespace fastwnll {
namespace {

constexpr int kThreads = 256;  // threads per block
constexpr int kWarps = kThreads / 32;
constexpr int kBlocksPerSM = 2048 / kThreads;  // full occupancy of an SM
constexpr int kMaxGroup = 32;                  // lanes per row at most: columns per launch

// ----------------------------------------------------------------------------------------------------
// Launch geometry and the reduction counter
// ----------------------------------------------------------------------------------------------------
int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Number of SMs of the current device (queried once per device).
int64_t sm_count() {
  static std::array<std::atomic<int>, C10_COMPILE_TIME_MAX_GPUS> cache{};
  const c10::DeviceIndex device = c10::cuda::current_device();
  int count = cache[device].load(std::memory_order_relaxed);
  if (count == 0) {
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
    cache[device].store(count, std::memory_order_relaxed);
  }
  return count;
}

// Blocks for `items` work items of `per_block` each, capped at full occupancy of the device (the kernels
// stride over the rest).
int grid_size(int64_t items, int64_t per_block) {
  const int64_t cap = sm_count() * kBlocksPerSM;
  return static_cast<int>(std::max<int64_t>(1, std::min(ceil_div(items, per_block), cap)));
}

// Lanes per row: the smallest of 4, 8, 16, 32 that covers min(C, 32) columns.
int group_size(int64_t C) { return C <= 4 ? 4 : C <= 8 ? 8 : C <= 16 ? 16 : kMaxGroup; }

// Calls f(std::integral_constant<int, G>) for the runtime group size g.
template <typename F>
void with_group(int g, const F& f) {
  switch (g) {
    case 4:
      return f(std::integral_constant<int, 4>());
    case 8:
      return f(std::integral_constant<int, 8>());
    case 16:
      return f(std::integral_constant<int, 16>());
    default:
      return f(std::integral_constant<int, kMaxGroup>());
  }
}

// The finished-block counter of the current stream's reductions (zero between kernels).
unsigned int* block_counter() {
  static std::mutex mutex;
  // Never freed on purpose: static tensors would be released after the CUDA runtime shuts down.
  static auto* counters = new std::map<std::pair<c10::DeviceIndex, c10::StreamId>, at::Tensor>();
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const std::lock_guard<std::mutex> lock(mutex);
  const auto key = std::make_pair(stream.device_index(), stream.id());
  auto it = counters->find(key);
  if (it == counters->end()) {  // zeroed on this stream, before any kernel that uses it
    const auto opts = at::TensorOptions().dtype(at::kInt).device(at::kCUDA, stream.device_index());
    it = counters->emplace(key, at::zeros({1}, opts)).first;
  }
  return reinterpret_cast<unsigned int*>(it->second.data_ptr<int>());
}

// Output columns of a reduction: out.col[o][c0 + lane] receives output o of the chunk's lane.
template <int NOUT>
struct Outputs {
  double* col[NOUT];
};

// Sums acc[o] of every thread over the grid for each lane (column) of the group and writes the totals to
// out.col[o][c0 + lane] for lanes < width. partial holds gridDim.x * NOUT * G doubles. Must be reached by
// every thread of every block.
template <int G, int NOUT>
__device__ void grid_reduce(const double (&acc)[NOUT], double* __restrict__ partial, unsigned int* counter,
                            const Outputs<NOUT>& out, int64_t c0, int width) {
  __shared__ double shared[NOUT][kThreads];
  __shared__ bool is_last;
  const int t = threadIdx.x;
  for (int o = 0; o < NOUT; ++o) shared[o][t] = acc[o];
  __syncthreads();
  if (t < NOUT * G) {  // block partial of (output o, lane): its groups in order
    const int o = t / G, lane = t % G;
    double s = 0.0;
    for (int g = 0; g < kThreads / G; ++g) s += shared[o][g * G + lane];
    partial[static_cast<int64_t>(blockIdx.x) * NOUT * G + t] = s;
  }
  __threadfence();  // the partials are visible device-wide before this block counts as finished
  __syncthreads();
  if (t == 0) is_last = atomicAdd(counter, 1u) == gridDim.x - 1;
  __syncthreads();
  if (!is_last) return;
  __threadfence();
  const int warp = t / 32, l32 = t % 32;
#pragma unroll
  for (int o = 0; o < NOUT; ++o) {                         // (compile-time o: out.col stays in registers)
    for (int lane = warp; lane < width; lane += kWarps) {  // one (output, lane) pair per warp: blocks in order
      double s = 0.0;
      for (int64_t b = l32; b < gridDim.x; b += 32) s += __ldcg(partial + b * NOUT * G + o * G + lane);
      for (int off = 16; off > 0; off >>= 1) s += __shfl_down_sync(0xffffffffu, s, off);
      if (l32 == 0) out.col[o][c0 + lane] = s;
    }
  }
  if (t == 0) *counter = 0;
}

// ----------------------------------------------------------------------------------------------------
// Kernels
// ----------------------------------------------------------------------------------------------------
// First row of this thread's group and the stride of the grid over rows.
template <int G>
__device__ int64_t first_row() {
  return static_cast<int64_t>(blockIdx.x) * (kThreads / G) + threadIdx.x / G;
}
template <int G>
__device__ int64_t row_stride() {
  return static_cast<int64_t>(gridDim.x) * (kThreads / G);
}

// diag/dinv of every query row; with width > 0 also B[:, c0:c0+width] = (S_UL + mu W_LU^T) Y.
template <typename scalar_t, int G>
__global__ void __launch_bounds__(kThreads)
    assemble_kernel(const int64_t* __restrict__ idx, const scalar_t* __restrict__ w, const int64_t* __restrict__ src,
                    const scalar_t* __restrict__ iw, const int64_t* __restrict__ beg, const int64_t* __restrict__ mid,
                    const scalar_t* __restrict__ Y, scalar_t* __restrict__ B, scalar_t* __restrict__ diag,
                    scalar_t* __restrict__ dinv, int64_t n_u, int64_t m, int64_t k, int64_t C, int64_t c0, int width,
                    scalar_t boundary) {
  const int lane = threadIdx.x % G;
  const bool column = lane < width;
  const int64_t c = c0 + lane;
  for (int64_t r = first_row<G>(); r < n_u; r += row_stride<G>()) {
    const int64_t i = m + r;
    scalar_t d = 0, b = 0;
    for (int64_t t = 0; t < k; ++t) {  // out-edges i -> j: S_ij gets w_ij
      const int64_t j = idx[i * k + t];
      const scalar_t v = w[i * k + t];
      d += v;
      if (column && j < m) b += v * Y[j * C + c];
    }
    const int64_t from_queries = mid[r], end = beg[r + 1];
    for (int64_t e = beg[r]; e < from_queries; ++e) {  // in-edges j -> i from templates: (1 + mu) w_ji
      const scalar_t v = boundary * iw[e];
      d += v;
      if (column) b += v * Y[src[e] * C + c];
    }
    for (int64_t e = from_queries; e < end; ++e) d += iw[e];  // in-edges from queries
    if (column) B[r * C + c] = b;
    if (lane == 0) {
      diag[r] = d;
      dinv[r] = d > 0 ? scalar_t(1) / d : scalar_t(0);
    }
  }
}

// Q[:, c0:c0+width] = A P[:, c0:c0+width]; pq[c] = <P[:, c], Q[:, c]>.
template <typename scalar_t, int G>
__global__ void __launch_bounds__(kThreads)
    apply_kernel(const int64_t* __restrict__ idx, const scalar_t* __restrict__ w, const int64_t* __restrict__ src,
                 const scalar_t* __restrict__ iw, const int64_t* __restrict__ beg, const int64_t* __restrict__ mid,
                 const scalar_t* __restrict__ diag, const scalar_t* __restrict__ P, scalar_t* __restrict__ Q,
                 int64_t n_u, int64_t m, int64_t k, int64_t C, int64_t c0, int width, double* __restrict__ partial,
                 unsigned int* counter, Outputs<1> pq) {
  const int lane = threadIdx.x % G;
  const int64_t c = c0 + lane;
  double acc[1] = {0.0};
  if (lane < width) {
    for (int64_t r = first_row<G>(); r < n_u; r += row_stride<G>()) {
      const int64_t i = m + r;
      const scalar_t pr = P[r * C + c];
      scalar_t sum = diag[r] * pr;
      for (int64_t t = 0; t < k; ++t) {  // out-neighbours that are queries
        const int64_t j = idx[i * k + t];
        if (j >= m) sum -= w[i * k + t] * P[(j - m) * C + c];
      }
      const int64_t end = beg[r + 1];
      for (int64_t e = mid[r]; e < end; ++e) sum -= iw[e] * P[(src[e] - m) * C + c];  // in-neighbours, queries
      Q[r * C + c] = sum;
      acc[0] += static_cast<double>(pr) * static_cast<double>(sum);
    }
  }
  grid_reduce<G, 1>(acc, partial, counter, pq, c0, width);
}

// alpha = safe_ratio(rz, pq); X += alpha P; R -= alpha Q; Z = dinv R; rz_new = <R, Z>, zz = <Z, Z>.
template <typename scalar_t, int G>
__global__ void __launch_bounds__(kThreads)
    update_kernel(const scalar_t* __restrict__ dinv, const double* __restrict__ rz, const double* __restrict__ pq,
                  scalar_t* __restrict__ X, scalar_t* __restrict__ R, scalar_t* __restrict__ Z,
                  const scalar_t* __restrict__ P, const scalar_t* __restrict__ Q, int64_t n_u, int64_t C, int64_t c0,
                  int width, double* __restrict__ partial, unsigned int* counter, Outputs<2> rz_zz) {
  const int lane = threadIdx.x % G;
  const int64_t c = c0 + lane;
  double acc[2] = {0.0, 0.0};
  if (lane < width) {
    const scalar_t alpha = static_cast<scalar_t>(safe_ratio(rz[c], pq[c]));
    for (int64_t r = first_row<G>(); r < n_u; r += row_stride<G>()) {
      const int64_t e = r * C + c;
      X[e] += alpha * P[e];
      const scalar_t rv = R[e] - alpha * Q[e];
      const scalar_t zv = dinv[r] * rv;
      R[e] = rv;
      Z[e] = zv;
      acc[0] += static_cast<double>(rv) * static_cast<double>(zv);
      acc[1] += static_cast<double>(zv) * static_cast<double>(zv);
    }
  }
  grid_reduce<G, 2>(acc, partial, counter, rz_zz, c0, width);
}

// beta = safe_ratio(rz_new, rz_old); P = Z + beta P.
template <typename scalar_t, int G>
__global__ void __launch_bounds__(kThreads)
    direction_kernel(const double* __restrict__ rz_new, const double* __restrict__ rz_old,
                     const scalar_t* __restrict__ Z, scalar_t* __restrict__ P, int64_t n_u, int64_t C, int64_t c0,
                     int width) {
  const int lane = threadIdx.x % G;
  if (lane >= width) return;
  const int64_t c = c0 + lane;
  const scalar_t beta = static_cast<scalar_t>(safe_ratio(rz_new[c], rz_old[c]));
  for (int64_t r = first_row<G>(); r < n_u; r += row_stride<G>()) {
    const int64_t e = r * C + c;
    P[e] = Z[e] + beta * P[e];
  }
}

// One thread per directed edge p = i * k + t: g[p] = -c_ij <Lam_i - Lam_j, u_i - u_j>.
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    edge_grad_kernel(const int64_t* __restrict__ idx, const scalar_t* __restrict__ Y, const scalar_t* __restrict__ U,
                     const scalar_t* __restrict__ L, scalar_t* __restrict__ g, int64_t n, int64_t k, int64_t m,
                     int64_t C, double mu) {
  const int64_t edges = n * k, stride = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; p < edges; p += stride) {
    const int64_t i = p / k, j = idx[p];
    const bool i_query = i >= m, j_query = j >= m;
    double dot = 0.0;
    if (i_query || j_query) {  // Lam vanishes on templates
      const scalar_t* ui = i_query ? U + (i - m) * C : Y + i * C;
      const scalar_t* uj = j_query ? U + (j - m) * C : Y + j * C;
      for (int64_t c = 0; c < C; ++c) {
        const double li = i_query ? static_cast<double>(L[(i - m) * C + c]) : 0.0;
        const double lj = j_query ? static_cast<double>(L[(j - m) * C + c]) : 0.0;
        dot += (li - lj) * (static_cast<double>(ui[c]) - static_cast<double>(uj[c]));
      }
    }
    const double coef = (!i_query && j_query) ? 1.0 + mu : 1.0;
    g[p] = static_cast<scalar_t>(-coef * dot);
  }
}

// ----------------------------------------------------------------------------------------------------
// Backend functions
// ----------------------------------------------------------------------------------------------------
// Calls f(G, c0, width) for every chunk of at most 32 columns of C (one chunk for C <= 32).
template <typename F>
void for_each_chunk(int64_t C, const F& f) {
  const int g = group_size(C);
  for (int64_t c0 = 0; c0 < C; c0 += g) f(g, c0, static_cast<int>(std::min<int64_t>(g, C - c0)));
}

// The sort-based transposition of idx clamped to [0, n), so that the kernels index memory in bounds
// whatever the caller passed. The range of the caller's idx is checked by the solver with its first
// convergence test, in the same host synchronisation (QuerySystem::idx_range).
void transpose_cuda(QuerySystem& s) {
  const auto range = at::aminmax(s.idx);
  s.idx_range = at::stack({std::get<0>(range), std::get<1>(range)}).to(at::kDouble);
  s.idx = s.idx.clamp(0, s.n - 1);
  transpose_by_sort(s);
}

void assemble_cuda(QuerySystem& s, double mu, const at::Tensor& y, at::Tensor& b) {
  const bool with_b = b.defined();
  const int64_t C = with_b ? b.size(1) : 0;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(s.w.scalar_type(), "wnll_assemble_cuda", [&] {
    const auto boundary = static_cast<scalar_t>(1.0 + mu);
    const auto launch = [&](int g, int64_t c0, int width) {
      with_group(g, [&](auto group) {
        constexpr int G = decltype(group)::value;
        assemble_kernel<scalar_t, G><<<grid_size(s.n_u, kThreads / G), kThreads, 0, stream>>>(
            s.idx.data_ptr<int64_t>(), s.w.data_ptr<scalar_t>(), s.in_src.data_ptr<int64_t>(),
            s.in_w.data_ptr<scalar_t>(), s.in_begin.data_ptr<int64_t>(), s.in_mid.data_ptr<int64_t>(),
            with_b ? y.data_ptr<scalar_t>() : nullptr, with_b ? b.data_ptr<scalar_t>() : nullptr,
            s.diag.data_ptr<scalar_t>(), s.dinv.data_ptr<scalar_t>(), s.n_u, s.m, s.k, C, c0, width, boundary);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    };
    if (with_b) {
      for_each_chunk(C, launch);
    } else {
      launch(group_size(1), 0, 0);  // diagonal only
    }
  });
}

void apply_cuda(const QuerySystem& s, const at::Tensor& P, at::Tensor& Q, at::Tensor& pq) {
  const int64_t C = P.size(1);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  unsigned int* counter = block_counter();
  const int grid = grid_size(s.n_u, kThreads / group_size(C));
  const auto partial = at::empty({grid * group_size(C)}, pq.options());
  AT_DISPATCH_FLOATING_TYPES(P.scalar_type(), "wnll_apply_cuda", [&] {
    for_each_chunk(C, [&](int g, int64_t c0, int width) {
      with_group(g, [&](auto group) {
        constexpr int G = decltype(group)::value;
        apply_kernel<scalar_t, G><<<grid, kThreads, 0, stream>>>(
            s.idx.data_ptr<int64_t>(), s.w.data_ptr<scalar_t>(), s.in_src.data_ptr<int64_t>(),
            s.in_w.data_ptr<scalar_t>(), s.in_begin.data_ptr<int64_t>(), s.in_mid.data_ptr<int64_t>(),
            s.diag.data_ptr<scalar_t>(), P.data_ptr<scalar_t>(), Q.data_ptr<scalar_t>(), s.n_u, s.m, s.k, C, c0, width,
            partial.data_ptr<double>(), counter, Outputs<1>{{pq.data_ptr<double>()}});
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  });
}

void update_cuda(const at::Tensor& dinv, const at::Tensor& rz, const at::Tensor& pq, at::Tensor& X, at::Tensor& R,
                 at::Tensor& Z, const at::Tensor& P, const at::Tensor& Q, at::Tensor& rz_new, at::Tensor& zz) {
  const int64_t n_u = X.size(0), C = X.size(1);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  unsigned int* counter = block_counter();
  const int grid = grid_size(n_u, kThreads / group_size(C));
  const auto partial = at::empty({grid * 2 * group_size(C)}, rz.options());
  AT_DISPATCH_FLOATING_TYPES(X.scalar_type(), "wnll_update_cuda", [&] {
    for_each_chunk(C, [&](int g, int64_t c0, int width) {
      with_group(g, [&](auto group) {
        constexpr int G = decltype(group)::value;
        update_kernel<scalar_t, G><<<grid, kThreads, 0, stream>>>(
            dinv.data_ptr<scalar_t>(), rz.data_ptr<double>(), pq.data_ptr<double>(), X.data_ptr<scalar_t>(),
            R.data_ptr<scalar_t>(), Z.data_ptr<scalar_t>(), P.data_ptr<scalar_t>(), Q.data_ptr<scalar_t>(), n_u, C, c0,
            width, partial.data_ptr<double>(), counter, Outputs<2>{{rz_new.data_ptr<double>(), zz.data_ptr<double>()}});
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  });
}

void direction_cuda(const at::Tensor& rz_new, const at::Tensor& rz_old, const at::Tensor& Z, at::Tensor& P) {
  const int64_t n_u = P.size(0), C = P.size(1);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(P.scalar_type(), "wnll_direction_cuda", [&] {
    for_each_chunk(C, [&](int g, int64_t c0, int width) {
      with_group(g, [&](auto group) {
        constexpr int G = decltype(group)::value;
        direction_kernel<scalar_t, G><<<grid_size(n_u, kThreads / G), kThreads, 0, stream>>>(
            rz_new.data_ptr<double>(), rz_old.data_ptr<double>(), Z.data_ptr<scalar_t>(), P.data_ptr<scalar_t>(), n_u,
            C, c0, width);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  });
}

void edge_grad_cuda(const at::Tensor& idx, const at::Tensor& y, const at::Tensor& u, const at::Tensor& lam, double mu,
                    at::Tensor& grad_w) {
  const int64_t n = idx.size(0), k = idx.size(1), m = y.size(0), C = y.size(1);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "wnll_edge_grad_cuda", [&] {
    edge_grad_kernel<scalar_t><<<grid_size(n * k, kThreads), kThreads, 0, stream>>>(
        idx.data_ptr<int64_t>(), y.data_ptr<scalar_t>(), u.data_ptr<scalar_t>(), lam.data_ptr<scalar_t>(),
        grad_w.data_ptr<scalar_t>(), n, k, m, C, mu);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

const Backend& cuda_backend() {
  static const Backend backend{8,           transpose_cuda, assemble_cuda, apply_cuda,
                               update_cuda, direction_cuda, edge_grad_cuda};
  return backend;
}

// Makes the device of the first CUDA tensor current (the dispatcher chose this backend because one input
// is on CUDA); mismatched devices are then reported by the solver's input checks.
void guard_first_cuda(c10::cuda::OptionalCUDAGuard& guard, std::initializer_list<const at::Tensor*> tensors) {
  for (const at::Tensor* t : tensors) {
    if (t->is_cuda()) {
      guard.set_device(t->device());
      return;
    }
  }
}

SolveOutputs wnll_solve_cuda(const at::Tensor& idx, const at::Tensor& w, const at::Tensor& y, double mu, double tol,
                             int64_t max_iter) {
  c10::cuda::OptionalCUDAGuard guard;
  guard_first_cuda(guard, {&idx, &w, &y});
  return wnll_solve(cuda_backend(), idx, w, y, mu, tol, max_iter);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> wnll_adjoint_cuda(const at::Tensor& idx, const at::Tensor& w,
                                                                 const at::Tensor& y, const at::Tensor& u,
                                                                 const at::Tensor& grad_u, double mu, double tol,
                                                                 int64_t max_iter) {
  c10::cuda::OptionalCUDAGuard guard;
  guard_first_cuda(guard, {&idx, &w, &y, &u, &grad_u});
  return wnll_adjoint(cuda_backend(), idx, w, y, u, grad_u, mu, tol, max_iter);
}

}  // namespace
}  // namespace fastwnll

TORCH_LIBRARY_IMPL(fastwnll, CUDA, m) {
  m.impl("wnll_solve", &fastwnll::wnll_solve_cuda);
  m.impl("wnll_adjoint", &fastwnll::wnll_adjoint_cuda);
}
