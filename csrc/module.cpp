// Python module of the compiled extension. Loading it registers the fastwnll:: ops
// (schemas in ops.cpp, kernels in cpu/ and cuda/).
#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <optional>
#include <set>

namespace fastwnll {
bool cuda_compiled() {
#ifdef FASTWNLL_WITH_CUDA
  return true;
#else
  return false;
#endif
}

// Number of distinct threads that run the chunks of an at::parallel_for over 64 items. It equals
// torch.get_num_threads() only when the extension was compiled with OpenMP, without which
// at::parallel_for silently runs serially.
int64_t parallel_threads() {
  std::set<int> seen;
  at::parallel_for(0, 64, 1, [&](int64_t, int64_t) {
#pragma omp critical
    seen.insert(at::get_thread_num());
  });
  return static_cast<int64_t>(seen.size());
}

namespace {
// Context manager that keeps TF32 out of cuBLAS matrix products on the calling thread while it is
// entered (at::NoTF32Guard), without touching torch's global TF32 settings. (Internal linkage: it
// shares pybind11's hidden visibility.)
struct NoTF32 {
  std::optional<at::NoTF32Guard> guard;
};
}  // namespace
}  // namespace fastwnll

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fastwnll compiled kernels; the ops live under torch.ops.fastwnll";
  m.def("cuda_compiled", &fastwnll::cuda_compiled, "True when the CUDA kernels were compiled in");
  m.def("parallel_threads", &fastwnll::parallel_threads,
        "Threads that at::parallel_for uses in the extension (torch.get_num_threads() when OpenMP is on)");
  pybind11::class_<fastwnll::NoTF32>(m, "NoTF32",
                                     "Context manager: no TF32 in cuBLAS matrix products on this thread while entered")
      .def(pybind11::init<>())
      .def("__enter__", [](fastwnll::NoTF32& self) { self.guard.emplace(); })
      .def("__exit__", [](fastwnll::NoTF32& self, const pybind11::args&) { self.guard.reset(); });
}
