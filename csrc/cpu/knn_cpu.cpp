// CPU kernels of the fastwnll::knn_candidates and knn_refine ops.
//
// knn_candidates: exact k-nearest-neighbour candidates by blocked matrix products (at::mm on 256 x 256
// tiles of inner products) and a vectorised threshold filter in front of a sorted insertion into
// per-row candidate lists ordered by (distance, index). For a self-graph (query is base) each
// unordered pair {i, j} is scored once, in a tile on or above the diagonal, and offered to both rows'
// lists: half the matrix-product work of a plain search. Tile pairs are visited in rounds of disjoint
// tiles (parallel without locks), each tile with its nearest tiles first (see Schedule; extra memory
// O(n) overall); the caller (fastwnll/knn/search.py) first puts the points in locality order so that near
// tiles hold near points and thresholds tighten early. The result does not depend on the number of
// threads. The caller centres the points: the kernel ranks by matrix-product-form distances, whose
// rounding error grows with the norms, and certifies the candidates afterwards.
//
// knn_refine: exact Euclidean distances of given candidates and the k nearest, sorted.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <tuple>
#include <vector>

namespace fastwnll {
namespace {

constexpr int64_t kTile = 256;  // rows and columns of one distance tile (256 KiB in float32)
constexpr int64_t kChunk = 16;  // filter hits are revisited by chunks of a row; chunks without one are skipped

// Per row the kc best (distance, index) pairs seen so far, ascending by distance then index, and thr =
// the distance of the worst of them (inf while the row has fewer than kc), the admission threshold.
template <typename scalar_t>
struct CandidateLists {
  scalar_t* dist;  // [rows, kc]
  int32_t* idx;    // [rows, kc]
  scalar_t* thr;   // [rows]
  int64_t kc;

