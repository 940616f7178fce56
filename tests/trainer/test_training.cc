// End-to-end training on CPU: bitwise determinism, gradient accumulation equivalence, and learning on the demo
// corpus.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <map>

#include "data/shard.h"
#include "tests/util.h"
#include "trainer/trainer.h"

namespace frugal {
namespace {

namespace fs = std::filesystem;

fs::path corpus_dir() { return test::test_corpus(); }

trainer::TrainConfig small_config(const std::string& name) {
    trainer::TrainConfig cfg;
    cfg.run.out_dir = (fs::temp_directory_path() / ("frugal_run_" + name + std::to_string(::getpid()))).string();
    cfg.run.log_every = 1000;
    cfg.model.d_model = 64;
    cfg.model.n_layers = 2;
    cfg.model.n_heads = 4;
    cfg.model.n_kv_heads = 2;
    cfg.model.qk_norm = true;
    cfg.model.d_ff = 128;
    cfg.model.dense_layers = 1;
    cfg.model.max_seq_len = 64;
    cfg.model.moe.n_experts = 4;
    cfg.model.moe.top_k = 2;
    cfg.model.moe.d_expert = 64;
    cfg.model.moe.bias_update_rate = 0.001;
    cfg.train.seq_len = 64;
    cfg.train.global_batch = 8;
    cfg.train.micro_batch = 4;
    cfg.train.steps = 20;
    cfg.train.eval_every = 10;
    cfg.train.eval_batches = 2;
    cfg.optim.warmup_steps = 5;
    cfg.data.dir = corpus_dir().string();
    return cfg;
}

std::vector<double> losses(const trainer::TrainResult& r) {
    std::vector<double> out;
    for (const auto& s : r.history) out.push_back(s.loss);
    return out;
}

TEST(Training, TwentyStepsAreBitwiseDeterministic) {
    ASSERT_FALSE(corpus_dir().empty()) << "the fortunes package is missing: run scripts/setup.sh";
    trainer::TrainConfig a = small_config("det_a"), b = small_config("det_b");
    auto ra = trainer::train(a);
    auto rb = trainer::train(b);
    ASSERT_EQ(ra.history.size(), 20u);
    for (size_t i = 0; i < ra.history.size(); ++i) {
        EXPECT_EQ(std::memcmp(&ra.history[i].loss, &rb.history[i].loss, sizeof(double)), 0)
            << "step " << i + 1 << ": " << ra.history[i].loss << " vs " << rb.history[i].loss;
        EXPECT_EQ(ra.history[i].grad_norm, rb.history[i].grad_norm) << "step " << i + 1;
    }
    // The run wrote its resolved config and one metrics line per logged step, with the required fields.
    EXPECT_TRUE(fs::exists(fs::path(a.run.out_dir) / "config.yaml"));
    std::ifstream m(fs::path(a.run.out_dir) / "metrics.jsonl");
    std::string line, last;
    int lines = 0;
    while (std::getline(m, line)) {
        ++lines;
        last = line;
    }
    EXPECT_GE(lines, 2);
    for (const char* key :
         {"\"step\": 20", "\"loss\":", "\"lr\":", "\"grad_norm\":", "\"tokens_per_s\":", "\"val_loss\":",
          "\"moe\": [{\"layer\": 1, \"tokens_per_expert\": [", "\"imbalance\":", "\"z_loss\":"})
        EXPECT_NE(last.find(key), std::string::npos) << key << " missing in " << last;
    fs::remove_all(a.run.out_dir);
    fs::remove_all(b.run.out_dir);
}

TEST(Training, AccumulationMatchesOneLargeMicroBatch) {
    ASSERT_FALSE(corpus_dir().empty());
    // 4 micro-batches of 2 and 1 micro-batch of 8 see the same samples; with the aux losses off (they are
    // defined per micro-batch) the losses agree to float tolerance.
    trainer::TrainConfig a = small_config("acc_a"), b = small_config("acc_b");
    for (auto* c : {&a, &b}) {
        c->model.moe.aux_loss = "none";
        c->model.moe.bias_update_rate = 0;
        c->train.steps = 5;
    }
    a.train.micro_batch = 2;
    b.train.micro_batch = 8;
    auto la = losses(trainer::train(a)), lb = losses(trainer::train(b));
    for (size_t i = 0; i < la.size(); ++i) EXPECT_NEAR(la[i], lb[i], 2e-4 * std::fabs(lb[i])) << "step " << i + 1;
    fs::remove_all(a.run.out_dir);
    fs::remove_all(b.run.out_dir);
}

TEST(Training, LossFallsOnTheDemoCorpus) {
    ASSERT_FALSE(corpus_dir().empty());
    trainer::TrainConfig cfg = small_config("learn");
    cfg.train.steps = 60;
    cfg.train.eval_every = 0;
    auto r = trainer::train(cfg);
    // Byte-level start: ln(257) = 5.55 nats. After 60 small steps the model has learned the byte statistics and
    // common words of English text.
    EXPECT_GT(r.first_loss, 5.0);
    EXPECT_LT(r.final_val_loss, 0.6 * r.first_loss) << "first " << r.first_loss << " final val " << r.final_val_loss;
    EXPECT_EQ(r.skipped_steps, 0);
    fs::remove_all(cfg.run.out_dir);
}

TEST(Training, DocumentMaskTrainsAndChangesOnlyAttentionAcrossDocuments) {
    ASSERT_FALSE(corpus_dir().empty());
    trainer::TrainConfig plain = small_config("plain"), masked = small_config("masked");
    plain.train.steps = masked.train.steps = 10;
    masked.data.document_mask = true;
    auto rp = trainer::train(plain);
    auto rm = trainer::train(masked);
    ASSERT_EQ(rm.history.size(), 10u);
    EXPECT_LT(rm.history.back().loss, rm.history.front().loss - 0.5);
    // Fortunes are short: most windows hold several documents, so masking changes the first step's loss.
    EXPECT_NE(rp.history.front().loss, rm.history.front().loss);
    EXPECT_NEAR(rp.history.front().loss, rm.history.front().loss, 0.05) << "same data, same initial model";
    fs::remove_all(plain.run.out_dir);
    fs::remove_all(masked.run.out_dir);
    // Shards that do not record their end-of-document token are refused by name before anything runs.
    const fs::path old = test::temp_dir("old_shards");
    std::vector<int32_t> toks(4000, 65);
    for (const char* f : {"train.bin", "val.bin"}) data::write_shard((old / f).string(), toks, 1, 257);
    masked.data.dir = old.string();
    try {
        trainer::train(masked);
        ADD_FAILURE() << "document_mask over shards without an end-of-document token was accepted";
    } catch (const ConfigError& e) {
        EXPECT_NE(std::string(e.what()).find("re-run `frugal prepare-data`"), std::string::npos) << e.what();
    }
    fs::remove_all(old);
}

TEST(Training, NonFiniteLossStopsWhenConfigured) {
    ASSERT_FALSE(corpus_dir().empty());
    trainer::TrainConfig cfg = small_config("nan");
    cfg.train.steps = 3;
    cfg.optim.lr = 1e30;  // the first update destroys the weights
    cfg.optim.min_lr = 1e30;
    cfg.optim.warmup_steps = 0;
    cfg.optim.grad_clip = 0;
    cfg.train.nonfinite = "stop";
    EXPECT_THROW(trainer::train(cfg), Error);
    // Skipping keeps going, and a run that ends on skipped steps is a failure, not "done".
    cfg.train.nonfinite = "skip";
    int64_t skipped = 0;
    try {
        trainer::train(cfg, [&](const trainer::StepMetrics& m) { skipped += m.skipped; });
        ADD_FAILURE() << "a run that ends on non-finite steps must fail";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("step(s) in a row whose loss or gradient norm was not finite"),
                  std::string::npos)
            << e.what();
    }
    EXPECT_EQ(skipped, 2);
    fs::remove_all(cfg.run.out_dir);
}

}  // namespace
}  // namespace frugal

