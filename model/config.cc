#include "model/config.h"

#include <cmath>

#include "core/checked.h"
#include "core/error.h"

namespace frugal::model {

namespace {
// Upper bounds of the sizes: far past any released model (DeepSeek-V3: d_model 7168, 256 experts, 61 layers,
// vocabulary 129280), low enough that no product of them below wraps int64.
constexpr int64_t kMaxVocab = int64_t(1) << 24;
constexpr int64_t kMaxWidth = int64_t(1) << 20;   // d_model, MLA ranks
constexpr int64_t kMaxHidden = int64_t(1) << 24;  // d_ff, d_expert
constexpr int64_t kMaxHeads = int64_t(1) << 16;   // n_heads, n_kv_heads, head_dim, MLA head widths
constexpr int64_t kMaxLayers = 100000;
constexpr int64_t kMaxExperts = int64_t(1) << 20;
constexpr int64_t kMaxShared = int64_t(1) << 16;
constexpr int64_t kMaxSeqLen = int64_t(1) << 24;
constexpr int64_t kMaxMtp = 1024;
// Parameters of one tensor and of the whole model: 2^50 (10^15) is 1500 times DeepSeek-V3.
constexpr int64_t kMaxParams = int64_t(1) << 50;

void check_range(const char* key, int64_t v, int64_t lo, int64_t hi) {
    FRUGAL_CONFIG_CHECK(v >= lo && v <= hi, key, " = ", v, " is out of range: expected an integer in [", lo, ", ", hi,
                        "]");
}

// Elements of one weight: the product of its dims, refused past kMaxParams.
int64_t weight_numel(std::initializer_list<int64_t> dims, const std::string& what) {
    return mul_or_throw(dims, kMaxParams, what,
                        "the model is too large to hold; check the sizes (a typo of a few digits?)");
}
}  // namespace

void MoEConfig::register_fields(ConfigFields& f, const std::string& p) {
    f.add(p + "n_experts", &n_experts, "routed experts per MoE layer (0: every layer is dense)", 0, kMaxExperts);
    f.add(p + "top_k", &top_k, "experts chosen per token", 1, kMaxExperts);
    f.add(p + "d_expert", &d_expert, "hidden width of one routed expert (HF: moe_intermediate_size)", 1, kMaxHidden);
    f.add(p + "n_shared_experts", &n_shared_experts,
          "shared experts every token passes through; fused into one SwiGLU of width n_shared_experts * d_expert", 0,
          kMaxShared);
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
    f.add(p + "n_group", &n_group,
          "group-limited routing: the experts form n_group equal consecutive groups (DeepSeek-V3: 8); 1 = no groups", 1,
          kMaxGroups);
    f.add(p + "topk_group", &topk_group,
          "group-limited routing: the groups of the best group score a token may route to (DeepSeek-V3: 4)", 1,
          kMaxGroups);
    f.add(p + "group_score", &group_score,
          "a group's score per token: top2_sum (the sum of its two largest score + bias: DeepSeek-V3, GLM-4.5, "
          "dots.llm1) or max (its largest: DeepSeek-V2 group_limited_greedy)",
          {"top2_sum", "max"});
    f.add(p + "max_nodes_per_token", &max_nodes_per_token,
          "node-limited routing (DeepSeek-V3: 4): when the experts of an expert-parallel group span several nodes, a "
          "token goes to at most this many, chosen by the sum of its top_k / max_nodes_per_token best scores on each "
          "(1 or 2 of them); 0 = off. Not with moe.n_group > 1",
          0, kMaxGroups);
}

void MoEConfig::validate() const {
    check_range("moe.n_experts", n_experts, 0, kMaxExperts);
    check_range("moe.top_k", top_k, 1, kMaxExperts);
    check_range("moe.d_expert", d_expert, 1, kMaxHidden);
    check_range("moe.n_shared_experts", n_shared_experts, 0, kMaxShared);
    FRUGAL_CONFIG_CHECK(std::isfinite(routed_scaling_factor) && routed_scaling_factor >= 0 &&
                            std::isfinite(capacity_factor) && capacity_factor >= 0,
                        "moe.routed_scaling_factor (", routed_scaling_factor, ") and moe.capacity_factor (",
                        capacity_factor, ") must be finite and >= 0");
    check_range("moe.n_group", n_group, 1, kMaxGroups);
    FRUGAL_CONFIG_CHECK(group_score == "top2_sum" || group_score == "max", "moe.group_score '", group_score,
                        "' is not known: use top2_sum or max");
    if (n_experts == 0) return;
    FRUGAL_CONFIG_CHECK(top_k <= n_experts, "moe.top_k (", top_k, ") exceeds moe.n_experts (", n_experts,
                        "): set moe.top_k to at most ", n_experts);
    FRUGAL_CONFIG_CHECK(!shared_expert_gate || n_shared_experts > 0,
                        "moe.shared_expert_gate is set but moe.n_shared_experts is 0: there is no shared expert to "
                        "gate; set moe.n_shared_experts or drop the gate");
    FRUGAL_CONFIG_CHECK(capacity_factor == 0.0 || capacity_factor >= 0.01, "moe.capacity_factor (", capacity_factor,
                        ") would drop nearly every token: use 0 (dropless) or a value >= 1");
    FRUGAL_CONFIG_CHECK(n_experts % n_group == 0, "moe.n_group (", n_group, ") must divide moe.n_experts (", n_experts,
                        ") into equal groups: set moe.n_group to a divisor of ", n_experts);
    FRUGAL_CONFIG_CHECK(topk_group >= 1 && topk_group <= n_group, "moe.topk_group (", topk_group,
                        ") must be in [1, moe.n_group (", n_group, ")]: set moe.topk_group to at most ", n_group);
    const int64_t per_group = n_experts / n_group;
    FRUGAL_CONFIG_CHECK(top_k <= topk_group * per_group, "moe.top_k (", top_k, ") exceeds the ", topk_group * per_group,
                        " experts in moe.topk_group (", topk_group, ") groups of ", per_group,
                        ": raise moe.topk_group or lower moe.top_k");
    if (max_nodes_per_token > 0) {
        FRUGAL_CONFIG_CHECK(n_group == 1, "moe.max_nodes_per_token (", max_nodes_per_token, ") and moe.n_group (",
                            n_group,
                            ") both group the experts: node-limited routing groups them by node; set moe.n_group: 1");
        FRUGAL_CONFIG_CHECK(
            top_k % max_nodes_per_token == 0 && (top_k / max_nodes_per_token == 1 || top_k / max_nodes_per_token == 2),
            "moe.max_nodes_per_token (", max_nodes_per_token, ") must be moe.top_k (", top_k,
            ") or half of it: a node's score is the sum of the token's top_k / max_nodes_per_token "
            "best scores there, one or two");
    }
    FRUGAL_CONFIG_CHECK(n_group == 1 || group_score != "top2_sum" || per_group >= 2,
                        "moe.group_score top2_sum needs two experts per group, but moe.n_group (", n_group, ") leaves ",
                        per_group, ": use moe.group_score max or a smaller moe.n_group");
}

void ModelConfig::register_fields(ConfigFields& f, const std::string& p) {
    f.add(p + "vocab_size", &vocab_size, "vocabulary size (byte-level tokenizer: 257)", 2, kMaxVocab);
    f.add(p + "d_model", &d_model, "model (residual stream) width", 1, kMaxWidth);
    f.add(p + "n_layers", &n_layers, "transformer blocks", 1, kMaxLayers);
    f.add(p + "n_heads", &n_heads, "query heads", 1, kMaxHeads);
    f.add(p + "n_kv_heads", &n_kv_heads, "key/value heads; 0 = n_heads; fewer gives grouped-query attention", 0,
          kMaxHeads);
    f.add(p + "head_dim", &head_dim, "width of one head; 0 = d_model / n_heads", 0, kMaxHeads);
    f.add(p + "d_ff", &d_ff, "hidden width of the dense SwiGLU feed-forward blocks", 1, kMaxHidden);
    f.add(p + "dense_layers", &dense_layers,
          "the first dense_layers blocks use a dense FFN, the rest MoE (HF: first_k_dense_replace)", 0, kMaxLayers);
    f.add(p + "max_seq_len", &max_seq_len, "longest sequence the rotary tables cover", 1, kMaxSeqLen);
    f.add(p + "rope_theta", &rope_theta, "rotary embedding base", 1.0, 1e300);
    f.add(p + "rope_scaling", &rope_scaling,
          "rotary scaling: none, or yarn (YaRN as transformers computes it; DeepSeek-V3's rope_scaling)",
          {"none", "yarn"});
    f.add(p + "rope_factor", &rope_factor, "yarn: context extension factor (DeepSeek-V3: 40)", 1.0, 1e6);
    f.add(p + "rope_original_max_seq_len", &rope_original_max_seq_len,
          "yarn: context length the model was pretrained with (original_max_position_embeddings); 0 = "
          "model.max_seq_len",
          0, kMaxSeqLen);
    f.add(p + "yarn_beta_fast", &yarn_beta_fast, "yarn: rotations where the ramp to extrapolation ends (32)", 1e-6,
          1e6);
    f.add(p + "yarn_beta_slow", &yarn_beta_slow, "yarn: rotations where the ramp to extrapolation starts (1)", 1e-6,
          1e6);
    f.add(p + "yarn_mscale", &yarn_mscale,
          "yarn: mscale; cos/sin are scaled by (0.1 mscale ln(factor) + 1) / (0.1 mscale_all_dim ln(factor) + 1)", 0.0,
          1e3);
    f.add(p + "yarn_mscale_all_dim", &yarn_mscale_all_dim,
          "yarn: mscale_all_dim; also multiplies MLA's softmax scale by (0.1 mscale_all_dim ln(factor) + 1)^2; 0 = off",
          0.0, 1e3);
    f.add(p + "partial_rotary_factor", &partial_rotary_factor,
          "gqa: fraction of each head the rotary embedding covers, its first head_dim * factor values (GLM-4.5: 0.5)",
          1e-6, 1.0);
    f.add(p + "norm_eps", &norm_eps, "RMSNorm epsilon (> 0)", 1e-30, 1.0);
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
          "gqa (multi-head / grouped-query) or mla (DeepSeek-V2/V3 multi-head latent attention: queries and keys "
          "of qk_nope_head_dim + qk_rope_head_dim, values of v_head_dim, keys and values from a kv_lora_rank latent)",
          {"gqa", "mla"});
    f.add(p + "q_lora_rank", &q_lora_rank, "mla: rank of the query compression; 0 = no compression", 0, kMaxWidth);
    f.add(p + "kv_lora_rank", &kv_lora_rank, "mla: rank of the key/value compression", 1, kMaxWidth);
    f.add(p + "qk_nope_head_dim", &qk_nope_head_dim, "mla: per-head query/key width without rotary embedding", 1,
          kMaxHeads);
    f.add(p + "qk_rope_head_dim", &qk_rope_head_dim, "mla: per-head query/key width with rotary embedding", 0,
          kMaxHeads);
    f.add(p + "v_head_dim", &v_head_dim, "mla: per-head value width", 1, kMaxHeads);
    f.add(p + "mtp_modules", &mtp_modules,
          "multi-token-prediction modules (DeepSeek-V3 section 2.2): module k predicts the token k + 1 positions "
          "ahead from the previous module's hidden state and the next token's embedding",
          0, kMaxMtp);
    f.add(p + "mtp_loss_weight", &mtp_loss_weight,
          "lambda: the mean cross-entropy of the MTP modules, times this, joins the loss (DeepSeek-V3: 0.3, then 0.1)",
          0.0, 1e3);
    f.add(p + "init_from", &init_from,
          "hf:DIR starts from a Hugging Face model (deepseek_v3 / kimi_k2, deepseek_v2, glm4_moe, dots1, qwen3_moe, "
          "qwen2_moe, mixtral, olmoe; FP8 block-quantized or fused-expert safetensors too): its config.json sets the "
          "architecture keys and its safetensors the weights (model.mtp_modules stays this run's choice); empty = "
          "random initialization");
    moe.register_fields(f, "moe.");
}

