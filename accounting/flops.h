// Parameter and FLOP counts of a Frugal model, in Megatron-LM's convention (training/training.py,
// num_floating_point_operations): 6 FLOPs per parameter of every matmul a token passes through (forward and the
// two backward GEMMs, no recomputation), plus the attention core: QK^T and PV over the sequence, halved by the
// causal mask, 6 * S * n_heads * head_dim per token per layer. The embedding lookup is not a matmul; the output
// head is (6 * d_model * vocab). Routed experts count top_k experts, shared experts their own width, the router
// its d_model * n_experts gate. Each term is documented in docs/accounting.md.
#pragma once

#include <cstdint>

#include "model/config.h"

namespace frugal::accounting {

struct ParamCounts {
    double total = 0;            // every parameter
    double active = 0;           // what one token touches: embedding, head, attention, dense, shared, top-k, routers
    double active_no_embed = 0;  // active without the input embedding and the output head
};

// Main model only; multi-token-prediction modules are counted by mtp_params().
ParamCounts count_params(const model::ModelConfig& m);
double mtp_params(const model::ModelConfig& m);
// Parameters of the routed experts of every MoE layer: the part expert parallelism shards (count_params includes it).
double routed_expert_params(const model::ModelConfig& m);
// Training FLOPs per token at sequence length seq_len: 6 per active matmul parameter (the head and the multi-token-
// prediction modules included) plus the causal attention core.
double training_flops_per_token(const model::ModelConfig& m, int64_t seq_len);

}  // namespace frugal::accounting
