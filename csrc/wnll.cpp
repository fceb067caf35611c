// Device-generic parts of the WNLL solver: input checks, the sort-based transposition of the edge list
// (ATen ops), and the multi-right-hand-side Jacobi-preconditioned CG loop over the backend's kernels.
#include "wnll.h"

#include <cmath>
#include <utility>

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
  TORCH_CHECK(tol > 0.0, "wnll: tol must be > 0, got ", tol);
  TORCH_CHECK(max_iter >= 1, "wnll: max_iter must be >= 1, got ", max_iter);
  // idx values must lie in [0, n): the CPU backend checks it while transposing; on other devices the
  // check would cost a host synchronisation, so the Python layer (fastwnll.wnll_solve) does it.
}

QuerySystem build_system(const Backend& backend, const at::Tensor& idx, const at::Tensor& w, int64_t m,
                         double mu, const at::Tensor& y, at::Tensor& b) {
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

// Max over columns of ||r_c|| / ||b_c|| from the squared norms rr, bb (columns with bb == 0 count as 0).
// NaN propagates, so a diverged solve never looks converged.
double max_relative_residual(const at::Tensor& rr, const at::Tensor& bb) {
  if (rr.is_cpu()) {
    const double* r = rr.data_ptr<double>();
    const double* q = bb.data_ptr<double>();
    double worst = 0.0;
    for (int64_t c = 0; c < rr.numel(); ++c) {
      const double v = q[c] > 0.0 ? r[c] / q[c] : 0.0;
      if (std::isnan(v) || v > worst) worst = v;
      if (std::isnan(worst)) break;
    }
    return std::sqrt(worst);
  }
  return std::sqrt(at::where(bb > 0, rr / bb, at::zeros_like(rr)).max().item<double>());
}

struct CGResult {
  at::Tensor x;
  int64_t iterations;
  double residual;
};

// Jacobi-preconditioned CG from x = 0 for A X = B, all columns at once (shared matrix, per-column
// step lengths). Stops when the max relative residual is <= tol or after max_iter iterations.
CGResult pcg(const Backend& be, const QuerySystem& s, const at::Tensor& rhs, double tol, int64_t max_iter) {
  const int64_t C = rhs.size(1);
  auto X = at::zeros_like(rhs);
  auto R = rhs.clone();
  auto Z = at::empty_like(rhs);
  auto P = at::zeros_like(rhs);
  auto Q = at::zeros_like(rhs);
  const auto dopts = rhs.options().dtype(at::kDouble);
  const auto zero = at::zeros({C}, dopts);
  auto rz = at::empty({C}, dopts), rz_new = at::empty({C}, dopts), rr = at::empty({C}, dopts);
  auto pq = at::empty({C}, dopts);
  be.update(s.dinv, zero, zero, X, R, Z, P, Q, rz, rr);  // step 0 (alpha = 0): Z = D^-1 B, rz, rr = |B|^2
  const auto bb = rr.clone();
  be.direction(rz, zero, Z, P);  // beta = 0: P = Z
  double residual = max_relative_residual(rr, bb);
  int64_t it = 0;
  while (!(residual <= tol) && it < max_iter) {
    be.apply(s, P, Q, pq);
    be.update(s.dinv, rz, pq, X, R, Z, P, Q, rz_new, rr);
    ++it;
    if (it % be.check_every == 0 || it == max_iter) {
      residual = max_relative_residual(rr, bb);
      if (residual <= tol || it == max_iter) break;
    }
    be.direction(rz_new, rz, Z, P);
    std::swap(rz, rz_new);
  }
  return {X, it, residual};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> pack(at::Tensor out, const CGResult& r) {
  const auto cpu = at::TensorOptions().device(at::kCPU);
  return {std::move(out), at::scalar_tensor(r.iterations, cpu.dtype(at::kLong)),
          at::scalar_tensor(r.residual, cpu.dtype(at::kDouble))};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> wnll_solve(const Backend& backend, const at::Tensor& idx,
                                                          const at::Tensor& w, const at::Tensor& y, double mu,
                                                          double tol, int64_t max_iter) {
  check_graph(idx, w, y, mu, tol, max_iter);
  const int64_t m = y.size(0);
  const auto labels = y.contiguous();
  auto b = at::empty({idx.size(0) - m, y.size(1)}, w.options());
  const auto system = build_system(backend, idx, w, m, mu, labels, b);
  const auto result = pcg(backend, system, b, tol, max_iter);
  return pack(result.x, result);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> wnll_adjoint(const Backend& backend, const at::Tensor& idx,
                                                            const at::Tensor& w, const at::Tensor& y,
                                                            const at::Tensor& u, const at::Tensor& grad_u,
                                                            double mu, double tol, int64_t max_iter) {
  check_graph(idx, w, y, mu, tol, max_iter);
  const int64_t m = y.size(0), n_u = idx.size(0) - m;
  TORCH_CHECK(u.dim() == 2 && u.size(0) == n_u && u.size(1) == y.size(1), "wnll_adjoint: u must have shape [",
              n_u, ", ", y.size(1), "], got ", u.sizes());
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
  return pack(grad_w, result);
}

}  // namespace fastwnll