  // Inserts (d, j) into row r when it beats the row's worst pair (sorted insertion).
  void offer(int64_t r, scalar_t d, int64_t j) const {
    scalar_t* D = dist + r * kc;
    int32_t* I = idx + r * kc;
    const int32_t jj = static_cast<int32_t>(j);
    int64_t s = kc - 1;
    if (d > D[s] || (d == D[s] && jj >= I[s])) return;
    while (s > 0 && (d < D[s - 1] || (d == D[s - 1] && jj < I[s - 1]))) {
      D[s] = D[s - 1];
      I[s] = I[s - 1];
      --s;
    }
    D[s] = d;
    I[s] = jj;
    thr[r] = D[kc - 1];
  }
};

// d[t] = qi + bn[t] - 2 g[t] and hit[t] = d[t] <= thr (kSelf: or <= col_thr[t]) for t < len; vectorised.
template <typename scalar_t, bool kSelf>
void filter(const scalar_t* __restrict g, const scalar_t* __restrict bn, const scalar_t* __restrict col_thr,
            scalar_t qi, scalar_t thr, int64_t len, scalar_t* __restrict d, int32_t* __restrict hit) {
  for (int64_t t = 0; t < len; ++t) {
    const scalar_t v = qi + bn[t] - 2 * g[t];
    d[t] = v;
    if constexpr (kSelf) {
      hit[t] = (v <= thr) | (v <= col_thr[t]);
    } else {
      hit[t] = v <= thr;
    }
  }
}

// Scans the tile g ([i1 - i0, j1 - j0], row-major) of inner products between query rows [i0, i1) and
// base rows [j0, j1): d = |q_i|^2 + |b_j|^2 - 2 <q_i, b_j>. Every d is offered to query row i; in a
// self-graph (kSelf) only pairs with j > i are scanned and each is also offered to row j. A row is
// first filtered against the thresholds in one vectorised pass; only chunks with a hit are revisited.
template <typename scalar_t, bool kSelf>
void scan_tile(const scalar_t* g, const scalar_t* qn, const scalar_t* bn, int64_t i0, int64_t i1, int64_t j0,
               int64_t j1, const CandidateLists<scalar_t>& res) {
  scalar_t d[kTile];
  int32_t hit[kTile];
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t jb = kSelf ? std::max(j0, i + 1) : j0, len = j1 - jb;
    const scalar_t* gi = g + (i - i0) * (j1 - j0) + (jb - j0);  // gi[t] is <q_i, b_{jb + t}>
    scalar_t thr = res.thr[i];
    filter<scalar_t, kSelf>(gi, bn + jb, res.thr + jb, qn[i], thr, len, d, hit);
    for (int64_t c = 0; c < len; c += kChunk) {
      const int64_t e = std::min(len, c + kChunk);
      int any = 0;
      for (int64_t t = c; t < e; ++t) any |= hit[t];
      if (!any) continue;
      for (int64_t t = c; t < e; ++t) {
        if (!hit[t]) continue;
        if (d[t] <= thr) {
          res.offer(i, d[t], jb + t);
          thr = res.thr[i];
        }
        if constexpr (kSelf) {
          if (d[t] <= res.thr[jb + t]) res.offer(jb + t, d[t], i);
        }
      }
    }
  }
}

// Tiles each tile is paired with first (besides itself), nearest by the distance between tile means.
constexpr int64_t kNearTiles = 16;
// Rows of tile means whose distances to all tile means are held at once while finding the nearest.
constexpr int64_t kMeanBlock = 256;

// The order in which a self-graph visits the pairs (r, c), r <= c, of its row tiles, as rounds of pairwise
// disjoint pairs (tiles within a round share no rows, so a round runs in parallel without locks). Memory is
// O(tiles * kNearTiles), never O(tiles^2):
//  - near rounds: each tile with itself and its kNearTiles nearest tiles (by the distance between tile
//    means), nearest pairs first, each pair in the earliest round after the last round using either tile;
//  - far rounds: every other pair, in the rounds of a round-robin tournament (circle method), generated on
//    the fly by far_round().
// With spatially coherent tiles every row meets its nearest tiles first, its threshold tightens early and
// the far tiles rarely pass the filter.
class Schedule {
 public:
  Schedule(const at::Tensor& x, int64_t tiles) : tiles_(tiles), players_(tiles + (tiles & 1)), near_(tiles) {
    const int64_t n = x.size(0);
    std::vector<at::Tensor> means;
    for (int64_t r = 0; r < tiles; ++r) {
      means.push_back(x.narrow(0, r * kTile, std::min(n, (r + 1) * kTile) - r * kTile).mean(0));
    }
    const at::Tensor m = at::stack(means).to(at::kDouble);
    const int64_t nearest = std::min(tiles, kNearTiles + 1);
    std::vector<std::tuple<double, int64_t, int64_t>> pairs;  // (gap, r, c), r <= c
    for (int64_t r0 = 0; r0 < tiles; r0 += kMeanBlock) {
      const int64_t len = std::min(kMeanBlock, tiles - r0);
      const auto [gap, col] = at::cdist(m.narrow(0, r0, len), m).topk(nearest, 1, /*largest=*/false);
      const at::Tensor g = gap.contiguous(), c = col.contiguous();
      const double* gp = g.const_data_ptr<double>();
      const int64_t* cp = c.const_data_ptr<int64_t>();
      for (int64_t i = 0; i < len; ++i) {
        const int64_t r = r0 + i;
        pairs.emplace_back(0.0, r, r);
        for (int64_t t = 0; t < nearest; ++t) {
          const int64_t other = cp[i * nearest + t];
          if (other != r) pairs.emplace_back(gp[i * nearest + t], std::min(r, other), std::max(r, other));
        }
      }
    }
    std::stable_sort(pairs.begin(), pairs.end());
    pairs.erase(std::unique(pairs.begin(), pairs.end(),
                            [](const auto& a, const auto& b) {
                              return std::get<1>(a) == std::get<1>(b) && std::get<2>(a) == std::get<2>(b);
                            }),
                pairs.end());
    std::vector<int64_t> next_free(tiles, 0);
    for (const auto& [gap, r, c] : pairs) {
      if (r != c && is_near(r, c)) continue;  // the same pair from the other tile's list, at another gap
      const int64_t k = std::max(next_free[r], next_free[c]);
      if (k == static_cast<int64_t>(near_rounds_.size())) near_rounds_.emplace_back();
      near_rounds_[k].emplace_back(r, c);
      next_free[r] = next_free[c] = k + 1;
      if (r != c) {
        near_[r].insert(std::lower_bound(near_[r].begin(), near_[r].end(), c), c);
        near_[c].insert(std::lower_bound(near_[c].begin(), near_[c].end(), r), r);
      }
    }
  }

