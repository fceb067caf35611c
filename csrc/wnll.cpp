// Device-generic parts of the WNLL solver: input checks, the sort-based transposition of the edge list
// (ATen ops), and the multi-right-hand-side Jacobi-preconditioned CG loop over the backend's kernels with
// its convergence test on the recomputed residual.
#include "wnll.h"

#include <cmath>
#include <functional>
#include <limits>
#include <utility>
#include <vector>

namespace fastwnll {

void transpose_by_sort(QuerySystem& s) {
  const auto long_opts = s.idx.options();
  const auto source = at::arange(s.n * s.k, long_opts).div(s.k, "floor");  // edge p = i * k + t leaves i
  const auto keys = s.idx.reshape({-1}) * s.n + source;
  const auto sorted = at::sort(keys, /*stable=*/true, /*dim=*/0, /*descending=*/false);
  const at::Tensor& sorted_keys = std::get<0>(sorted);
  const at::Tensor& perm = std::get<1>(sorted);
  s.in_src = perm.div(s.k, "floor");
  s.in_w = s.w.reshape({-1}).index_select(0, perm);
  const auto targets = at::arange(s.m, s.n + 1, long_opts);
  s.in_begin = at::searchsorted(sorted_keys, targets * s.n);
  s.in_mid = at::searchsorted(sorted_keys, targets.slice(0, 0, s.n_u) * s.n + s.m);
}

namespace {

void check_graph(const at::Tensor& idx, const at::Tensor& w, const at::Tensor& y, double mu, double tol,
                 int64_t max_iter) {
  TORCH_CHECK(idx.dim() == 2, "wnll: idx must have shape [n, k], got ", idx.sizes());
  TORCH_CHECK(idx.scalar_type() == at::kLong, "wnll: idx must be int64, got ", idx.scalar_type());
  TORCH_CHECK(w.sizes() == idx.sizes(), "wnll: w must have idx's shape ", idx.sizes(), ", got ", w.sizes());
  TORCH_CHECK(w.scalar_type() == at::kFloat || w.scalar_type() == at::kDouble,
              "wnll: w must be float32 or float64, got ", w.scalar_type());
  TORCH_CHECK(y.dim() == 2, "wnll: y must have shape [m, C], got ", y.sizes());
  TORCH_CHECK(y.scalar_type() == w.scalar_type(), "wnll: y must have w's dtype ", w.scalar_type(), ", got ",
              y.scalar_type());
  TORCH_CHECK(y.size(0) >= 1 && y.size(0) < idx.size(0), "wnll: y must have 1 <= m < n = ", idx.size(0),
              " rows (one per template), got ", y.size(0));
  TORCH_CHECK(y.size(1) >= 1, "wnll: y must have at least one column");
  TORCH_CHECK(idx.size(1) >= 1, "wnll: idx must have at least one neighbour per node");
  TORCH_CHECK(w.device() == idx.device() && y.device() == idx.device(),
              "wnll: idx, w and y must be on one device, got ", idx.device(), ", ", w.device(), ", ", y.device());
  TORCH_CHECK(std::isfinite(mu) && mu >= 0.0, "wnll: mu must be finite and >= 0, got ", mu);
  TORCH_CHECK(tol > 0.0 && tol < 1.0, "wnll: tol must be in (0, 1), got ", tol, " (u = 0 has relative residual 1)");
  TORCH_CHECK(max_iter >= 1, "wnll: max_iter must be >= 1, got ", max_iter);
  // idx values must lie in [0, n): the CPU backend checks it while transposing, other backends with the
  // first convergence test (QuerySystem::idx_range).
}

QuerySystem build_system(const Backend& backend, const at::Tensor& idx, const at::Tensor& w, int64_t m, double mu,
                         const at::Tensor& y, at::Tensor& b) {
  QuerySystem s;
  s.n = idx.size(0);
  s.k = idx.size(1);
  s.m = m;
  s.n_u = s.n - m;
  s.idx = idx.contiguous();
  s.w = w.contiguous();
  backend.transpose(s);
  s.diag = at::empty({s.n_u}, w.options());
  s.dinv = at::empty({s.n_u}, w.options());
  backend.assemble(s, mu, y, b);
  return s;
}

// Values of a convergence test, on the host.
struct Observation {
  double residual;   // max over columns of ||D^-1 r_c|| / ||D^-1 b_c||
  at::Tensor extra;  // the caller's extra values (undefined without them), on the CPU
};

// The max over columns of sqrt(zz_c / bb_c): the Jacobi-scaled relative residual ||D^-1 r_c|| / ||D^-1 b_c||
// from the squared norms zz, bb (columns with bb == 0 count as 0); NaN propagates, so a diverged solve never
// looks converged. Also fetches `extra` (float64 values on the system's device). On devices other than the
// CPU this is one host synchronisation, which also fetches and checks s.idx_range when the backend deferred
// that check.
Observation observe(const QuerySystem& s, const at::Tensor& zz, const at::Tensor& bb,
                    const at::Tensor& extra = at::Tensor()) {
  if (zz.is_cpu()) {
    const double* r = zz.data_ptr<double>();
    const double* q = bb.data_ptr<double>();
    double worst = 0.0;
    for (int64_t c = 0; c < zz.numel(); ++c) {
      const double v = q[c] > 0.0 ? r[c] / q[c] : 0.0;
      if (std::isnan(v) || v > worst) worst = v;
      if (std::isnan(worst)) break;
    }
    return {std::sqrt(worst), extra};
  }
  std::vector<at::Tensor> parts{at::where(bb > 0, zz / bb, at::zeros_like(zz)).max().reshape({1})};
  if (s.idx_range.defined()) parts.push_back(s.idx_range);
  if (extra.defined()) parts.push_back(extra.reshape({-1}));
  const auto host = at::cat(parts).cpu();
  const double* v = host.data_ptr<double>();
  if (s.idx_range.defined()) {
    TORCH_CHECK(v[1] >= 0 && v[2] < static_cast<double>(s.n), "wnll: idx values must lie in [0, n=", s.n,
                "), got values in [", static_cast<int64_t>(v[1]), ", ", static_cast<int64_t>(v[2]), "]");
  }
  return {std::sqrt(v[0]), extra.defined() ? host.slice(0, host.numel() - extra.numel()) : at::Tensor()};
}

// Extra float64 values computed from the solution X and fetched with each recomputed residual.
using Extra = std::function<at::Tensor(const at::Tensor&)>;

struct CGResult {
  at::Tensor x;
  int64_t iterations;
  double residual;
  at::Tensor extra;  // extra(x) on the CPU, when an Extra was given
};

// Jacobi-preconditioned CG from x = 0 for A X = B, all columns at once (shared matrix, per-column step
// lengths). The recursive residual is tested every be.check_every iterations; when it reaches tol (or
// after max_iter iterations) the residual B - A X is recomputed from X, and CG restarts from X with it
// while it is above tol, iterations remain and each restart at least halves it (CG's recursive residual
// drifts from the true one in finite precision). The reported residual is always the recomputed one.
CGResult pcg(const Backend& be, const QuerySystem& s, const at::Tensor& rhs, double tol, int64_t max_iter,
             const Extra& extra = nullptr) {
  const int64_t C = rhs.size(1);
  auto X = at::zeros_like(rhs);
  auto R = rhs.clone();
  auto Z = at::empty_like(rhs);
  auto P = at::zeros_like(rhs);
  auto Q = at::zeros_like(rhs);
  const auto dopts = rhs.options().dtype(at::kDouble);
  const auto zero = at::zeros({C}, dopts);
  auto rz = at::empty({C}, dopts), rz_new = at::empty({C}, dopts), zz = at::empty({C}, dopts);
  auto pq = at::empty({C}, dopts);
  be.update(s.dinv, zero, zero, X, R, Z, P, Q, rz, zz);  // alpha = 0: Z = D^-1 B, rz, zz = |D^-1 B|^2
  const auto bb = zz.clone();
  Observation seen = observe(s, zz, bb);  // residual 1, or 0 when B == 0
  double restarted_at = std::numeric_limits<double>::infinity();
  int64_t it = 0;
  while (!(seen.residual <= tol) && it < max_iter) {
    be.direction(rz, zero, Z, P);  // beta = 0: P = Z
    while (true) {
      be.apply(s, P, Q, pq);
      be.update(s.dinv, rz, pq, X, R, Z, P, Q, rz_new, zz);
      ++it;
      if (it == max_iter) break;
      if (it % be.check_every == 0) {
        const double recursive = observe(s, zz, bb).residual;
        if (recursive <= tol || std::isnan(recursive)) break;
      }
      be.direction(rz_new, rz, Z, P);
      std::swap(rz, rz_new);
    }
    be.apply(s, X, Q, pq);  // the true residual R = B - A X, then Z, rz, zz from it (alpha = 0)
    at::sub_out(R, rhs, Q);
    be.update(s.dinv, zero, zero, X, R, Z, P, Q, rz, zz);
    seen = observe(s, zz, bb, extra ? extra(X) : at::Tensor());
    if (!(seen.residual < 0.5 * restarted_at)) break;  // restarts stopped paying off: the dtype's limit
    restarted_at = seen.residual;
  }
  if (extra && !seen.extra.defined()) seen.extra = extra(X).cpu();  // converged before any iteration
  return {X, it, seen.residual, seen.extra};
}

// How far the row sums of u lie outside [min, max] of the row sums of y, relative to the largest row of y
// (max_j sum_c |y_jc|, or 1 when y == 0): a float64 scalar on u's device. The row sums of u are the harmonic
// extension of those of y, so by the maximum principle they lie in that interval (and equal 1 when the
// rows of y are probability vectors); NaN when u is not finite.
at::Tensor row_sum_error(const at::Tensor& u, const at::Tensor& y) {
  const auto y_sums = y.sum(1, /*keepdim=*/false, at::kDouble);
  const auto u_sums = u.sum(1, /*keepdim=*/false, at::kDouble);
  const auto above = (u_sums - y_sums.max()).clamp_min(0).max();
  const auto below = (y_sums.min() - u_sums).clamp_min(0).max();
  const auto scale = y.abs().sum(1, /*keepdim=*/false, at::kDouble).max();
  return at::maximum(above, below) / at::where(scale > 0, scale, at::ones_like(scale));
}

std::tuple<at::Tensor, at::Tensor> cpu_scalars(int64_t iterations, double residual) {
  const auto cpu = at::TensorOptions().device(at::kCPU);
  return {at::scalar_tensor(iterations, cpu.dtype(at::kLong)), at::scalar_tensor(residual, cpu.dtype(at::kDouble))};
}

}  // namespace

SolveOutputs wnll_solve(const Backend& backend, const at::Tensor& idx, const at::Tensor& w, const at::Tensor& y,
                        double mu, double tol, int64_t max_iter) {
  check_graph(idx, w, y, mu, tol, max_iter);
  const int64_t m = y.size(0);
  const auto labels = y.contiguous();
  auto b = at::empty({idx.size(0) - m, y.size(1)}, w.options());
  const auto system = build_system(backend, idx, w, m, mu, labels, b);
  const auto result =
      pcg(backend, system, b, tol, max_iter, [&labels](const at::Tensor& u) { return row_sum_error(u, labels); });
  auto scalars = cpu_scalars(result.iterations, result.residual);
  return {result.x, std::get<0>(scalars), std::get<1>(scalars), result.extra.reshape({})};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> wnll_adjoint(const Backend& backend, const at::Tensor& idx,
                                                            const at::Tensor& w, const at::Tensor& y,
                                                            const at::Tensor& u, const at::Tensor& grad_u, double mu,
                                                            double tol, int64_t max_iter) {
  check_graph(idx, w, y, mu, tol, max_iter);
  const int64_t m = y.size(0), n_u = idx.size(0) - m;
  TORCH_CHECK(u.dim() == 2 && u.size(0) == n_u && u.size(1) == y.size(1), "wnll_adjoint: u must have shape [", n_u,
              ", ", y.size(1), "], got ", u.sizes());
  TORCH_CHECK(grad_u.sizes() == u.sizes(), "wnll_adjoint: grad_u must have u's shape ", u.sizes(), ", got ",
              grad_u.sizes());
  TORCH_CHECK(u.scalar_type() == w.scalar_type() && grad_u.scalar_type() == w.scalar_type(),
              "wnll_adjoint: u and grad_u must have w's dtype ", w.scalar_type(), ", got ", u.scalar_type(), " and ",
              grad_u.scalar_type());
  TORCH_CHECK(u.device() == idx.device() && grad_u.device() == idx.device(),
              "wnll_adjoint: u and grad_u must be on idx's device ", idx.device(), ", got ", u.device(), " and ",
              grad_u.device());
  at::Tensor no_rhs;
  const auto system = build_system(backend, idx, w, m, mu, at::Tensor(), no_rhs);
  const auto result = pcg(backend, system, grad_u.contiguous(), tol, max_iter);
  auto grad_w = at::empty(idx.sizes(), w.options());
  backend.edge_grad(system.idx, y.contiguous(), u.contiguous(), result.x, mu, grad_w);
  auto scalars = cpu_scalars(result.iterations, result.residual);
  return {grad_w, std::get<0>(scalars), std::get<1>(scalars)};
}

}  // namespace fastwnll
