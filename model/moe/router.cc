#include "model/moe/router.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace frugal::model {

ScoreFunc parse_score_func(const std::string& name) {
    if (name == "softmax") return ScoreFunc::kSoftmax;
    FRUGAL_CONFIG_CHECK(name == "sigmoid", "moe.score_func (", name, ") is not a router score: use softmax or sigmoid");
    return ScoreFunc::kSigmoid;
}

AuxLoss parse_aux_loss(const std::string& name) {
    if (name == "none") return AuxLoss::kNone;
    if (name == "seq") return AuxLoss::kSeq;
    FRUGAL_CONFIG_CHECK(name == "batch", "moe.aux_loss (", name,
                        ") is not a load-balancing loss: use none, batch or seq");
    return AuxLoss::kBatch;
}

GroupScore parse_group_score(const std::string& name) {
    if (name == "top2_sum") return GroupScore::kTop2Sum;
    FRUGAL_CONFIG_CHECK(name == "max", "moe.group_score (", name, ") is not a group score: use top2_sum or max");
    return GroupScore::kMax;
}

static_assert(MoEConfig::kMaxGroups == backend::kMaxRouterGroups,
              "moe.n_group's limit must be the backends' bound on router groups");

void MoEStats::reset(int64_t n_experts) {
    tokens_per_expert.assign(size_t(n_experts), 0);
    selected_per_expert.assign(size_t(n_experts), 0);
    dropped = assignments = micro_batches = 0;
    aux_loss = z_loss = 0;
}

double MoEStats::imbalance() const {
    if (tokens_per_expert.empty()) return 1.0;
    int64_t total = 0, mx = 0;
    for (int64_t c : tokens_per_expert) {
        total += c;
        mx = std::max(mx, c);
    }
    if (total == 0) return 1.0;
    return double(mx) * double(tokens_per_expert.size()) / double(total);
}

int64_t router_capacity(double capacity_factor, int64_t t, int64_t k, int64_t e) {
    if (capacity_factor <= 0) return std::numeric_limits<int64_t>::max();
    return int64_t(std::ceil(capacity_factor * double(t * k) / double(e)));
}

template <typename T>
Router<T>::Router(const Ops<T>& ops, ParamStore& store, const ModelConfig& cfg, const std::string& prefix)
    : ops_(ops),
      be_(ops.backend()),
      n_experts_(cfg.moe.n_experts),
      top_k_(cfg.moe.top_k),
      d_(cfg.d_model),
      cfg_(cfg.moe),
      score_func_(parse_score_func(cfg.moe.score_func)),
      aux_kind_(parse_aux_loss(cfg.moe.aux_loss)),
      group_score_(parse_group_score(cfg.moe.group_score)),
      n_group_(cfg.moe.n_group),
      topk_group_(cfg.moe.topk_group) {
    gate_ = Linear<T>(ops, store.add(prefix + "weight", {n_experts_, d_}, ParamKind::kRouter, cfg.init_std), d_,
                      n_experts_);
    bias_E_ = Tensor::zeros({n_experts_}, DType::kF32, be_.allocator());
    store.add_buffer(prefix + "bias", bias_E_);  // "layers.L.moe.router.bias": read and written by HF import/export
    num_kept_E_.assign(size_t(n_experts_), 0);
    num_selected_E_.assign(size_t(n_experts_), 0);
    stats_.reset(n_experts_);
}

template <typename T>
std::vector<float> Router<T>::expert_bias_host() const {
    std::vector<float> out(static_cast<size_t>(n_experts_));
    be_.copy_to_host(out.data(), bias_E_.raw_data(), out.size() * sizeof(float));
    return out;
}

template <typename T>
void Router<T>::set_expert_bias(const std::vector<float>& bias_E) {
    FRUGAL_CHECK(int64_t(bias_E.size()) == n_experts_, "expert bias of ", bias_E.size(), " entries for ", n_experts_,
                 " experts");
    be_.copy_to_device(bias_E_.raw_data(), bias_E.data(), bias_E.size() * sizeof(float));
}

template <typename T>
void Router<T>::limit_nodes(int64_t nodes) {
    const int64_t m = cfg_.max_nodes_per_token;
    if (m <= 0 || nodes <= 1) return;
    FRUGAL_CONFIG_CHECK(nodes <= MoEConfig::kMaxGroups && n_experts_ % nodes == 0, "moe.max_nodes_per_token: the ",
                        n_experts_, " experts do not split evenly over the ", nodes,
                        " nodes of an expert-parallel group");
    n_group_ = nodes;
    topk_group_ = std::min(m, nodes);
    group_score_ = top_k_ / m == 1 ? GroupScore::kMax : GroupScore::kTop2Sum;
    FRUGAL_CONFIG_CHECK(group_score_ == GroupScore::kMax || n_experts_ / nodes >= 2,
                        "moe.max_nodes_per_token: a node's "
                        "score is the sum of two of its experts' and each of the ",
                        nodes, " nodes holds one expert");
}

