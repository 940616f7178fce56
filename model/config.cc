#include "model/config.h"

#include "core/error.h"

namespace frugal::model {

void MoEConfig::register_fields(ConfigFields& f, const std::string& p) {
    f.add(p + "n_experts", &n_experts, "routed experts per MoE layer (0: every layer is dense)", 0, 1 << 20);
    f.add(p + "top_k", &top_k, "experts chosen per token", 1, 1 << 20);
    f.add(p + "d_expert", &d_expert, "hidden width of one routed expert (HF: moe_intermediate_size)", 1);
    f.add(p + "n_shared_experts", &n_shared_experts,
          "shared experts every token passes through; fused into one SwiGLU of width n_shared_experts * d_expert", 0);
    f.add(p + "shared_expert_gate", &shared_expert_gate,
          "scale the shared experts' output of each token by sigmoid(x . w_gate), a learned [1, d_model] gate "
          "(Qwen2-MoE)");
    f.add(p + "score_func", &score_func, "router affinity: softmax (Mixtral, Qwen) or sigmoid (DeepSeek-V3)",
          {"softmax", "sigmoid"});
    f.add(p + "norm_topk_prob", &norm_topk_prob, "renormalize the chosen experts' weights to sum to one");
    f.add(p + "routed_scaling_factor", &routed_scaling_factor, "multiplies the routing weights (DeepSeek-V3: 2.5)", 0.0,
          1e6);
    f.add(p + "aux_loss", &aux_loss,
          "load-balancing loss: none, batch (Switch/GShard, per micro-batch) or seq (DeepSeek-V3, per sequence)",
          {"none", "batch", "seq"});
    f.add(p + "aux_loss_coef", &aux_loss_coef, "weight of the load-balancing loss (DeepSeek-V3 seq: 0.0001)", 0.0, 1e3);
    f.add(p + "z_loss_coef", &z_loss_coef, "weight of the router z-loss, mean(logsumexp(logits)^2) (ST-MoE: 0.001)",
          0.0, 1e3);
    f.add(p + "bias_update_rate", &bias_update_rate,
          "auxiliary-loss-free balancing: each step the bias of an overloaded expert falls by this much and of an "
          "underloaded one rises (DeepSeek-V3: 0.001); 0 turns it off",
          0.0, 1.0);
    f.add(p + "capacity_factor", &capacity_factor,
          "expert capacity = ceil(capacity_factor * tokens * top_k / n_experts); assignments past it are dropped in "
          "token order; 0 = dropless",
          0.0, 1e6);
}

void MoEConfig::validate() const {
    if (n_experts == 0) return;
    FRUGAL_CONFIG_CHECK(top_k <= n_experts, "moe.top_k (", top_k, ") exceeds moe.n_experts (", n_experts,
                        "): set moe.top_k to at most ", n_experts);
    FRUGAL_CONFIG_CHECK(!shared_expert_gate || n_shared_experts > 0,
                        "moe.shared_expert_gate is set but moe.n_shared_experts is 0: there is no shared expert to "
                        "gate; set moe.n_shared_experts or drop the gate");
    FRUGAL_CONFIG_CHECK(capacity_factor == 0.0 || capacity_factor >= 0.01, "moe.capacity_factor (", capacity_factor,
                        ") would drop nearly every token: use 0 (dropless) or a value >= 1");
}

void ModelConfig::register_fields(ConfigFields& f, const std::string& p) {
    f.add(p + "vocab_size", &vocab_size, "vocabulary size (byte-level tokenizer: 257)", 2, 1 << 24);
    f.add(p + "d_model", &d_model, "model (residual stream) width", 1);
    f.add(p + "n_layers", &n_layers, "transformer blocks", 1, 100000);
    f.add(p + "n_heads", &n_heads, "query heads", 1);
    f.add(p + "n_kv_heads", &n_kv_heads, "key/value heads; 0 = n_heads; fewer gives grouped-query attention", 0);
    f.add(p + "head_dim", &head_dim, "width of one head; 0 = d_model / n_heads", 0);
    f.add(p + "d_ff", &d_ff, "hidden width of the dense SwiGLU feed-forward blocks", 1);
    f.add(p + "dense_layers", &dense_layers,
          "the first dense_layers blocks use a dense FFN, the rest MoE (HF: first_k_dense_replace)", 0);
    f.add(p + "max_seq_len", &max_seq_len, "longest sequence the rotary tables cover", 1);
    f.add(p + "rope_theta", &rope_theta, "rotary embedding base", 1.0);
    f.add(p + "norm_eps", &norm_eps, "RMSNorm epsilon", 0.0, 1.0);
    f.add(p + "qk_norm", &qk_norm, "RMSNorm on queries and keys before the rotary embedding (Qwen3, OLMoE)");
    f.add(p + "qk_norm_scope", &qk_norm_scope,
          "what one QK-norm normalizes: head (each head's head_dim values, Qwen3) or projection (the whole query and "
          "key projections, n_heads * head_dim and n_kv_heads * head_dim wide, OLMoE)",
          {"head", "projection"});
    f.add(p + "attn_bias", &attn_bias, "learned biases on the query, key and value projections (Qwen2)");
    f.add(p + "tie_embeddings", &tie_embeddings, "the output head shares the token embedding matrix");
    f.add(p + "init_std", &init_std,
          "standard deviation of the normal initialization; output projections use init_std / sqrt(2 n_layers)", 0.0,
          10.0);
    f.add(p + "attention", &attention,
          "gqa (multi-head / grouped-query) or mla (DeepSeek's multi-head latent attention: counted by the "
          "accounting and `frugal estimate`, not trainable yet)",
          {"gqa", "mla"});
    f.add(p + "q_lora_rank", &q_lora_rank, "mla: rank of the query compression; 0 = no compression", 0);
    f.add(p + "kv_lora_rank", &kv_lora_rank, "mla: rank of the key/value compression", 1);
    f.add(p + "qk_nope_head_dim", &qk_nope_head_dim, "mla: per-head query/key width without rotary embedding", 1);
    f.add(p + "qk_rope_head_dim", &qk_rope_head_dim, "mla: per-head query/key width with rotary embedding", 0);
    f.add(p + "v_head_dim", &v_head_dim, "mla: per-head value width", 1);
    f.add(p + "mtp_modules", &mtp_modules, "multi-token-prediction modules (counted separately; not trained yet)", 0);
    f.add(p + "init_from", &init_from,
          "hf:DIR starts from a Hugging Face model (qwen3_moe, qwen2_moe, mixtral, olmoe): its config.json sets the "
          "architecture keys "
          "and its safetensors the weights; empty = random initialization");
    moe.register_fields(f, "moe.");
}

void ModelConfig::validate() const {
    FRUGAL_CONFIG_CHECK(n_heads % kv_heads() == 0, "model.n_heads (", n_heads,
                        ") is not divisible by model.n_kv_heads (", kv_heads(),
                        "): choose n_kv_heads among the divisors of n_heads");
    FRUGAL_CONFIG_CHECK(head_dim > 0 || d_model % n_heads == 0, "model.d_model (", d_model,
                        ") is not divisible by model.n_heads (", n_heads, "): set model.head_dim or change n_heads");
    FRUGAL_CONFIG_CHECK(hd() % 2 == 0, "head dimension (", hd(), ") must be even for the rotary embedding: adjust ",
                        head_dim > 0 ? "model.head_dim" : "model.d_model / model.n_heads");
    FRUGAL_CONFIG_CHECK(dense_layers <= n_layers, "model.dense_layers (", dense_layers, ") exceeds model.n_layers (",
                        n_layers, "): set it to at most ", n_layers);
    moe.validate();
}

}  // namespace frugal::model