  const std::vector<std::vector<std::pair<int64_t, int64_t>>>& near_rounds() const { return near_rounds_; }
  int64_t far_rounds() const { return players_ - 1; }

  // Round t of the tournament among players_ (tiles plus one bye when odd): player players_ - 1 meets t,
  // and (t + i) meets (t - i) mod (players_ - 1); pairs with the bye or already in the near rounds dropped.
  void far_round(int64_t t, std::vector<std::pair<int64_t, int64_t>>& out) const {
    out.clear();
    const int64_t m = players_ - 1;
    for (int64_t i = 0; i < players_ / 2; ++i) {
      const int64_t a = i == 0 ? m : (t + i) % m, b = i == 0 ? t : (t - i + m) % m;
      if (a >= tiles_ || b >= tiles_ || is_near(a, b)) continue;
      out.emplace_back(std::min(a, b), std::max(a, b));
    }
  }

 private:
  bool is_near(int64_t r, int64_t c) const { return std::binary_search(near_[r].begin(), near_[r].end(), c); }

  int64_t tiles_, players_;
  std::vector<std::vector<int64_t>> near_;  // per tile, the other tiles of its near-round pairs, sorted
  std::vector<std::vector<std::pair<int64_t, int64_t>>> near_rounds_;
};

template <typename scalar_t>
void search(const at::Tensor& query, const at::Tensor& base, bool self_graph, int64_t kc, at::Tensor& out) {
  const int64_t nq = query.size(0), nb = base.size(0);
  const at::Tensor qn_t = query.mul(query).sum(1), bn_t = self_graph ? qn_t : base.mul(base).sum(1);
  const scalar_t* qn = qn_t.const_data_ptr<scalar_t>();
  const scalar_t* bn = bn_t.const_data_ptr<scalar_t>();
  const int64_t row_tiles = (nq + kTile - 1) / kTile, col_tiles = (nb + kTile - 1) / kTile;

  std::vector<scalar_t> dist(nq * kc, std::numeric_limits<scalar_t>::infinity());
  std::vector<int32_t> idx(nq * kc, std::numeric_limits<int32_t>::max());
  std::vector<scalar_t> thr(nq, std::numeric_limits<scalar_t>::infinity());
  const CandidateLists<scalar_t> res{dist.data(), idx.data(), thr.data(), kc};
  std::vector<at::Tensor> buffers(at::get_num_threads());  // one tile of inner products per thread

  // Scans the tile of query tile r against base tile c.
  auto tile = [&](int64_t r, int64_t c) {
    const int64_t i0 = r * kTile, i1 = std::min(nq, i0 + kTile), j0 = c * kTile, j1 = std::min(nb, j0 + kTile);
    at::Tensor& buffer = buffers[at::get_thread_num()];
    if (!buffer.defined()) buffer = at::empty({kTile * kTile}, query.options());
    at::Tensor g = buffer.narrow(0, 0, (i1 - i0) * (j1 - j0)).view({i1 - i0, j1 - j0});
    at::mm_out(g, query.narrow(0, i0, i1 - i0), base.narrow(0, j0, j1 - j0).t());
    if (self_graph) {
      scan_tile<scalar_t, true>(g.const_data_ptr<scalar_t>(), qn, bn, i0, i1, j0, j1, res);
    } else {
      scan_tile<scalar_t, false>(g.const_data_ptr<scalar_t>(), qn, bn, i0, i1, j0, j1, res);
    }
  };

  auto run_round = [&](const std::vector<std::pair<int64_t, int64_t>>& round) {
    at::parallel_for(0, static_cast<int64_t>(round.size()), 1, [&](int64_t lo, int64_t hi) {
      for (int64_t p = lo; p < hi; ++p) tile(round[p].first, round[p].second);
    });
  };
  if (self_graph) {
    const Schedule schedule(query, row_tiles);
    for (const auto& round : schedule.near_rounds()) run_round(round);
    std::vector<std::pair<int64_t, int64_t>> round;
    for (int64_t t = 0; t < schedule.far_rounds(); ++t) {
      schedule.far_round(t, round);
      run_round(round);
    }
  } else {  // each thread owns whole row tiles
    at::parallel_for(0, row_tiles, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t r = lo; r < hi; ++r) {
        for (int64_t c = 0; c < col_tiles; ++c) tile(r, c);
      }
    });
  }
  // Slots never filled (only when distances overflow to inf or NaN) are reported as -1.
  int64_t* o = out.mutable_data_ptr<int64_t>();
  for (int64_t p = 0; p < nq * kc; ++p) o[p] = std::isfinite(dist[p]) ? idx[p] : -1;
}

