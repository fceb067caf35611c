// CPU kernels of the WNLL solver (multi-threaded with at::parallel_for) and the CPU registration of
// the fastwnll::wnll_solve / wnll_adjoint ops.
//
// Column reductions are summed per fixed block of rows into float64 partials, then the partials in
// block order, so results do not depend on the number of threads.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../wnll.h"

namespace fastwnll {
namespace {

constexpr int64_t kRowsPerBlock = 64;

int64_t num_blocks(int64_t rows) { return (rows + kRowsPerBlock - 1) / kRowsPerBlock; }

// Calls body(block, row_begin, row_end) for every block of rows, blocks spread over threads.
template <typename F>
void for_each_block(int64_t rows, const F& body) {
  at::parallel_for(0, num_blocks(rows), 1, [&](int64_t lo, int64_t hi) {
    for (int64_t blk = lo; blk < hi; ++blk) {
      body(blk, blk * kRowsPerBlock, std::min(rows, (blk + 1) * kRowsPerBlock));
    }
  });
}

// out[c] = sum over blocks of partial[blk * width + offset + c], in block order.
void sum_partials(const std::vector<double>& partial, int64_t blocks, int64_t width, int64_t offset, int64_t C,
                  at::Tensor& out) {
  double* o = out.data_ptr<double>();
  for (int64_t c = 0; c < C; ++c) o[c] = 0.0;
  for (int64_t blk = 0; blk < blocks; ++blk) {
    for (int64_t c = 0; c < C; ++c) o[c] += partial[blk * width + offset + c];
  }
}

// Counting sort of the in-edges of the queries by target; sources are visited in increasing order, so
// the result equals transpose_by_sort restricted to those edges. Also checks idx's range.
void transpose_cpu(QuerySystem& s) {
  const int64_t n = s.n, m = s.m, k = s.k, n_u = s.n_u, edges = n * k;
  const int64_t* idx = s.idx.data_ptr<int64_t>();
  const auto long_opts = s.idx.options();
  s.in_begin = at::zeros({n_u + 1}, long_opts);
  s.in_mid = at::zeros({n_u}, long_opts);
  int64_t* beg = s.in_begin.data_ptr<int64_t>();
  int64_t* mid = s.in_mid.data_ptr<int64_t>();
  for (int64_t p = 0; p < edges; ++p) {  // beg[r + 1] = in-degree of query r, mid[r] = from templates
    const int64_t j = idx[p];
    TORCH_CHECK(j >= 0 && j < n, "wnll: idx values must lie in [0, n=", n, "), got ", j, " at position ", p);
    if (j >= m) {
      ++beg[j - m + 1];
      if (p < m * k) ++mid[j - m];
    }
  }
  for (int64_t r = 0; r < n_u; ++r) {
    beg[r + 1] += beg[r];
    mid[r] += beg[r];
  }
  s.in_src = at::empty({beg[n_u]}, long_opts);
  s.in_w = at::empty({beg[n_u]}, s.w.options());
  int64_t* src = s.in_src.data_ptr<int64_t>();
  std::vector<int64_t> cursor(beg, beg + n_u);
  AT_DISPATCH_FLOATING_TYPES(s.w.scalar_type(), "wnll_transpose_cpu", [&] {
    const scalar_t* w = s.w.data_ptr<scalar_t>();
    scalar_t* iw = s.in_w.data_ptr<scalar_t>();
    for (int64_t p = 0; p < edges; ++p) {
      const int64_t j = idx[p];
      if (j < m) continue;
      const int64_t pos = cursor[j - m]++;
      src[pos] = p / k;
      iw[pos] = w[p];
    }
  });
}

void assemble_cpu(QuerySystem& s, double mu, const at::Tensor& y, at::Tensor& b) {
  AT_DISPATCH_FLOATING_TYPES(s.w.scalar_type(), "wnll_assemble_cpu", [&] {
    const int64_t *idx = s.idx.data_ptr<int64_t>(), *src = s.in_src.data_ptr<int64_t>();
    const int64_t *beg = s.in_begin.data_ptr<int64_t>(), *mid = s.in_mid.data_ptr<int64_t>();
    const scalar_t *w = s.w.data_ptr<scalar_t>(), *iw = s.in_w.data_ptr<scalar_t>();
    scalar_t *diag = s.diag.data_ptr<scalar_t>(), *dinv = s.dinv.data_ptr<scalar_t>();
    const bool with_b = b.defined();
    const scalar_t* Y = with_b ? y.data_ptr<scalar_t>() : nullptr;
    scalar_t* B = with_b ? b.data_ptr<scalar_t>() : nullptr;
    const int64_t m = s.m, k = s.k, C = with_b ? b.size(1) : 0;
    const scalar_t boundary = static_cast<scalar_t>(1.0 + mu);
    at::parallel_for(0, s.n_u, 256, [&](int64_t lo, int64_t hi) {
      for (int64_t r = lo; r < hi; ++r) {
        const int64_t i = m + r;
        scalar_t* br = with_b ? B + r * C : nullptr;
        for (int64_t c = 0; c < C; ++c) br[c] = 0;
        scalar_t d = 0;
        for (int64_t t = 0; t < k; ++t) {  // out-edges i -> j: S_ij gets w_ij
          const int64_t j = idx[i * k + t];
          const scalar_t v = w[i * k + t];
          d += v;
          if (with_b && j < m) {
            const scalar_t* yj = Y + j * C;
            for (int64_t c = 0; c < C; ++c) br[c] += v * yj[c];
          }
        }
        for (int64_t e = beg[r]; e < mid[r]; ++e) {  // in-edges j -> i from templates: (1 + mu) w_ji
          const scalar_t v = boundary * iw[e];
          d += v;
          if (with_b) {
            const scalar_t* yj = Y + src[e] * C;
            for (int64_t c = 0; c < C; ++c) br[c] += v * yj[c];
          }
        }
        for (int64_t e = mid[r]; e < beg[r + 1]; ++e) d += iw[e];  // in-edges from queries
        diag[r] = d;
        dinv[r] = d > 0 ? scalar_t(1) / d : scalar_t(0);
      }
    });
  });
}

// Row r of Q = A P for columns [c0, c0 + W), accumulated in registers; adds <P_r, Q_r> to acc.
template <typename scalar_t, int W>
inline void apply_row_tile(const QuerySystem& s, const int64_t* __restrict__ idx, const scalar_t* __restrict__ w,
                           const int64_t* __restrict__ src, const scalar_t* __restrict__ iw,
                           const scalar_t* __restrict__ p, scalar_t* __restrict__ q, int64_t C, int64_t r, int64_t c0,
                           scalar_t diag, double* __restrict__ acc) {
  const int64_t m = s.m, k = s.k, i = m + r;
  const scalar_t* pr = p + r * C + c0;
  scalar_t sum[W];
  for (int c = 0; c < W; ++c) sum[c] = diag * pr[c];
  for (int64_t t = 0; t < k; ++t) {  // out-neighbours that are queries
    const int64_t j = idx[i * k + t];
    if (j < m) continue;
    const scalar_t v = w[i * k + t];
    const scalar_t* pj = p + (j - m) * C + c0;
    for (int c = 0; c < W; ++c) sum[c] -= v * pj[c];
  }
  const int64_t end = s.in_begin.data_ptr<int64_t>()[r + 1];
  for (int64_t e = s.in_mid.data_ptr<int64_t>()[r]; e < end; ++e) {  // in-neighbours that are queries
    const scalar_t v = iw[e];
    const scalar_t* pj = p + (src[e] - m) * C + c0;
    for (int c = 0; c < W; ++c) sum[c] -= v * pj[c];
  }
  scalar_t* qr = q + r * C + c0;
  for (int c = 0; c < W; ++c) {
    qr[c] = sum[c];
    acc[c0 + c] += static_cast<double>(pr[c]) * static_cast<double>(sum[c]);
  }
}

constexpr int kTile = 8;  // columns per register tile

// Dispatches apply_row_tile on the width of the tile starting at column c0 (kTile, or the remainder).
template <typename scalar_t>
inline void apply_row(const QuerySystem& s, const int64_t* idx, const scalar_t* w, const int64_t* src,
                      const scalar_t* iw, const scalar_t* p, scalar_t* q, int64_t C, int64_t r, int64_t c0,
                      scalar_t diag, double* acc) {
  switch (std::min<int64_t>(kTile, C - c0)) {
    case 1:
      return apply_row_tile<scalar_t, 1>(s, idx, w, src, iw, p, q, C, r, c0, diag, acc);
    case 2:
      return apply_row_tile<scalar_t, 2>(s, idx, w, src, iw, p, q, C, r, c0, diag, acc);
    case 3:
      return apply_row_tile<scalar_t, 3>(s, idx, w, src, iw, p, q, C, r, c0, diag, acc);
    case 4:
      return apply_row_tile<scalar_t, 4>(s, idx, w, src, iw, p, q, C, r, c0, diag, acc);
    case 5:
      return apply_row_tile<scalar_t, 5>(s, idx, w, src, iw, p, q, C, r, c0, diag, acc);
    case 6:
      return apply_row_tile<scalar_t, 6>(s, idx, w, src, iw, p, q, C, r, c0, diag, acc);
    case 7:
      return apply_row_tile<scalar_t, 7>(s, idx, w, src, iw, p, q, C, r, c0, diag, acc);
    default:
      return apply_row_tile<scalar_t, kTile>(s, idx, w, src, iw, p, q, C, r, c0, diag, acc);
  }
}

void apply_cpu(const QuerySystem& s, const at::Tensor& P, at::Tensor& Q, at::Tensor& pq) {
  const int64_t C = P.size(1), blocks = num_blocks(s.n_u);
  std::vector<double> partial(blocks * C, 0.0);
  AT_DISPATCH_FLOATING_TYPES(P.scalar_type(), "wnll_apply_cpu", [&] {
    const int64_t *idx = s.idx.data_ptr<int64_t>(), *src = s.in_src.data_ptr<int64_t>();
    const scalar_t *w = s.w.data_ptr<scalar_t>(), *iw = s.in_w.data_ptr<scalar_t>();
    const scalar_t *diag = s.diag.data_ptr<scalar_t>(), *p = P.data_ptr<scalar_t>();
    scalar_t* q = Q.data_ptr<scalar_t>();
    for_each_block(s.n_u, [&](int64_t blk, int64_t lo, int64_t hi) {
      double* acc = partial.data() + blk * C;
      for (int64_t r = lo; r < hi; ++r) {
        for (int64_t c0 = 0; c0 < C; c0 += kTile) {
          apply_row(s, idx, w, src, iw, p, q, C, r, c0, diag[r], acc);
        }
      }
    });
  });
  sum_partials(partial, blocks, C, 0, C, pq);
}

void update_cpu(const at::Tensor& dinv, const at::Tensor& rz, const at::Tensor& pq, at::Tensor& X, at::Tensor& R,
                at::Tensor& Z, const at::Tensor& P, const at::Tensor& Q, at::Tensor& rz_new, at::Tensor& zz) {
  const int64_t n = X.size(0), C = X.size(1), blocks = num_blocks(n);
  std::vector<double> partial(blocks * 2 * C, 0.0);
  AT_DISPATCH_FLOATING_TYPES(X.scalar_type(), "wnll_update_cpu", [&] {
    std::vector<scalar_t> alpha(C);
    for (int64_t c = 0; c < C; ++c) {
      alpha[c] = static_cast<scalar_t>(safe_ratio(rz.data_ptr<double>()[c], pq.data_ptr<double>()[c]));
    }
    const scalar_t *d = dinv.data_ptr<scalar_t>(), *p = P.data_ptr<scalar_t>(), *q = Q.data_ptr<scalar_t>();
    scalar_t *x = X.data_ptr<scalar_t>(), *res = R.data_ptr<scalar_t>(), *z = Z.data_ptr<scalar_t>();
    for_each_block(n, [&](int64_t blk, int64_t lo, int64_t hi) {
      double* acc_rz = partial.data() + blk * 2 * C;
      double* acc_zz = acc_rz + C;
      for (int64_t r = lo; r < hi; ++r) {
        for (int64_t c = 0; c < C; ++c) {
          const int64_t e = r * C + c;
          x[e] += alpha[c] * p[e];
          const scalar_t rv = res[e] - alpha[c] * q[e];
          const scalar_t zv = d[r] * rv;
          res[e] = rv;
          z[e] = zv;
          acc_rz[c] += static_cast<double>(rv) * static_cast<double>(zv);
          acc_zz[c] += static_cast<double>(zv) * static_cast<double>(zv);
        }
      }
    });
  });
  sum_partials(partial, blocks, 2 * C, 0, C, rz_new);
  sum_partials(partial, blocks, 2 * C, C, C, zz);
}

void direction_cpu(const at::Tensor& rz_new, const at::Tensor& rz_old, const at::Tensor& Z, at::Tensor& P) {
  const int64_t n = P.size(0), C = P.size(1);
  AT_DISPATCH_FLOATING_TYPES(P.scalar_type(), "wnll_direction_cpu", [&] {
    std::vector<scalar_t> beta(C);
    for (int64_t c = 0; c < C; ++c) {
      beta[c] = static_cast<scalar_t>(safe_ratio(rz_new.data_ptr<double>()[c], rz_old.data_ptr<double>()[c]));
    }
    const scalar_t* z = Z.data_ptr<scalar_t>();
    scalar_t* p = P.data_ptr<scalar_t>();
    at::parallel_for(0, n, 1024, [&](int64_t lo, int64_t hi) {
      for (int64_t r = lo; r < hi; ++r) {
        for (int64_t c = 0; c < C; ++c) p[r * C + c] = z[r * C + c] + beta[c] * p[r * C + c];
      }
    });
  });
}

void edge_grad_cpu(const at::Tensor& idx_t, const at::Tensor& y, const at::Tensor& u, const at::Tensor& lam, double mu,
                   at::Tensor& grad_w) {
  const int64_t n = idx_t.size(0), k = idx_t.size(1), m = y.size(0), C = y.size(1);
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "wnll_edge_grad_cpu", [&] {
    const int64_t* idx = idx_t.data_ptr<int64_t>();
    const scalar_t *Y = y.data_ptr<scalar_t>(), *U = u.data_ptr<scalar_t>(), *L = lam.data_ptr<scalar_t>();
    scalar_t* g = grad_w.data_ptr<scalar_t>();
    at::parallel_for(0, n, 64, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        const bool i_query = i >= m;
        const scalar_t* ui = i_query ? U + (i - m) * C : Y + i * C;
        for (int64_t t = 0; t < k; ++t) {
          const int64_t j = idx[i * k + t];
          const bool j_query = j >= m;
          double dot = 0.0;
          if (i_query || j_query) {  // Lam vanishes on templates
            const scalar_t* uj = j_query ? U + (j - m) * C : Y + j * C;
            for (int64_t c = 0; c < C; ++c) {
              const double li = i_query ? static_cast<double>(L[(i - m) * C + c]) : 0.0;
              const double lj = j_query ? static_cast<double>(L[(j - m) * C + c]) : 0.0;
              dot += (li - lj) * (static_cast<double>(ui[c]) - static_cast<double>(uj[c]));
            }
          }
          const double coef = (!i_query && j_query) ? 1.0 + mu : 1.0;
          g[i * k + t] = static_cast<scalar_t>(-coef * dot);
        }
      }
    });
  });
}

const Backend& cpu_backend() {
  static const Backend backend{1, transpose_cpu, assemble_cpu, apply_cpu, update_cpu, direction_cpu, edge_grad_cpu};
  return backend;
}

SolveOutputs wnll_solve_cpu(const at::Tensor& idx, const at::Tensor& w, const at::Tensor& y, double mu, double tol,
                            int64_t max_iter) {
  return wnll_solve(cpu_backend(), idx, w, y, mu, tol, max_iter);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> wnll_adjoint_cpu(const at::Tensor& idx, const at::Tensor& w,
                                                                const at::Tensor& y, const at::Tensor& u,
                                                                const at::Tensor& grad_u, double mu, double tol,
                                                                int64_t max_iter) {
  return wnll_adjoint(cpu_backend(), idx, w, y, u, grad_u, mu, tol, max_iter);
}

}  // namespace
}  // namespace fastwnll

TORCH_LIBRARY_IMPL(fastwnll, CPU, m) {
  m.impl("wnll_solve", &fastwnll::wnll_solve_cpu);
  m.impl("wnll_adjoint", &fastwnll::wnll_adjoint_cpu);
}