template <typename T>
void Router<T>::forward(const T* x_TD, int64_t b, int64_t s) {
    const int64_t t = b * s, e = n_experts_, k = top_k_;
    b_ = b;
    s_ = s;
    T* logits = ensure<T>(ops_, logits_TE_, t * e);
    T* scores = ensure<T>(ops_, scores_TE_, t * e);
    T* lse = ensure<T>(ops_, lse_T_, t);
    double* keys = ensure<double>(be_, keys_TE_, t * e);
    int32_t* selected = ensure<int32_t>(be_, selected_TK_, t * k);
    T* weight = ensure<T>(ops_, weight_TK_, t * k);
    int32_t* expert = ensure<int32_t>(be_, expert_TK_, t * k);

    gate_.forward(logits, x_TD, t);
    ops_.router_scores_forward(scores, lse, logits, score_func_, t, e);
    ops_.router_select_forward(selected, keys, scores, bias_E_.data<float>(), t, e, k, n_group_, topk_group_,
                               group_score_);
    ops_.router_weights_forward(weight, scores, selected, cfg_.norm_topk_prob, cfg_.routed_scaling_factor, t, e, k);

    const int64_t dropped = be_.router_capacity(expert, num_kept_E_.data(), num_selected_E_.data(), selected,
                                                router_capacity(cfg_.capacity_factor, t, k, e), t, k, e);
    for (int64_t j = 0; j < e; ++j) {
        stats_.selected_per_expert[size_t(j)] += num_selected_E_[size_t(j)];
        stats_.tokens_per_expert[size_t(j)] += num_kept_E_[size_t(j)];
    }
    stats_.dropped += dropped;
    stats_.assignments += t * k;
    stats_.micro_batches += 1;

    aux_loss_ = 0;
    if (has_aux_loss()) {
        double* score_sum = score_func_ == ScoreFunc::kSigmoid ? ensure<double>(be_, score_sum_T_, t) : nullptr;
        aux_loss_ = ops_.router_aux_loss_forward(score_sum, scores, selected, score_func_, cfg_.aux_loss_coef,
                                                 aux_groups(), t, e, k);
    }
    z_loss_ = 0;
    if (cfg_.z_loss_coef > 0) z_loss_ = ops_.router_z_loss_forward(lse, cfg_.z_loss_coef, t);
    stats_.aux_loss += aux_loss_;
    stats_.z_loss += z_loss_;
}

template <typename T>
void Router<T>::backward(T* dx_TD, const T* d_weight_TK, const T* x_TD, T aux_scale) {
    const int64_t t = b_ * s_, e = n_experts_, k = top_k_;
    T* d_scores = ensure_zero<T>(ops_, d_scores_TE_, t * e);
    T* d_logits = ensure<T>(ops_, d_logits_TE_, t * e);
    const T* scores = scores_TE();
    const int32_t* selected = selected_TK();

    ops_.router_weights_backward(d_scores, d_weight_TK, scores, selected, cfg_.norm_topk_prob,
                                 cfg_.routed_scaling_factor, t, e, k);
    if (has_aux_loss())
        ops_.router_aux_loss_backward(d_scores, ensure<T>(ops_, d_aux_GE_, aux_groups() * e), scores, selected,
                                      score_func_, cfg_.aux_loss_coef, aux_scale, aux_groups(), t, e, k);
    ops_.router_scores_backward(d_logits, d_scores, scores, score_func_, t, e);
    if (cfg_.z_loss_coef > 0)
        ops_.router_z_loss_backward(d_logits, logits_TE_.template data<T>(), lse_T_.template data<T>(),
                                    cfg_.z_loss_coef, aux_scale, t, e);
    gate_.backward(dx_TD, d_logits, x_TD, t);
}

template <typename T>
void Router<T>::update_bias(const std::vector<int64_t>& selected_per_expert) {
    if (cfg_.bias_update_rate <= 0) return;
    be_.router_bias_update(bias_E_.data<float>(), selected_per_expert.data(), cfg_.bias_update_rate, n_experts_);
}

template class Router<float>;
template class Router<double>;

}  // namespace frugal::model