void ModelConfig::validate() const {
    // The ranges again: a config built in code or from a config.json has not passed through the key registry.
    check_range("model.vocab_size", vocab_size, 2, kMaxVocab);
    check_range("model.d_model", d_model, 1, kMaxWidth);
    check_range("model.n_layers", n_layers, 1, kMaxLayers);
    check_range("model.n_heads", n_heads, 1, kMaxHeads);
    check_range("model.n_kv_heads", n_kv_heads, 0, kMaxHeads);
    check_range("model.head_dim", head_dim, 0, kMaxHeads);
    check_range("model.d_ff", d_ff, 1, kMaxHidden);
    check_range("model.dense_layers", dense_layers, 0, kMaxLayers);
    check_range("model.max_seq_len", max_seq_len, 1, kMaxSeqLen);
    check_range("model.q_lora_rank", q_lora_rank, 0, kMaxWidth);
    check_range("model.kv_lora_rank", kv_lora_rank, 1, kMaxWidth);
    check_range("model.qk_nope_head_dim", qk_nope_head_dim, 1, kMaxHeads);
    check_range("model.qk_rope_head_dim", qk_rope_head_dim, 0, kMaxHeads);
    check_range("model.v_head_dim", v_head_dim, 1, kMaxHeads);
    check_range("model.mtp_modules", mtp_modules, 0, kMaxMtp);
    FRUGAL_CONFIG_CHECK(std::isfinite(norm_eps) && norm_eps > 0 && norm_eps <= 1, "model.norm_eps = ", norm_eps,
                        " is out of range: expected a number in (0, 1] (typically 1e-6)");
    FRUGAL_CONFIG_CHECK(std::isfinite(rope_theta) && rope_theta >= 1, "model.rope_theta = ", rope_theta,
                        " is out of range: expected a finite number >= 1 (typically 10000 to 1000000)");
    FRUGAL_CONFIG_CHECK(std::isfinite(init_std) && init_std >= 0 && init_std <= 10, "model.init_std = ", init_std,
                        " is out of range: expected a number in [0, 10]");
    FRUGAL_CONFIG_CHECK(kv_heads() <= n_heads, "model.n_kv_heads (", kv_heads(), ") exceeds model.n_heads (", n_heads,
                        "): choose n_kv_heads among the divisors of n_heads");
    FRUGAL_CONFIG_CHECK(n_heads % kv_heads() == 0, "model.n_heads (", n_heads,
                        ") is not divisible by model.n_kv_heads (", kv_heads(),
                        "): choose n_kv_heads among the divisors of n_heads");
    if (!is_mla()) {  // MLA's head widths are qk_nope_head_dim, qk_rope_head_dim and v_head_dim
        FRUGAL_CONFIG_CHECK(head_dim > 0 || d_model % n_heads == 0, "model.d_model (", d_model,
                            ") is not divisible by model.n_heads (", n_heads,
                            "): set model.head_dim or change n_heads");
        FRUGAL_CONFIG_CHECK(hd() > 0, "head dimension model.d_model / model.n_heads = ", d_model, " / ", n_heads,
                            " is 0: set model.head_dim or use fewer heads");
        FRUGAL_CONFIG_CHECK(hd() % 2 == 0, "head dimension (", hd(), ") must be even for the rotary embedding: adjust ",
                            head_dim > 0 ? "model.head_dim" : "model.d_model / model.n_heads");
    }
    FRUGAL_CONFIG_CHECK(attention == "gqa" || attention == "mla", "model.attention '", attention,
                        "' is not known: use gqa or mla");
    FRUGAL_CONFIG_CHECK(rope_scaling == "none" || rope_scaling == "yarn", "model.rope_scaling '", rope_scaling,
                        "' is not known: use none or yarn");
    FRUGAL_CONFIG_CHECK(std::isfinite(rope_factor) && rope_factor >= 1 && std::isfinite(yarn_beta_fast) &&
                            std::isfinite(yarn_beta_slow) && yarn_beta_fast > yarn_beta_slow && yarn_beta_slow > 0 &&
                            std::isfinite(yarn_mscale) && yarn_mscale >= 0 && std::isfinite(yarn_mscale_all_dim) &&
                            yarn_mscale_all_dim >= 0,
                        "model.rope_factor (", rope_factor, ") must be >= 1, model.yarn_beta_fast (", yarn_beta_fast,
                        ") above model.yarn_beta_slow (", yarn_beta_slow,
                        ") > 0, and model.yarn_mscale / yarn_mscale_all_dim >= 0");
    check_range("model.rope_original_max_seq_len", rope_original_max_seq_len, 0, kMaxSeqLen);
    FRUGAL_CONFIG_CHECK(std::isfinite(partial_rotary_factor) && partial_rotary_factor > 0 && partial_rotary_factor <= 1,
                        "model.partial_rotary_factor = ", partial_rotary_factor,
                        " is out of range: expected a number in (0, 1]");
    FRUGAL_CONFIG_CHECK(std::isfinite(mtp_loss_weight) && mtp_loss_weight >= 0,
                        "model.mtp_loss_weight = ", mtp_loss_weight,
                        " must be a finite number >= 0 (DeepSeek-V3: 0.3)");
    if (is_mla()) {
        FRUGAL_CONFIG_CHECK(qk_rope_head_dim % 2 == 0, "model.qk_rope_head_dim (", qk_rope_head_dim,
                            ") must be even for the rotary embedding (DeepSeek-V3: 64)");
        FRUGAL_CONFIG_CHECK(partial_rotary_factor == 1.0, "model.partial_rotary_factor (", partial_rotary_factor,
                            ") applies to gqa; mla rotates qk_rope_head_dim values of each head: set it to 1");
    } else {
        FRUGAL_CONFIG_CHECK(rope_dim() >= 2 && rope_dim() % 2 == 0, "model.partial_rotary_factor (",
                            partial_rotary_factor, ") rotates ", rope_dim(), " of the ", hd(),
                            " values of a head: the rotated width must be even and at least 2");
    }
    FRUGAL_CONFIG_CHECK(dense_layers <= n_layers, "model.dense_layers (", dense_layers, ") exceeds model.n_layers (",
                        n_layers, "): set it to at most ", n_layers);
    moe.validate();
    check_param_count();
}

