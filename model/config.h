// Model configuration: the shape of a decoder-only MoE transformer, rich enough for the Qwen3-MoE, Qwen2-MoE,
// Mixtral, OLMoE, GLM-4.5, dots.llm1 and DeepSeek-V2/V3 (multi-head latent attention, multi-token prediction)
// families. validate() rejects inconsistent shapes before anything is allocated.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

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
    // Group-limited routing (DeepSeek-V2/V3, GLM-4.5, dots.llm1): the experts form n_group equal consecutive groups,
    // a token may choose only among the topk_group groups of the best group score (top2_sum: the sum of the group's
    // two largest score + bias; max: the largest). n_group 1 routes over all experts.
    int64_t n_group = 1;
    int64_t topk_group = 1;
    std::string group_score = "top2_sum";  // top2_sum (DeepSeek-V3 noaux_tc) | max (DeepSeek-V2 group_limited_greedy)
    static constexpr int64_t kMaxGroups = 64;  // backend::kMaxRouterGroups (model/moe/router.cc checks they agree)
    // Node-limited routing (DeepSeek-V3 section 2.1.2): when an expert-parallel group spans several nodes, a token's
    // experts lie on at most max_nodes_per_token of them, the nodes of the best sums of its top_k / M best
    // score + bias there (group-limited routing whose groups are the nodes, set up by the trainer from the
    // layout). 0 = off.
    int64_t max_nodes_per_token = 0;

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
    // Rotary scaling (none | yarn) as transformers' _compute_yarn_parameters computes it (YaRN, Peng et al. 2023;
    // DeepSeek-V3's rope_scaling): inv_freq blended between interpolation (theta^(-2j/r) / factor) and extrapolation
    // by a ramp over [beta_fast, beta_slow] rotations of the original context; cos/sin scaled by mscale /
    // mscale_all_dim (0.1 ln(factor) + 1 each); MLA's softmax scale multiplied by mscale_all_dim's factor squared.
    std::string rope_scaling = "none";
    double rope_factor = 1.0;
    int64_t rope_original_max_seq_len = 0;  // 0: max_seq_len
    double yarn_beta_fast = 32.0;
    double yarn_beta_slow = 1.0;
    double yarn_mscale = 1.0;
    double yarn_mscale_all_dim = 0.0;
    double partial_rotary_factor = 1.0;  // gqa: the rotation covers the first head_dim * factor values of a head
    double norm_eps = 1e-6;
    bool qk_norm = false;                // RMSNorm on queries and keys before the rotary embedding
    std::string qk_norm_scope = "head";  // head: over each head's hd values (Qwen3); projection: over the whole
                                         // query / key projection (OLMoE)
    bool attn_bias = false;              // biases on the query, key and value projections (Qwen2)
    bool tie_embeddings = false;
    double init_std = 0.02;
    // Multi-head latent attention (DeepSeek-V2 section 2.1, model/layers/mla.h).
    std::string attention = "gqa";  // gqa | mla
    int64_t q_lora_rank = 0;        // 0: queries projected directly (DeepSeek-V2-Lite)
    int64_t kv_lora_rank = 512;
    int64_t qk_nope_head_dim = 128;
    int64_t qk_rope_head_dim = 64;
    int64_t v_head_dim = 128;
    // Multi-token-prediction modules (DeepSeek-V3 section 2.2): module k predicts the token k + 1 positions ahead;
    // their mean loss, times mtp_loss_weight (lambda), joins the training loss.
    int64_t mtp_modules = 0;
    double mtp_loss_weight = 0.3;
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
    bool is_mla() const { return attention == "mla"; }
    // Values of a head the rotary embedding rotates: mla qk_rope_head_dim; gqa hd() * partial_rotary_factor,
    // truncated (transformers' int(head_dim * partial_rotary_factor)).
    int64_t rope_dim() const { return is_mla() ? qk_rope_head_dim : int64_t(double(hd()) * partial_rotary_factor); }
    // The multiplier of q.k before the softmax: 1 / sqrt(query/key head width), times YaRN's mscale_all_dim
    // correction squared for MLA (transformers' DeepseekV3Attention.scaling).
    double attention_scale() const;
    // The factor YaRN multiplies cos and sin by (1 without YaRN).
    double rope_attention_factor() const;
    bool is_moe_layer(int64_t layer) const { return layer >= dense_layers && moe.n_experts > 0; }
    // The MoE blocks in Transformer::moe_layers() order: the main model's, then the MTP modules' (block index
    // n_layers + k); and a block's parameter prefix without the dot ("layers.L", or "mtp.K" for n_layers + k).
    std::vector<int64_t> moe_block_indices() const {
        std::vector<int64_t> out;
        for (int64_t l = 0; l < n_layers + mtp_modules; ++l)
            if (is_moe_layer(l)) out.push_back(l);
        return out;
    }
    std::string block_name(int64_t l) const {
        return l < n_layers ? "layers." + std::to_string(l) : "mtp." + std::to_string(l - n_layers);
    }
};

}  // namespace frugal::model
