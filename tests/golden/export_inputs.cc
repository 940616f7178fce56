// Writes the inputs of the PyTorch golden comparison: for every case of golden_models.h, Frugal's initialized
// weights (double), the expert biases, the batch and the configuration scalars. See make_golden.py.
#include <cstdio>

#include "model/transformer.h"
#include "tests/golden/golden_models.h"
#include "tests/golden/tensor_file.h"

using namespace frugal;

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: golden_export OUT.bin\n");
        return 2;
    }
    golden::TensorMap out;
    for (const auto& c : golden::golden_cases()) {
        model::Transformer<double> net(c.cfg);
        net.init(c.seed);
        for (model::Param* p : net.params().params()) {
            const double* v = p->value.data<double>();
            out[c.name + "/" + p->name] = {p->shape, std::vector<double>(v, v + p->value.numel())};
        }
        int64_t moe_idx = 0;
        for (int64_t l = 0; l < c.cfg.n_layers; ++l) {
            if (!c.cfg.is_moe_layer(l)) continue;
            auto bias = golden::golden_bias(c, l);
            out[c.name + "/layers." + std::to_string(l) + ".moe.expert_bias"] = {
                {c.cfg.moe.n_experts}, std::vector<double>(bias.begin(), bias.end())};
            ++moe_idx;
        }
        std::vector<int32_t> tokens, targets;
        golden::golden_batch(c, tokens, targets);
        out[c.name + "/tokens"] = {{c.batch, c.seq}, std::vector<double>(tokens.begin(), tokens.end())};
        out[c.name + "/targets"] = {{c.batch, c.seq}, std::vector<double>(targets.begin(), targets.end())};
        const auto& m = c.cfg;
        auto scalar = [&](const std::string& k, double v) { out[c.name + "/cfg." + k] = {{1}, {v}}; };
        scalar("vocab_size", double(m.vocab_size));
        scalar("d_model", double(m.d_model));
        scalar("n_layers", double(m.n_layers));
        scalar("dense_layers", double(m.dense_layers));
        scalar("n_heads", double(m.n_heads));
        scalar("n_kv_heads", double(m.kv_heads()));
        scalar("head_dim", double(m.hd()));
        scalar("qk_norm", m.qk_norm ? 1 : 0);
        scalar("tie_embeddings", m.tie_embeddings ? 1 : 0);
        scalar("rope_theta", m.rope_theta);
        scalar("norm_eps", m.norm_eps);
        scalar("n_experts", double(m.moe.n_experts));
        scalar("top_k", double(m.moe.top_k));
        scalar("sigmoid", m.moe.score_func == "sigmoid" ? 1 : 0);
        scalar("norm_topk_prob", m.moe.norm_topk_prob ? 1 : 0);
        scalar("routed_scaling_factor", m.moe.routed_scaling_factor);
        scalar("aux_seq", m.moe.aux_loss == "seq" ? 1 : 0);
        scalar("aux_loss_coef", m.moe.aux_loss == "none" ? 0.0 : m.moe.aux_loss_coef);
        scalar("z_loss_coef", m.moe.z_loss_coef);
    }
    golden::write_tensor_file(argv[1], out);
    std::printf("wrote %zu tensors to %s\n", out.size(), argv[1]);
    return 0;
}
