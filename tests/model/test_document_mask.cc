// Document masking of packed windows (data.document_mask): a window holding two documents gives every token the
// loss, and every parameter the gradient, that the documents get as separate sequences, which is the definition
// (no attention across the boundary, rotary positions restarting at 0). In double, to 1e-10.
#include <gtest/gtest.h>

#include "data/shard.h"
#include "model/transformer.h"
#include "tests/util.h"

namespace frugal {
namespace {

model::ModelConfig config() {
    model::ModelConfig c;
    c.vocab_size = 23;
    c.d_model = 16;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.qk_norm = true;
    c.d_ff = 24;
    c.dense_layers = 1;
    c.max_seq_len = 16;
    c.init_std = 0.2;
    c.moe.n_experts = 4;
    c.moe.top_k = 2;
    c.moe.d_expert = 8;
    c.moe.n_shared_experts = 1;
    c.moe.aux_loss = "none";  // a batch statistic: it would couple the documents
    return c;
}

TEST(DocumentMask, PackedDocumentsEqualSeparateSequences) {
    const model::ModelConfig cfg = config();
    model::Transformer<double> net(cfg);
    net.init(9);
    const int32_t eod = 22;
    // Document A (6 tokens + end-of-document) then document B (6 tokens): one window of 13.
    std::vector<int32_t> tokens = {3, 9, 14, 1, 7, 19, eod, 5, 5, 12, 2, 17, 8};
    std::vector<int32_t> targets = {9, 14, 1, 7, 19, eod, 5, 5, 12, 2, 17, 8, 4};
    const int64_t s = int64_t(tokens.size()), split = 7;
    std::vector<int32_t> starts(tokens.size());
    data::document_starts(starts.data(), tokens.data(), 1, s, eod);
    for (int64_t i = 0; i < s; ++i) {
        ASSERT_EQ(starts[size_t(i)], i < split ? 0 : split) << i;
    }

    net.params().zero_grad();
    net.forward(tokens.data(), targets.data(), 1, s, starts.data());
    const std::vector<double> packed(net.token_losses(), net.token_losses() + s);
    net.backward(1.0, 0.0);
    std::vector<double> packed_grads(net.params().flat_grads().data<double>(),
                                     net.params().flat_grads().data<double>() + net.params().numel());

    net.params().zero_grad();
    std::vector<double> separate;
    for (auto [begin, len] : {std::pair<int64_t, int64_t>{0, split}, {split, s - split}}) {
        net.forward(tokens.data() + begin, targets.data() + begin, 1, len);
        separate.insert(separate.end(), net.token_losses(), net.token_losses() + len);
        net.backward(1.0, 0.0);
    }
    const double* separate_grads = net.params().flat_grads().data<double>();
    for (int64_t i = 0; i < s; ++i) EXPECT_NEAR(packed[size_t(i)], separate[size_t(i)], 1e-10) << "token " << i;
    double max_g = 0, max_err = 0;
    for (int64_t i = 0; i < net.params().numel(); ++i) {
        max_g = std::max(max_g, std::fabs(separate_grads[i]));
        max_err = std::max(max_err, std::fabs(packed_grads[size_t(i)] - separate_grads[i]));
    }
    EXPECT_LT(max_err, 1e-10 * max_g);

    // Without the mask, document B sees document A: its losses change (the comparison above can fail).
    net.forward(tokens.data(), targets.data(), 1, s);
    double diff = 0;
    for (int64_t i = split; i < s; ++i) diff = std::max(diff, std::fabs(net.token_losses()[i] - separate[size_t(i)]));
    EXPECT_GT(diff, 1e-4);
}

TEST(DocumentMask, StartsRestartAfterEveryEndOfDocumentInEachWindow) {
    const int32_t e = 9;
    std::vector<int32_t> tokens = {1, e, 2, 3, e, e, 4, /* window 2 */ 5, 6, e, 7, 8, 1, 2};
    std::vector<int32_t> starts(tokens.size());
    data::document_starts(starts.data(), tokens.data(), 2, 7, e);
    EXPECT_EQ(starts, (std::vector<int32_t>{0, 0, 2, 2, 2, 5, 6, 0, 0, 0, 3, 3, 3, 3}));
}

}  // namespace
}  // namespace frugal
