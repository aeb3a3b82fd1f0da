// The Python module of dynlen's native kernels: one module, so one build and one load.
#include <torch/extension.h>

#include <vector>

std::vector<torch::Tensor> pack_weight(torch::Tensor weight, torch::Tensor bias);
torch::Tensor packed_linear(torch::Tensor x, torch::Tensor panels, torch::Tensor bias);
int64_t parallel_width(int64_t tasks);
bool has_bf16();
std::vector<torch::Tensor> pack_weight_bf16(torch::Tensor weight, torch::Tensor bias);
torch::Tensor packed_linear_bf16(torch::Tensor x, torch::Tensor panels, torch::Tensor bias);
bool has_vnni();
std::vector<torch::Tensor> pack_weight_int8(torch::Tensor weight, torch::Tensor bias);
torch::Tensor packed_linear_int8(torch::Tensor x, torch::Tensor panels, torch::Tensor scales, torch::Tensor shift,
                                 torch::Tensor bias);
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
  m.def("has_bf16", &has_bf16, "whether this CPU runs the bf16 GEMM (AVX512-BF16)");
  m.def("pack_weight_bf16", &pack_weight_bf16, "pack a Linear weight into bf16 k-pair panels");
  m.def("packed_linear_bf16", &packed_linear_bf16, "x @ W^T + b with bf16 operands, float32 sums and output");
  m.def("has_vnni", &has_vnni, "whether this CPU runs the int8 GEMM (AVX512-VNNI)");
  m.def("pack_weight_int8", &pack_weight_int8, "quantize a Linear weight per output channel into int8 k-quad panels");
  m.def("packed_linear_int8", &packed_linear_int8, "x @ W^T + b with int8 operands (x per row, dynamic), int32 sums");
  m.def("drop_attention", &drop_attention,
        "attention of a dropping layer: significance, kept slots and the kept rows' context in one call");
  m.def("probe_select", &probe_select,
        "kept slots of a dropping layer from its look-ahead probe's first map: the rest of the probe and the top slots");
}
