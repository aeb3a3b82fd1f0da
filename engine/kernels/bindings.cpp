// The Python module of dynlen's native kernels: one module, so one build and one load.
#include <torch/extension.h>

#include <vector>

std::vector<torch::Tensor> pack_weight(torch::Tensor weight, torch::Tensor bias);
torch::Tensor packed_linear(torch::Tensor x, torch::Tensor panels, torch::Tensor bias);
int64_t parallel_width(int64_t tasks);
std::vector<torch::Tensor> drop_attention(torch::Tensor q, torch::Tensor k, torch::Tensor v,
                                          const std::vector<int64_t>& lengths, const std::vector<int64_t>& keep,
                                          const std::vector<int64_t>& protect, double scale);
torch::Tensor probe_select(torch::Tensor hidden, torch::Tensor weight, torch::Tensor bias,
                           const std::vector<int64_t>& lengths, const std::vector<int64_t>& keep,
                           const std::vector<int64_t>& protect);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("parallel_width", &parallel_width, "threads used by parallel_for (a build check)");
  m.def("pack_weight", &pack_weight, "pack a Linear weight into 32-column panels");
  m.def("packed_linear", &packed_linear, "x @ W^T + b with packed weights");
  m.def("drop_attention", &drop_attention,
        "attention of a dropping layer: significance, kept slots and the kept rows' context in one call");
  m.def("probe_select", &probe_select,
        "kept slots of a dropping layer from its look-ahead probe's first map: the rest of the probe and the top slots");
}
