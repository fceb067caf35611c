// Schemas of the fastwnll:: ops. Kernels are registered per backend in cpu/ and cuda/; the fake (meta)
// kernels of every op are registered from Python in the module named by set_python_module
// (fastwnll/extension/fake_kernels.py), the autograd of wnll_solve in fastwnll/wnll/adjoint.py.
#include <torch/library.h>

TORCH_LIBRARY(fastwnll, m) {
  m.set_python_module("fastwnll.extension.fake_kernels");
  // WNLL harmonic extension (docs/design.md, section 2): u [n_U, C] solving A u = b for all C columns with one
  // multi-right-hand-side Jacobi-preconditioned CG. The other outputs are float64/int64 scalars on the CPU,
  // computed from the returned u: iterations; residual, the Jacobi-scaled relative residual
  // max_c ||D^-1 (b_c - A u_c)|| / ||D^-1 b_c|| (D = diag(dgr)); row_sum_error, how far the row sums of u lie
  // outside [min, max] of the row sums of y, relative to max_j sum_c |y_jc| (0 in exact arithmetic by the
  // maximum principle; for probability rows of y, max_r |sum_c u_rc - 1|).
  m.def(
      "wnll_solve(Tensor idx, Tensor w, Tensor y, float mu, float tol, int max_iter)"
      " -> (Tensor u, Tensor iterations, Tensor residual, Tensor row_sum_error)");
  // Exact gradient of a loss with respect to w given grad_u = dLoss/du: solves A Lam = grad_u and returns
  // grad_w[i, t] = -c_ij <Lam_i - Lam_j, u_i - u_j> for every directed edge i -> j = idx[i, t], with the
  // adjoint solve's iterations and residual (as for wnll_solve).
  m.def(
      "wnll_adjoint(Tensor idx, Tensor w, Tensor y, Tensor u, Tensor grad_u, float mu, float tol, int max_iter)"
      " -> (Tensor grad_w, Tensor iterations, Tensor residual)");
  // Queries (nodes m..n-1) connected to no template (nodes 0..m-1) through edges i -> idx[i, t] with
  // w[i, t] > 0, in either direction: bool [n - m], True where unreachable (CPU).
  m.def("unreachable_queries(Tensor idx, Tensor w, int m) -> Tensor");
  // Exact k-nearest-neighbour candidates (CPU): idx [nq, kc] int64, the kc rows of base with the smallest
  // matmul-form squared distances to each query row, ascending (ties by index; -1 where none is finite).
  // self_graph=True: base is query, a row is never its own candidate and each pair is scored once.
  m.def("knn_candidates(Tensor query, Tensor base, int kc, bool self_graph) -> Tensor");
  // Exact re-scoring (CPU): Euclidean distances of the candidates cand [nq, kc] (-1 entries and, with
  // self_offset, base row r + self_offset for query row r count as inf); the k nearest per row, stably
  // sorted by distance: (idx [nq, k] int64, dist [nq, k] in the input dtype).
  m.def("knn_refine(Tensor query, Tensor base, Tensor cand, int k, int? self_offset) -> (Tensor idx, Tensor dist)");
}
