// CPU kernel of the fastwnll::unreachable_queries op: the queries of a WNLL graph that are connected to no
// template through edges of positive weight (in either direction), found by one union-find pass over the
// edges (near-linear in n * k whatever the shape of the graph).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <numeric>
#include <utility>
#include <vector>

namespace fastwnll {
namespace {

// Disjoint sets of nodes 0..n-1 with path halving and union by size.
class DisjointSets {
 public:
  explicit DisjointSets(int64_t n) : parent_(n), size_(n, 1) { std::iota(parent_.begin(), parent_.end(), 0); }

  int64_t find(int64_t i) {
    while (parent_[i] != i) {
      parent_[i] = parent_[parent_[i]];
      i = parent_[i];
    }
    return i;
  }

  void unite(int64_t a, int64_t b) {
    a = find(a);
    b = find(b);
    if (a == b) return;
    if (size_[a] < size_[b]) std::swap(a, b);
    parent_[b] = a;
    size_[a] += size_[b];
  }

 private:
  std::vector<int64_t> parent_, size_;
};

at::Tensor unreachable_queries_cpu(const at::Tensor& idx, const at::Tensor& w, int64_t m) {
  TORCH_CHECK(idx.dim() == 2 && idx.scalar_type() == at::kLong,
              "unreachable_queries: idx must be an int64 [n, k] "
              "tensor, got ",
              idx.scalar_type(), " of shape ", idx.sizes());
  TORCH_CHECK(w.sizes() == idx.sizes() && at::isFloatingType(w.scalar_type()),
              "unreachable_queries: w must be a floating-point tensor of idx's shape ", idx.sizes(), ", got ",
              w.scalar_type(), " of shape ", w.sizes());
  const int64_t n = idx.size(0), k = idx.size(1);
  TORCH_CHECK(m >= 1 && m < n, "unreachable_queries: m must satisfy 1 <= m < n = ", n, ", got ", m);
  const auto idx_c = idx.contiguous();
  const auto w_c = w.contiguous();
  const int64_t* target = idx_c.data_ptr<int64_t>();
  DisjointSets sets(n);
  for (int64_t t = 1; t < m; ++t) sets.unite(0, t);  // the templates form one set
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, w_c.scalar_type(), "unreachable_queries_cpu", [&] {
    const scalar_t* weight = w_c.data_ptr<scalar_t>();
    for (int64_t p = 0; p < n * k; ++p) {
      const int64_t j = target[p];
      TORCH_CHECK(j >= 0 && j < n, "unreachable_queries: idx values must lie in [0, n=", n, "), got ", j,
                  " at position ", p);
      if (weight[p] > scalar_t(0)) sets.unite(p / k, j);
    }
  });
  auto out = at::empty({n - m}, idx.options().dtype(at::kBool));
  bool* unreachable = out.data_ptr<bool>();
  const int64_t templates = sets.find(0);
  for (int64_t r = 0; r < n - m; ++r) unreachable[r] = sets.find(m + r) != templates;
  return out;
}

}  // namespace
}  // namespace fastwnll

TORCH_LIBRARY_IMPL(fastwnll, CPU, m) { m.impl("unreachable_queries", &fastwnll::unreachable_queries_cpu); }
