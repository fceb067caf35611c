// Python module of the compiled extension. Loading it registers the fastwnll:: ops
// (schemas in ops.cpp, kernels in cpu/ and cuda/).
#include <torch/extension.h>

namespace fastwnll {
bool cuda_compiled() {
#ifdef FASTWNLL_WITH_CUDA
  return true;
#else
  return false;
#endif
}
}  // namespace fastwnll

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fastwnll compiled kernels; the ops live under torch.ops.fastwnll";
  m.def("cuda_compiled", &fastwnll::cuda_compiled, "True when the CUDA kernels were compiled in");
}