namespace {
// YaRN's attention temperature: 0.1 m ln(factor) + 1 (transformers' get_mscale), 1 for factor <= 1.
double yarn_mscale_of(double factor, double m) { return factor <= 1 ? 1.0 : 0.1 * m * std::log(factor) + 1.0; }
}  // namespace

double ModelConfig::attention_scale() const {
    const int64_t qk = is_mla() ? qk_nope_head_dim + qk_rope_head_dim : hd();
    double scale = 1.0 / std::sqrt(double(qk));
    if (is_mla() && rope_scaling == "yarn" && yarn_mscale_all_dim > 0) {
        const double m = yarn_mscale_of(rope_factor, yarn_mscale_all_dim);
        scale *= m * m;
    }
    return scale;
}

double ModelConfig::rope_attention_factor() const {
    if (rope_scaling != "yarn") return 1.0;
    if (yarn_mscale > 0 && yarn_mscale_all_dim > 0)
        return yarn_mscale_of(rope_factor, yarn_mscale) / yarn_mscale_of(rope_factor, yarn_mscale_all_dim);
    return yarn_mscale_of(rope_factor, 1.0);
}

// Every weight's element count and the model's total, with overflow-checked products: no size can wrap.
int64_t ModelConfig::check_param_count() const {
    const int64_t d = d_model;
    int64_t attn = 0;
    if (attention == "mla") {
        const int64_t qk = qk_nope_head_dim + qk_rope_head_dim;
        attn = weight_numel({n_heads, qk, q_lora_rank > 0 ? q_lora_rank : d}, "MLA query projection") +
               weight_numel({d, kv_lora_rank + qk_rope_head_dim}, "MLA key/value down projection") +
               weight_numel({n_heads, qk_nope_head_dim + v_head_dim, kv_lora_rank}, "MLA key/value up projection") +
               weight_numel({n_heads, v_head_dim, d}, "MLA output projection") +
               (q_lora_rank > 0 ? weight_numel({d, q_lora_rank}, "MLA query down projection") : 0);
    } else {
        attn = 2 * weight_numel({n_heads, hd(), d}, "attention query/output weight (n_heads x head_dim x d_model)") +
               2 * weight_numel({kv_heads(), hd(), d}, "attention key/value weight (n_kv_heads x head_dim x d_model)");
    }
    const int64_t dense = weight_numel({3, d_ff, d}, "dense FFN weights (3 x d_ff x d_model)");
    int64_t moe_layer = 0;
    if (moe.n_experts > 0)
        moe_layer = weight_numel({3, moe.n_experts, moe.d_expert, d},
                                 "routed expert weights of one layer (3 x n_experts x d_expert x d_model)") +
                    weight_numel({3, moe.n_shared_experts, moe.d_expert, d},
                                 "shared expert weights (3 x n_shared_experts x d_expert x d_model)") +
                    weight_numel({moe.n_experts + 1, d}, "router weights");
    const int64_t embed = weight_numel({vocab_size, d}, "embedding (vocab_size x d_model)");
    const int64_t moe_layers = moe.n_experts > 0 ? n_layers - dense_layers : 0;
    int64_t total = 0;
    const bool ok = checked_add(attn, int64_t(4) * d, &total) &&  // norms and biases, generously
                    checked_mul(total, n_layers, &total) &&
                    checked_add(total, weight_numel({n_layers - moe_layers, dense}, "dense FFN weights"), &total) &&
                    checked_add(total, weight_numel({moe_layers, moe_layer}, "MoE weights"), &total) &&
                    checked_add(total, 2 * embed, &total) && total <= kMaxParams;
    FRUGAL_CONFIG_CHECK(ok, "the model has more than ", kMaxParams, " parameters (model.n_layers ", n_layers,
                        ", model.d_model ", d, ", moe.n_experts ", moe.n_experts, ", moe.d_expert ", moe.d_expert,
                        "): check the sizes");
    return total;
}

}  // namespace frugal::model