at::Tensor knn_candidates_cpu(const at::Tensor& query_in, const at::Tensor& base_in, int64_t kc, bool self_graph) {
  TORCH_CHECK(query_in.dim() == 2 && base_in.dim() == 2, "knn_candidates: query and base must have shape [n, d], got ",
              query_in.sizes(), " and ", base_in.sizes());
  TORCH_CHECK(query_in.scalar_type() == base_in.scalar_type() &&
                  (query_in.scalar_type() == at::kFloat || query_in.scalar_type() == at::kDouble),
              "knn_candidates: query and base must both be float32 or both float64, got ", query_in.scalar_type(),
              " and ", base_in.scalar_type());
  TORCH_CHECK(query_in.size(1) == base_in.size(1), "knn_candidates: query has ", query_in.size(1),
              " features but base has ", base_in.size(1));
  TORCH_CHECK(!self_graph || (query_in.data_ptr() == base_in.data_ptr() && query_in.sizes() == base_in.sizes() &&
                              query_in.strides() == base_in.strides()),
              "knn_candidates: self_graph=True needs base to be the same tensor as query");
  const int64_t nq = query_in.size(0), nb = base_in.size(0);
  const int64_t available = self_graph ? nb - 1 : nb;
  TORCH_CHECK(kc >= 1 && kc <= available, "knn_candidates: kc must lie in [1, ", available, "], got ", kc);
  TORCH_CHECK(nb <= std::numeric_limits<int32_t>::max(), "knn_candidates: base has ", nb,
              " rows; at most 2^31 - 1 are supported");
  const at::Tensor query = query_in.contiguous();
  const at::Tensor base = self_graph ? query : base_in.contiguous();
  at::Tensor idx = at::empty({nq, kc}, query.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES(query.scalar_type(), "knn_candidates_cpu",
                             [&] { search<scalar_t>(query, base, self_graph, kc, idx); });
  return idx;
}

// sum_t (a[t] - b[t])^2 with kLanes partial sums, so that the compiler vectorises it; the order of the
// operations is also that of fastwnll.knn.tiled.distances (the same distances on every device).
template <typename scalar_t>
scalar_t squared_distance(const scalar_t* a, const scalar_t* b, int64_t dim) {
  constexpr int64_t kLanes = 8;
  scalar_t part[kLanes] = {};
  int64_t t = 0;
  for (; t + kLanes <= dim; t += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) part[l] += (a[t + l] - b[t + l]) * (a[t + l] - b[t + l]);
  }
  scalar_t acc = 0;
  for (; t < dim; ++t) acc += (a[t] - b[t]) * (a[t] - b[t]);
  for (int64_t l = 0; l < kLanes; ++l) acc += part[l];
  return acc;
}

