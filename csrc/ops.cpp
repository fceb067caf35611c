// Schemas of the fastwnll:: ops. Kernels are registered per backend in cpu/ and cuda/;
// autograd and fake (meta) kernels are registered from Python (fastwnll/solver.py).
#include <torch/library.h>

TORCH_LIBRARY(fastwnll, m) {
  // WNLL harmonic extension (DESIGN section 2): u [n_U, C] solving A u = b for all C columns with one
  // multi-right-hand-side Jacobi-preconditioned CG. iterations: int64 scalar, residual: float64 scalar
  // (max over columns of ||r_c|| / ||b_c||); both on the CPU.
  m.def(
      "wnll_solve(Tensor idx, Tensor w, Tensor y, float mu, float tol, int max_iter)"
      " -> (Tensor u, Tensor iterations, Tensor residual)");
  // Exact gradient of a loss with respect to w given grad_u = dLoss/du: solves A Lam = grad_u and returns
  // grad_w[i, t] = -c_ij <Lam_i - Lam_j, u_i - u_j> for every directed edge i -> j = idx[i, t].
  m.def(
      "wnll_adjoint(Tensor idx, Tensor w, Tensor y, Tensor u, Tensor grad_u, float mu, float tol, int max_iter)"
      " -> (Tensor grad_w, Tensor iterations, Tensor residual)");
  // Exact k-nearest-neighbour candidates (CPU): idx [nq, kc] int64, the kc rows of base with the smallest
  // matmul-form squared distances to each query row, ascending (ties by index; -1 where none is finite).
  // self_graph=True: base is query, a row is never its own candidate and each pair is scored once.
  m.def("knn_candidates(Tensor query, Tensor base, int kc, bool self_graph) -> Tensor");
  // Exact re-scoring (CPU): Euclidean distances of the candidates cand [nq, kc] (-1 entries and, with
  // self_offset, base row r + self_offset for query row r count as inf); the k nearest per row, stably
  // sorted by distance: (idx [nq, k] int64, dist [nq, k] in the input dtype).
  m.def("knn_refine(Tensor query, Tensor base, Tensor cand, int k, int? self_offset) -> (Tensor idx, Tensor dist)");
}