#include "checkpoint/checkpoint.h"
#include "model/transformer.h"
#include "trainer/tensorboard.h"

namespace frugal {
namespace {

TEST(Training, FrozenKindsStayAtTheirInitialValues) {
    ASSERT_FALSE(corpus_dir().empty());
    trainer::TrainConfig cfg = small_config("freeze");
    cfg.train.steps = 4;
    cfg.train.freeze = {"router", "embedding"};
    cfg.checkpoint.every = 4;
    trainer::train(cfg);
    model::Transformer<float> init(cfg.model);
    init.init(uint64_t(cfg.run.seed));
    model::Transformer<float> trained(cfg.model);
    std::vector<checkpoint::TensorSlot> slots = checkpoint::param_slots(trained.params());
    checkpoint::TrainingState st;
    checkpoint::load((fs::path(cfg.run.out_dir) / "checkpoints" / "step_00000004.h5").string(), slots, st);
    for (model::Param* p : trained.params().params()) {
        const model::Param* q = init.params().find(p->name);
        const bool same = std::memcmp(p->value.raw_data(), q->value.raw_data(), p->value.nbytes()) == 0;
        const bool frozen = p->kind == model::ParamKind::kRouter || p->kind == model::ParamKind::kEmbedding;
        EXPECT_EQ(same, frozen) << p->name;
    }
    fs::remove_all(cfg.run.out_dir);
}

// Every progress line is also a set of TensorBoard scalars in run.out_dir/tb, with the step's own figures.
TEST(Training, EveryLogLineWritesItsFiguresAsTensorBoardScalars) {
    ASSERT_FALSE(corpus_dir().empty());
    trainer::TrainConfig cfg = small_config("tb");
    cfg.train.steps = 6;
    cfg.run.log_every = 2;
    cfg.train.eval_every = 4;
    std::vector<trainer::StepMetrics> steps;
    trainer::train(cfg, [&](const trainer::StepMetrics& m) { steps.push_back(m); });
    const std::vector<trainer::ScalarEvent> events =
        trainer::read_tensorboard_scalars((fs::path(cfg.run.out_dir) / "tb").string());
    std::map<std::string, std::map<int64_t, float>> by_tag;
    for (const auto& e : events) by_tag[e.tag][e.step] = e.value;
    for (const char* tag : {"train/loss", "train/aux_loss", "train/lr", "train/grad_norm", "perf/tokens_per_s",
                            "cost/usd_so_far", "train/skipped_steps", "moe/layer_1/imbalance",
                            "moe/layer_1/dropped_tokens"}) {
        ASSERT_TRUE(by_tag.count(tag)) << tag << " was not written";
        std::vector<int64_t> logged;
        for (const auto& [step, value] : by_tag[tag]) logged.push_back(step);
        EXPECT_EQ(logged, (std::vector<int64_t>{1, 2, 4, 6})) << tag;
    }
    for (int64_t step : {1, 2, 4, 6}) {
        const trainer::StepMetrics& m = steps[size_t(step - 1)];
        EXPECT_EQ(by_tag["train/loss"][step], float(m.loss)) << "step " << step;
        EXPECT_EQ(by_tag["train/lr"][step], float(m.lr)) << "step " << step;
        EXPECT_EQ(by_tag["train/grad_norm"][step], float(m.grad_norm)) << "step " << step;
        EXPECT_EQ(by_tag["moe/layer_1/imbalance"][step] >= 1.0f, true) << "step " << step;
        EXPECT_EQ(by_tag["train/skipped_steps"][step], 0.0f);
    }
    // Validation ran at steps 4 and 6 (the last): only those carry val/loss.
    ASSERT_EQ(by_tag["val/loss"].size(), 2u);
    EXPECT_EQ(by_tag["val/loss"][4], float(steps[3].val_loss));
    EXPECT_EQ(by_tag["val/loss"][6], float(steps[5].val_loss));
    EXPECT_GT(by_tag["cost/usd_so_far"][6], by_tag["cost/usd_so_far"][1]);
    fs::remove_all(cfg.run.out_dir);
}

}  // namespace
}  // namespace frugal
