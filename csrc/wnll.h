// WNLL Laplacian solver shared by the CPU and CUDA backends (docs/design.md, section 2).
//
// Node convention: nodes 0..m-1 are the labelled templates (L), m..n-1 the queries (U), n_U = n - m.
// Directed kNN edges i -> idx[i, t] with weight w[i, t]. The query block of the system is
//     A = diag(dgr) - S_UU,  S = W + W^T,  dgr_i = sum_j S_ij + mu * sum_{j in L} w_ji,
//     b = (S_UL + mu * W_LU^T) Y_L.
// Row i (query r = i - m) of A couples i with its out-neighbours idx[i, :] (read in place from idx, w)
// and with its in-neighbours, found through a transposed edge list sorted by (target, source): the
// in-edges of query r are positions [in_begin[r], in_begin[r+1]) of (in_src, in_w), those from
// templates first ([in_begin[r], in_mid[r])), then those from queries ([in_mid[r], in_begin[r+1])).
// Duplicate entries are kept (summed by the kernels); the sort makes every sum's order deterministic.
#pragma once

#include <ATen/ATen.h>

#include <tuple>

#if defined(__CUDACC__)
#define FASTWNLL_HOST_DEVICE __host__ __device__ inline
#else
#define FASTWNLL_HOST_DEVICE inline
#endif

namespace fastwnll {

// num / den, or 0 when den <= 0: the CG step length and direction update of a column whose residual
// (or search direction) is already exactly zero, which would otherwise be 0/0.
FASTWNLL_HOST_DEVICE double safe_ratio(double num, double den) { return den > 0.0 ? num / den : 0.0; }

// The query block of the WNLL system, in the layout described above. Tensors on one device;
// idx/in_* int64, w/in_w/diag/dinv in w's dtype (float32 or float64), all contiguous.
struct QuerySystem {
  int64_t n = 0, m = 0, k = 0, n_u = 0;
  at::Tensor idx, w;        // [n, k]
  at::Tensor in_src, in_w;  // [n * k] all edges, sorted by (target, source)
  at::Tensor in_begin;      // [n_U + 1]
  at::Tensor in_mid;        // [n_U]
  at::Tensor diag, dinv;    // [n_U]: dgr, and 1/dgr (0 where dgr == 0)
  // Backends that do not check the range of the caller's idx while transposing (it would cost a host
  // synchronisation) set idx_range = (min, max) of it as a float64 [2] tensor, fetched and checked with
  // the solver's first convergence test, and put a clamped copy in idx so the kernels stay in bounds.
  at::Tensor idx_range;
};

// Per-backend kernels. Column reductions are float64 tensors [C] on the system's device.
struct Backend {
  // CG checks convergence (a host synchronisation) every `check_every` iterations.
  int64_t check_every;
  // Fills s.in_src, s.in_w, s.in_begin, s.in_mid from s.idx and s.w (the other fields set).
  void (*transpose)(QuerySystem& s);
  // Fills s.diag and s.dinv; when b is defined ([n_U, C]), also b = (S_UL + mu W_LU^T) y.
  void (*assemble)(QuerySystem& s, double mu, const at::Tensor& y, at::Tensor& b);
  // Q = A P and pq[c] = <P[:, c], Q[:, c]>.
  void (*apply)(const QuerySystem& s, const at::Tensor& P, at::Tensor& Q, at::Tensor& pq);
  // alpha = safe_ratio(rz, pq) per column; X += alpha P; R -= alpha Q; Z = dinv * R;
  // rz_new = <R, Z>, zz = <Z, Z> per column.
  void (*update)(const at::Tensor& dinv, const at::Tensor& rz, const at::Tensor& pq, at::Tensor& X, at::Tensor& R,
                 at::Tensor& Z, const at::Tensor& P, const at::Tensor& Q, at::Tensor& rz_new, at::Tensor& zz);
  // beta = safe_ratio(rz_new, rz_old) per column; P = Z + beta P.
  void (*direction)(const at::Tensor& rz_new, const at::Tensor& rz_old, const at::Tensor& Z, at::Tensor& P);
  // grad_w[i, t] = -c_ij <Lam_i - Lam_j, u_i - u_j> with u_L = y, Lam_L = 0, j = idx[i, t],
  // c_ij = 1 + mu if i in L and j in U, else 1. u, lam: [n_U, C]; y: [m, C]; grad_w: [n, k].
  void (*edge_grad)(const at::Tensor& idx, const at::Tensor& y, const at::Tensor& u, const at::Tensor& lam, double mu,
                    at::Tensor& grad_w);
};

// Device-generic transpose (ATen ops): a stable sort of all edges by (target, source). in_src/in_w hold
// all n * k edges; only the in-edges of queries are addressed by in_begin/in_mid.
void transpose_by_sort(QuerySystem& s);

// The wnll_solve op on any backend: (u [n_U, C], iterations int64 scalar, residual float64 scalar,
// row_sum_error float64 scalar), the scalars on the CPU (see ops.cpp).
using SolveOutputs = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
SolveOutputs wnll_solve(const Backend& backend, const at::Tensor& idx, const at::Tensor& w, const at::Tensor& y,
                        double mu, double tol, int64_t max_iter);

// The wnll_adjoint op on any backend: returns (grad_w [n, k], iterations, residual).
std::tuple<at::Tensor, at::Tensor, at::Tensor> wnll_adjoint(const Backend& backend, const at::Tensor& idx,
                                                            const at::Tensor& w, const at::Tensor& y,
                                                            const at::Tensor& u, const at::Tensor& grad_u, double mu,
                                                            double tol, int64_t max_iter);

}  // namespace fastwnll
