// Model configuration: the shape of a decoder-only MoE transformer, rich enough for the Qwen3-MoE, Mixtral, OLMoE
// and DeepSeek-style (without MLA) families. validate() rejects inconsistent shapes before anything is allocated.
#pragma once

#include <cstdint>
#include <string>

#include "core/config_fields.h"

namespace frugal::model {

struct MoEConfig {
    int64_t n_experts = 8;
    int64_t top_k = 2;
    int64_t d_expert = 512;              // hidden width of one routed expert (moe_intermediate_size)
    int64_t n_shared_experts = 0;        // shared experts, fused into one SwiGLU of width n_shared * d_expert
    bool shared_expert_gate = false;     // shared output scaled per token by sigmoid(x w_g) (Qwen2-MoE)
    std::string score_func = "softmax";  // softmax | sigmoid
    bool norm_topk_prob = true;          // renormalize the chosen weights to sum to 1
    double routed_scaling_factor = 1.0;
    std::string aux_loss = "batch";  // none | batch (Switch/GShard) | seq (DeepSeek-V3 sequence-wise)
    double aux_loss_coef = 0.01;
    double z_loss_coef = 0.0;
    double bias_update_rate = 0.0;  // aux-loss-free balancing: gamma of DeepSeek-V3 section 2.1.2; 0 = off
    double capacity_factor = 0.0;   // 0 = dropless

    void register_fields(ConfigFields& f, const std::string& prefix);
    void validate() const;
};

struct ModelConfig {
    int64_t vocab_size = 257;
    int64_t d_model = 256;
    int64_t n_layers = 4;
    int64_t n_heads = 4;
    int64_t n_kv_heads = 0;    // 0 = n_heads (multi-head); fewer = grouped-query attention
    int64_t head_dim = 0;      // 0 = d_model / n_heads
    int64_t d_ff = 1024;       // hidden width of the dense SwiGLU blocks
    int64_t dense_layers = 0;  // the first dense_layers blocks use a dense FFN (first_k_dense_replace)
    int64_t max_seq_len = 256;
    double rope_theta = 10000.0;
    double norm_eps = 1e-6;
    bool qk_norm = false;                // RMSNorm on queries and keys before the rotary embedding
    std::string qk_norm_scope = "head";  // head: over each head's hd values (Qwen3); projection: over the whole
                                         // query / key projection (OLMoE)
    bool attn_bias = false;              // biases on the query, key and value projections (Qwen2)
    bool tie_embeddings = false;
    double init_std = 0.02;
    // Multi-head latent attention (DeepSeek-V2/V3). The accounting counts it; training it is not implemented yet
    // and the trainer refuses it.
    std::string attention = "gqa";  // gqa | mla
    int64_t q_lora_rank = 0;        // 0: queries projected directly (DeepSeek-V2-Lite)
    int64_t kv_lora_rank = 512;
    int64_t qk_nope_head_dim = 128;
    int64_t qk_rope_head_dim = 64;
    int64_t v_head_dim = 128;
    // Multi-token-prediction modules (DeepSeek-V3): counted separately by the accounting, not trained yet.
    int64_t mtp_modules = 0;
    // "hf:DIR": the architecture comes from DIR/config.json and the weights from its safetensors.
    std::string init_from;
    MoEConfig moe;

    void register_fields(ConfigFields& f, const std::string& prefix);
    // Ranges and consistency of every key, and that no weight's size (nor the total) wraps int64.
    void validate() const;
    // An upper bound of the parameter count, from overflow-checked products; throws ConfigError past 2^50.
    int64_t check_param_count() const;

    int64_t kv_heads() const { return n_kv_heads > 0 ? n_kv_heads : n_heads; }
    int64_t hd() const { return head_dim > 0 ? head_dim : d_model / n_heads; }
    bool is_moe_layer(int64_t layer) const { return layer >= dense_layers && moe.n_experts > 0; }
};

}  // namespace frugal::model