// Exact Euclidean distances of the candidates (direct differences, in the input dtype), -1 entries and
// the point itself (candidate == row + self_offset) at inf and returned as -1; the k smallest per row in
// ascending (distance, index) order, so that ties are broken by the index whatever the candidates' order.
std::tuple<at::Tensor, at::Tensor> knn_refine_cpu(const at::Tensor& query_in, const at::Tensor& base_in,
                                                  const at::Tensor& cand_in, int64_t k,
                                                  std::optional<int64_t> self_offset) {
  TORCH_CHECK(query_in.dim() == 2 && base_in.dim() == 2 && query_in.size(1) == base_in.size(1) &&
                  query_in.scalar_type() == base_in.scalar_type(),
              "knn_refine: query and base must be [n, d] of one dtype, got ", query_in.sizes(), " ",
              query_in.scalar_type(), " and ", base_in.sizes(), " ", base_in.scalar_type());
  TORCH_CHECK(cand_in.dim() == 2 && cand_in.size(0) == query_in.size(0) && cand_in.scalar_type() == at::kLong,
              "knn_refine: cand must be int64 [nq=", query_in.size(0), ", kc], got ", cand_in.scalar_type(), " ",
              cand_in.sizes());
  TORCH_CHECK(k >= 1 && k <= cand_in.size(1), "knn_refine: k must lie in [1, kc=", cand_in.size(1), "], got ", k);
  const at::Tensor query = query_in.contiguous(), base = base_in.contiguous(), cand = cand_in.contiguous();
  const int64_t nq = query.size(0), nb = base.size(0), dim = query.size(1), kc = cand.size(1);
  const int64_t* c = cand.const_data_ptr<int64_t>();
  for (int64_t p = 0; p < nq * kc; ++p) {
    TORCH_CHECK(c[p] >= -1 && c[p] < nb, "knn_refine: candidate ", c[p], " out of range [-1, ", nb, ")");
  }
  at::Tensor idx = at::empty({nq, k}, cand.options());
  at::Tensor dist = at::empty({nq, k}, query.options());
  AT_DISPATCH_FLOATING_TYPES(query.scalar_type(), "knn_refine_cpu", [&] {
    const scalar_t* q = query.const_data_ptr<scalar_t>();
    const scalar_t* b = base.const_data_ptr<scalar_t>();
    int64_t* oi = idx.mutable_data_ptr<int64_t>();
    scalar_t* od = dist.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, nq, 64, [&](int64_t lo, int64_t hi) {
      std::vector<std::pair<scalar_t, int64_t>> row(kc);
      for (int64_t r = lo; r < hi; ++r) {
        const scalar_t* qr = q + r * dim;
        for (int64_t s = 0; s < kc; ++s) {
          const int64_t j = c[r * kc + s];
          if (j >= 0 && !(self_offset && j == r + *self_offset)) {
            row[s] = {std::sqrt(squared_distance(qr, b + j * dim, dim)), j};
          } else {
            row[s] = {std::numeric_limits<scalar_t>::infinity(), -1};
          }
        }
        std::sort(row.begin(), row.end());  // lexicographic: (distance, index)
        for (int64_t s = 0; s < k; ++s) {
          od[r * k + s] = row[s].first;
          oi[r * k + s] = row[s].second;
        }
      }
    });
  });
  return {idx, dist};
}

}  // namespace
}  // namespace fastwnll

TORCH_LIBRARY_IMPL(fastwnll, CPU, m) {
  m.impl("knn_candidates", &fastwnll::knn_candidates_cpu);
  m.impl("knn_refine", &fastwnll::knn_refine_cpu);
}
