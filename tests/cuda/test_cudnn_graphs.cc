// cuDNN attention graphs (backend/cuda/attention_cudnn.h). Without a GPU: the forward and backward graphs of the
// demo shape, of a large shape and of multi-head latent attention's shapes (query/key heads wider than the value
// heads: DeepSeek-V3's 192/128 and a small 24/16) validate for Hopper (sm 90) and Blackwell (sm 100), causal and
// document masked; unsupported shapes are refused naming both head dims, with cuDNN's reason where cuDNN refuses;
// the packed-document description is exact for both widths; the FP64 oracle of the GPU tests equals
// backend/cpu/reference's attention. With a GPU: the forward and backward equal that oracle on the same BF16-rounded
// inputs within BF16 tolerances, and a second step builds no graph.
//
// Legend: B batch, S sequence, Hq query heads, Hkv key/value heads, Dqk query/key head dim, Dv value head dim,
// N = B*S tokens.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "backend/cpu/reference/ops.h"
#include "backend/cuda/attention_cudnn.h"
#include "backend/cuda/check.h"
#include "core/bf16.h"
#include "core/error.h"
#include "tests/util.h"

namespace frugal {
namespace {

using cuda::AttentionDirection;
using cuda::AttentionGraphCache;
using cuda::AttentionKey;
using cuda::build_attention_graph;
using cuda::causal_attention_key;
using cuda::default_attention_scale;
using cuda::document_attention_key;
using cuda::DocumentPacking;
using cuda::pack_documents;

struct Shape {
    int64_t b, s, hq, hkv, hd_qk, hd_v;
};
constexpr Shape kDemo{4, 128, 4, 2, 64, 64};
// Multi-head latent attention: every query head has its own key/value head (the latent is expanded per head).
constexpr Shape kDeepseek{2, 256, 16, 16, 192, 128};
constexpr Shape kTinyMla{2, 64, 4, 4, 24, 16};

// The message of the frugal::Error that f throws ("" and a test failure when it throws none).
template <typename F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    ADD_FAILURE() << "no frugal::Error";
    return "";
}

void expect_validates(const Shape& d, int sm, bool masked) {
    std::vector<int32_t> start_BS(size_t(d.b * d.s), 0);  // one document per window
    const DocumentPacking packing = pack_documents(start_BS.data(), d.b, d.s, d.hq, d.hkv, d.hd_qk, d.hd_v);
    for (auto direction : {AttentionDirection::kForward, AttentionDirection::kBackward}) {
        const float scale = default_attention_scale(d.hd_qk);
        const AttentionKey key =
            masked ? document_attention_key(d.b, d.s, d.hq, d.hkv, d.hd_qk, d.hd_v, scale, packing, direction)
                   : causal_attention_key(d.b, d.s, d.hq, d.hkv, d.hd_qk, d.hd_v, scale, direction);
        try {
            auto graph = build_attention_graph(key, sm);
            EXPECT_EQ(graph->key().direction, direction);
            EXPECT_EQ(graph->workspace_bytes(), -1) << "a graph that is only validated has no plan yet";
        } catch (const Error& e) {
            ADD_FAILURE() << "sm " << sm << ": " << e.what();
        }
    }
}

TEST(CudnnGraphs, DemoShapeForwardAndBackwardValidateForHopper) { expect_validates(kDemo, 90, false); }

TEST(CudnnGraphs, LargeShapeForwardAndBackwardValidateForHopperWithAndWithoutGroupedHeads) {
    expect_validates({1, 4096, 16, 16, 128, 128}, 90, false);
    expect_validates({1, 4096, 16, 4, 128, 128}, 90, false);
}

TEST(CudnnGraphs, DocumentMaskedGraphsValidateForHopper) {
    expect_validates(kDemo, 90, true);
    expect_validates({1, 4096, 16, 4, 128, 128}, 90, true);
}

TEST(CudnnGraphs, DemoShapeGraphsValidateForBlackwell) {
    expect_validates(kDemo, 100, false);
    expect_validates(kDemo, 100, true);
}

TEST(CudnnGraphs, LatentAttentionGraphsWithWiderQueryKeyThanValueHeadsValidateForHopper) {
    for (const Shape& d : {kDeepseek, kTinyMla})
        for (bool masked : {false, true}) expect_validates(d, 90, masked);
}

TEST(CudnnGraphs, DeepseekHeadDimsValidateForBlackwell) {
    expect_validates(kDeepseek, 100, false);
    expect_validates(kDeepseek, 100, true);
}

TEST(CudnnGraphs, ValuesWiderThanQueriesAndKeysValidateForHopper) {
    expect_validates({2, 64, 4, 2, 16, 32}, 90, false);
}

TEST(CudnnGraphs, AHeadDimOfSevenFailsValidateWithCudnnsReason) {
    const AttentionKey key =
        causal_attention_key(4, 128, 4, 2, 7, 7, default_attention_scale(7), AttentionDirection::kForward);
    const std::string msg = error_of([&] { build_attention_graph(key, 90); });
    test::expect_has(msg, {"graph.validate", "hd_qk 7", "hd_v 7", "multiple of 8"});
}

TEST(CudnnGraphs, AValueHeadDimNotAMultipleOfEightFailsValidateNamingBothDims) {
    const AttentionKey key =
        causal_attention_key(2, 64, 4, 4, 24, 12, default_attention_scale(24), AttentionDirection::kBackward);
    test::expect_has(error_of([&] { build_attention_graph(key, 90); }),
                     {"graph.validate", "hd_qk 24", "hd_v 12", "multiple of 8"});
}

TEST(CudnnGraphs, HopperRefusesHeadDimsAbove256NamingBothDimsAndTheFix) {
    for (auto direction : {AttentionDirection::kForward, AttentionDirection::kBackward}) {
        const AttentionKey key = causal_attention_key(2, 64, 4, 4, 264, 128, default_attention_scale(264), direction);
        test::expect_has(error_of([&] { build_attention_graph(key, 90); }),
                         {"Hopper (sm 90)", "up to 256", "hd_qk 264 and hd_v 128", "model.v_head_dim"});
    }
}

TEST(CudnnGraphs, BlackwellRefusesUnequalHeadDimsOtherThanDeepseeksNamingBothDimsAndTheFix) {
    for (auto direction : {AttentionDirection::kForward, AttentionDirection::kBackward}) {
        const AttentionKey key = causal_attention_key(2, 64, 4, 4, 256, 128, default_attention_scale(256), direction);
        test::expect_has(error_of([&] { build_attention_graph(key, 100); }),
                         {"Blackwell (sm 100)", "192/128", "hd_qk 256 and hd_v 128", "model.v_head_dim"});
    }
    // Both at most 128 is fine there.
    expect_validates(kTinyMla, 100, false);
}

TEST(CudnnGraphs, QueryHeadsNotAMultipleOfKeyValueHeadsAreRefusedBeforeCudnn) {
    const AttentionKey key =
        causal_attention_key(4, 128, 6, 4, 64, 64, default_attention_scale(64), AttentionDirection::kBackward);
    const std::string msg = error_of([&] { build_attention_graph(key, 90); });
    test::expect_has(msg, {"query heads (6)", "key/value heads (4)", "model.num_kv_heads"});
}

TEST(CudnnGraphs, ValidationHonoursTheTargetArchitectureAndRefusesTuring) {
    const AttentionKey key = causal_attention_key(4, 128, 4, 2, 64, 64, 0.125f, AttentionDirection::kForward);
    test::expect_has(error_of([&] { build_attention_graph(key, 75); }), {"graph.validate", "SM80"});
}

TEST(CudnnGraphs, ADocumentMaskedBackwardCudnnCannotRunIsRefusedNamingTheConfigKeyAndTheFix) {
    // cuDNN has no deterministic packed-sequence backward on SM 8.x (Ampere/Ada).
    std::vector<int32_t> start_BS(4 * 128, 0);
    const DocumentPacking packing = pack_documents(start_BS.data(), 4, 128, 4, 2, 64, 64);
    const AttentionKey key =
        document_attention_key(4, 128, 4, 2, 64, 64, 0.125f, packing, AttentionDirection::kBackward);
    test::expect_has(error_of([&] { build_attention_graph(key, 86); }),
                     {"data.document_mask is not supported by the CUDA attention", "graph.validate",
                      "set data.document_mask to false"});
}

TEST(CudnnGraphs, TheDefaultScaleIsOneOverTheSquareRootOfTheHeadDim) {
    EXPECT_FLOAT_EQ(default_attention_scale(64), 0.125f);
    EXPECT_FLOAT_EQ(default_attention_scale(128), float(1.0 / std::sqrt(128.0)));
}

TEST(DocumentPacking, ContiguousDocumentsBecomeOneSlotEachWithElementOffsets) {
    // Window 0: documents [0, 2) and [2, 4); window 1: [0, 1) and [1, 4). hq 3, hkv 1, Dqk = Dv = 8.
    const std::vector<int32_t> start_BS = {0, 0, 2, 2, 0, 1, 1, 1};
    const DocumentPacking p = pack_documents(start_BS.data(), 2, 4, 3, 1, 8, 8);
    EXPECT_EQ(p.num_docs, 4);
    ASSERT_EQ(p.num_doc_slots, 4);
    ASSERT_EQ(p.q_offset_at, 4);
    ASSERT_EQ(p.k_offset_at, 12);
    ASSERT_EQ(p.v_offset_at, 20);
    ASSERT_EQ(p.o_offset_at, 28);
    ASSERT_EQ(p.lse_offset_at, 36);
    ASSERT_EQ(p.index_I.size(), 44u);
    const std::vector<int32_t> first_token = {0, 2, 4, 5, 8};
    const std::vector<int32_t> seq_len = {2, 2, 1, 3};
    for (size_t slot = 0; slot < 5; ++slot) {
        if (slot < 4) {
            EXPECT_EQ(p.index_I[slot], seq_len[slot]) << "slot " << slot;
        }
        EXPECT_EQ(p.index_I[4 + slot], first_token[slot] * 3 * 8) << "q offset of slot " << slot;
        EXPECT_EQ(p.index_I[12 + slot], first_token[slot] * 1 * 8) << "k offset of slot " << slot;
        EXPECT_EQ(p.index_I[20 + slot], first_token[slot] * 1 * 8) << "v offset of slot " << slot;
        EXPECT_EQ(p.index_I[28 + slot], first_token[slot] * 3 * 8) << "o offset of slot " << slot;
        EXPECT_EQ(p.index_I[36 + slot], first_token[slot] * 3) << "lse offset of slot " << slot;
    }
}

TEST(DocumentPacking, QueryKeyAndValueOutputOffsetsCountTheirOwnHeadWidths) {
    // Dqk 24, Dv 16, hq 4, hkv 2; documents [0, 3) and [3, 5) of one window, 2 slots.
    const std::vector<int32_t> start_BS = {0, 0, 0, 3, 3};
    const DocumentPacking p = pack_documents(start_BS.data(), 1, 5, 4, 2, 24, 16);
    ASSERT_EQ(p.num_doc_slots, 2);
    const std::vector<int32_t> first_token = {0, 3, 5};
    for (size_t slot = 0; slot < 3; ++slot) {
        const int32_t t = first_token[slot];
        EXPECT_EQ(p.index_I[size_t(p.q_offset_at) + slot], t * 4 * 24) << "q offset of slot " << slot;
        EXPECT_EQ(p.index_I[size_t(p.k_offset_at) + slot], t * 2 * 24) << "k offset of slot " << slot;
        EXPECT_EQ(p.index_I[size_t(p.v_offset_at) + slot], t * 2 * 16) << "v offset of slot " << slot;
        EXPECT_EQ(p.index_I[size_t(p.o_offset_at) + slot], t * 4 * 16) << "o offset of slot " << slot;
        EXPECT_EQ(p.index_I[size_t(p.lse_offset_at) + slot], t * 4) << "lse offset of slot " << slot;
    }
    const AttentionKey key = document_attention_key(1, 5, 4, 2, 24, 16, 0.2f, p, AttentionDirection::kBackward);
    EXPECT_EQ(key.hd_qk, 24);
    EXPECT_EQ(key.hd_v, 16);
}

TEST(DocumentPacking, OffsetsPastInt32AreRefusedForTheWiderOfTheTwoHeadDims) {
    // 2^17 tokens of 64 heads: 2^26 elements at width 8 fit int32, 2^31 at width 256 do not.
    const int64_t n = int64_t(1) << 17;
    const std::vector<int32_t> start_BS(size_t(n), 0);
    EXPECT_EQ(pack_documents(start_BS.data(), 1, n, 64, 64, 8, 8).num_docs, 1);
    test::expect_has(error_of([&] { pack_documents(start_BS.data(), 1, n, 64, 64, 8, 256); }),
                     {"data.document_mask", "heads of up to 256", "train.seq_len"});
}

TEST(DocumentPacking, SlotsRoundUpToAPowerOfTwoAndUnusedOnesAreEmptyAtTheEnd) {
    // Three windows of one document each: 4 slots, the last one empty and pointing past the 3*5 tokens.
    const std::vector<int32_t> start_BS(15, 0);
    const DocumentPacking p = pack_documents(start_BS.data(), 3, 5, 2, 2, 16, 16);
    EXPECT_EQ(p.num_docs, 3);
    ASSERT_EQ(p.num_doc_slots, 4);
    EXPECT_EQ(p.index_I[3], 0);
    EXPECT_EQ(p.index_I[size_t(p.q_offset_at + 3)], 15 * 2 * 16);
    EXPECT_EQ(p.index_I[size_t(p.q_offset_at + 4)], 15 * 2 * 16);
    EXPECT_EQ(p.index_I[size_t(p.lse_offset_at + 4)], 15 * 2);
    const AttentionKey key = document_attention_key(3, 5, 2, 2, 16, 16, 0.25f, p, AttentionDirection::kForward);
    EXPECT_EQ(key.num_doc_slots, 4);
    EXPECT_TRUE(key.is_document_masked);
}

TEST(DocumentPacking, AStartThatNeitherBeginsNorContinuesADocumentIsRefusedNamingTheConfigKey) {
    // Token 2 starts at 1, but token 1's document starts at 0: not a contiguous document.
    const std::vector<int32_t> start_BS = {0, 0, 1, 1};
    const std::string msg = error_of([&] { pack_documents(start_BS.data(), 1, 4, 1, 1, 8, 8); });
    test::expect_has(msg, {"data.document_mask is not supported by the CUDA attention", "token 2", "at 1"});
    const std::vector<int32_t> late_BS = {0, 2, 2, 2};  // token 1 starts after itself
    test::expect_has(error_of([&] { pack_documents(late_BS.data(), 1, 4, 1, 1, 8, 8); }), {"token 1"});
}

// ---- with a GPU ----

// Why the GPU tests cannot run here, or "" when they can.
std::string gpu_skip_reason() {
    int count = 0;
    const cudaError_t status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess) return std::string("no CUDA device: ") + cudaGetErrorString(status);
    if (count == 0) return "no CUDA device";
    return "";
}

// Naive causal (and document-masked) attention in double on the same BF16-rounded inputs, in Frugal's layouts:
// q, dq [N, Hq*Dqk]; k, dk [N, Hkv*Dqk]; v, dv [N, Hkv*Dv]; out, dout [N, Hq*Dv]; lse [B, Hq, S]. Query i of a
// window attends keys [start_BS[i], i].
struct Reference {
    std::vector<double> out, lse, dq, dk, dv;
};

Reference reference_attention(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
                              const std::vector<float>& dout, const std::vector<int32_t>& start_BS, const Shape& d,
                              double scale) {
    const int64_t n = d.b * d.s, group = d.hq / d.hkv, dqk = d.hd_qk, dv = d.hd_v;
    Reference r;
    r.out.assign(size_t(n * d.hq * dv), 0.0);
    r.dq.assign(size_t(n * d.hq * dqk), 0.0);
    r.dk.assign(size_t(n * d.hkv * dqk), 0.0);
    r.dv.assign(size_t(n * d.hkv * dv), 0.0);
    r.lse.assign(size_t(d.b * d.hq * d.s), 0.0);
    std::vector<double> p(size_t(d.s));
    for (int64_t b = 0; b < d.b; ++b)
        for (int64_t h = 0; h < d.hq; ++h)
            for (int64_t i = 0; i < d.s; ++i) {
                const int64_t kvh = h / group, ti = b * d.s + i, j0 = start_BS[size_t(ti)];
                const size_t q_at = size_t((ti * d.hq + h) * dqk), o_at = size_t((ti * d.hq + h) * dv);
                const float* qi = &q[q_at];
                double max_score = -INFINITY;
                for (int64_t j = j0; j <= i; ++j) {
                    const float* kj = &k[size_t(((b * d.s + j) * d.hkv + kvh) * dqk)];
                    double dot = 0;
                    for (int64_t c = 0; c < dqk; ++c) dot += double(qi[c]) * double(kj[c]);
                    p[size_t(j)] = scale * dot;
                    max_score = std::max(max_score, p[size_t(j)]);
                }
                double sum = 0;
                for (int64_t j = j0; j <= i; ++j) sum += std::exp(p[size_t(j)] - max_score);
                const double lse = max_score + std::log(sum);
                r.lse[size_t((b * d.hq + h) * d.s + i)] = lse;
                double* oi = &r.out[o_at];
                const float* doi = &dout[o_at];
                double dot_do_o = 0;
                for (int64_t j = j0; j <= i; ++j) {
                    p[size_t(j)] = std::exp(p[size_t(j)] - lse);
                    const float* vj = &v[size_t(((b * d.s + j) * d.hkv + kvh) * dv)];
                    for (int64_t c = 0; c < dv; ++c) oi[c] += p[size_t(j)] * double(vj[c]);
                }
                for (int64_t c = 0; c < dv; ++c) dot_do_o += double(doi[c]) * oi[c];
                // Softmax backward: ds_j = p_j (dout.v_j - dout.out); dq += scale ds_j k_j, dk_j += scale ds_j q,
                // dv_j += p_j dout.
                for (int64_t j = j0; j <= i; ++j) {
                    const size_t k_at = size_t(((b * d.s + j) * d.hkv + kvh) * dqk);
                    const size_t v_at = size_t(((b * d.s + j) * d.hkv + kvh) * dv);
                    double dpj = 0;
                    for (int64_t c = 0; c < dv; ++c) dpj += double(doi[c]) * double(v[v_at + size_t(c)]);
                    const double ds = p[size_t(j)] * (dpj - dot_do_o);
                    for (int64_t c = 0; c < dqk; ++c) {
                        r.dq[q_at + size_t(c)] += scale * ds * double(k[k_at + size_t(c)]);
                        r.dk[k_at + size_t(c)] += scale * ds * double(qi[c]);
                    }
                    for (int64_t c = 0; c < dv; ++c) r.dv[v_at + size_t(c)] += p[size_t(j)] * double(doi[c]);
                }
            }
    return r;
}

// The oracle of the GPU tests is itself checked against backend/cpu/reference's attention (runs without a GPU).
// Shape d with a scale other than 1 / sqrt(Dqk) (YaRN's corrected one, in the MLA case).
void expect_oracle_equals_cpu_reference(const Shape& d, double scale) {
    const int64_t n = d.b * d.s;
    std::vector<int32_t> start_BS(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) start_BS[size_t(i)] = int32_t(i % d.s < 5 ? 0 : i % d.s < 6 ? 5 : 6);
    const auto q = test::random_vec<float>(n * d.hq * d.hd_qk, 21),
               k = test::random_vec<float>(n * d.hkv * d.hd_qk, 22),
               v = test::random_vec<float>(n * d.hkv * d.hd_v, 23),
               dout = test::random_vec<float>(n * d.hq * d.hd_v, 24);
    const Reference got = reference_attention(q, k, v, dout, start_BS, d, scale);
    auto as_double = [](const std::vector<float>& x) { return std::vector<double>(x.begin(), x.end()); };
    const auto qd = as_double(q), kd = as_double(k), vd = as_double(v), doutd = as_double(dout);
    std::vector<double> out(got.out.size()), dq(got.dq.size(), 0.0), dk(got.dk.size(), 0.0), dv(got.dv.size(), 0.0);
    const backend::AttentionDims dims{d.b, d.s, d.hq, d.hkv, d.hd_qk, d.hd_v, scale};
    backend::reference::attention_forward(out.data(), qd.data(), kd.data(), vd.data(), dims, start_BS.data());
    backend::reference::attention_backward(dq.data(), dk.data(), dv.data(), doutd.data(), qd.data(), kd.data(),
                                           vd.data(), dims, start_BS.data());
    test::expect_close(got.out.data(), out.data(), int64_t(out.size()), 1e-12, 1e-10, "out", 21);
    test::expect_close(got.dq.data(), dq.data(), int64_t(dq.size()), 1e-12, 1e-10, "dq", 21);
    test::expect_close(got.dk.data(), dk.data(), int64_t(dk.size()), 1e-12, 1e-10, "dk", 21);
    test::expect_close(got.dv.data(), dv.data(), int64_t(dv.size()), 1e-12, 1e-10, "dv", 21);
}

TEST(CudnnAttentionOracle, TheFp64ReferenceEqualsTheCpuReferenceAttentionWithDocumentMasking) {
    expect_oracle_equals_cpu_reference({2, 16, 4, 2, 8, 8}, 1.0 / std::sqrt(8.0));
}

TEST(CudnnAttentionOracle, TheFp64ReferenceEqualsTheCpuReferenceWithWiderQueryKeyThanValueHeads) {
    expect_oracle_equals_cpu_reference({2, 16, 4, 4, 24, 16}, 0.3);
    expect_oracle_equals_cpu_reference({1, 12, 2, 1, 8, 16}, 0.4);
}

// One device buffer, freed on scope exit.
struct DeviceBuffer {
    void* ptr = nullptr;
    explicit DeviceBuffer(size_t bytes) { FRUGAL_CUDA_CHECK(cudaMalloc(&ptr, std::max<size_t>(bytes, 16))); }
    ~DeviceBuffer() { cudaFree(ptr); }
    DeviceBuffer(DeviceBuffer&& o) noexcept : ptr(o.ptr) { o.ptr = nullptr; }
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

struct CudnnHandle {
    cudnnHandle_t handle = nullptr;
    CudnnHandle() { FRUGAL_CUDNN_CHECK(cudnnCreate(&handle)); }
    ~CudnnHandle() { cudnnDestroy(handle); }
};

// Rounds to BF16 in place and returns the BF16 bits.
std::vector<uint16_t> to_bf16(std::vector<float>& x) {
    std::vector<uint16_t> bits(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
        bits[i] = float_to_bf16_bits(x[i]);
        x[i] = bf16_bits_to_float(bits[i]);
    }
    return bits;
}

DeviceBuffer upload(const void* host, size_t bytes) {
    DeviceBuffer d(bytes);
    FRUGAL_CUDA_CHECK(cudaMemcpy(d.ptr, host, bytes, cudaMemcpyHostToDevice));
    return d;
}

std::vector<double> download_bf16(const DeviceBuffer& d, size_t n) {
    std::vector<uint16_t> bits(n);
    FRUGAL_CUDA_CHECK(cudaMemcpy(bits.data(), d.ptr, n * 2, cudaMemcpyDeviceToHost));
    std::vector<double> x(n);
    for (size_t i = 0; i < n; ++i) x[i] = bf16_bits_to_float(bits[i]);
    return x;
}

// Prints the largest errors (the numbers the tolerance is held against) and checks atol + rtol * |want|.
void expect_within(const std::vector<double>& got, const std::vector<double>& want, double atol, double rtol,
                   const std::string& what) {
    const test::Comparison c = test::compare(got.data(), want.data(), int64_t(want.size()));
    std::printf("  %-28s max abs error %.3e (at %lld: %.5f vs %.5f), max rel error %.3e\n", what.c_str(), c.max_abs,
                static_cast<long long>(c.where), c.got, c.want, c.max_rel);
    test::expect_close(got.data(), want.data(), int64_t(want.size()), atol, rtol, what, 7);
}

// Runs forward and backward on the GPU (twice, through one cache) and compares with the reference.
// Tolerances (stated for BF16 I/O): out |err| <= 0.02 + 0.02 |want| (BF16 output and the BF16 P.V product);
// lse |err| <= 2e-3 (FP32 statistics of FP32 scores); dq, dk, dv |err| <= 0.05 + 0.05 |want| (BF16 dP and dS).
void run_against_reference(const Shape& d, const std::vector<int32_t>& start_BS, bool masked, float scale) {
    const int64_t n = d.b * d.s;
    auto q = test::random_vec<float>(n * d.hq * d.hd_qk, 11);
    auto k = test::random_vec<float>(n * d.hkv * d.hd_qk, 12);
    auto v = test::random_vec<float>(n * d.hkv * d.hd_v, 13);
    auto dout = test::random_vec<float>(n * d.hq * d.hd_v, 14);
    const auto q16 = to_bf16(q), k16 = to_bf16(k), v16 = to_bf16(v), dout16 = to_bf16(dout);
    const Reference want = reference_attention(q, k, v, dout, start_BS, d, double(scale));

    CudnnHandle cudnn;
    AttentionGraphCache cache;
    const DocumentPacking packing = pack_documents(start_BS.data(), d.b, d.s, d.hq, d.hkv, d.hd_qk, d.hd_v);
    auto key = [&](AttentionDirection dir) {
        return masked ? document_attention_key(d.b, d.s, d.hq, d.hkv, d.hd_qk, d.hd_v, scale, packing, dir)
                      : causal_attention_key(d.b, d.s, d.hq, d.hkv, d.hd_qk, d.hd_v, scale, dir);
    };
    const size_t q_bytes = q16.size() * 2, k_bytes = k16.size() * 2, v_bytes = v16.size() * 2,
                 o_bytes = dout16.size() * 2, lse_bytes = size_t(n * d.hq) * 4;
    DeviceBuffer dq_in = upload(q16.data(), q_bytes), dk_in = upload(k16.data(), k_bytes),
                 dv_in = upload(v16.data(), v_bytes), ddout = upload(dout16.data(), o_bytes);
    DeviceBuffer index = upload(packing.index_I.data(), packing.index_I.size() * 4);
    const int32_t* index_I = masked ? static_cast<const int32_t*>(index.ptr) : nullptr;
    DeviceBuffer out(o_bytes), lse(lse_bytes), dq(q_bytes), dk(k_bytes), dv(v_bytes);
    for (int step = 0; step < 2; ++step) {
        auto& fwd = cache.get(cudnn.handle, key(AttentionDirection::kForward));
        auto& bwd = cache.get(cudnn.handle, key(AttentionDirection::kBackward));
        DeviceBuffer workspace(size_t(std::max(fwd.workspace_bytes(), bwd.workspace_bytes())));
        const int64_t ws = std::max(fwd.workspace_bytes(), bwd.workspace_bytes());
        cuda::attention_forward(fwd, cudnn.handle, out.ptr, static_cast<float*>(lse.ptr), dq_in.ptr, dk_in.ptr,
                                dv_in.ptr, index_I, workspace.ptr, ws);
        cuda::attention_backward(bwd, cudnn.handle, dq.ptr, dk.ptr, dv.ptr, ddout.ptr, out.ptr,
                                 static_cast<const float*>(lse.ptr), dq_in.ptr, dk_in.ptr, dv_in.ptr, index_I,
                                 workspace.ptr, ws);
        FRUGAL_CUDA_CHECK(cudaDeviceSynchronize());
    }
    EXPECT_EQ(cache.size(), 2) << "the second step must reuse the forward and backward graphs";

    std::vector<float> lse_raw(size_t(n * d.hq));
    FRUGAL_CUDA_CHECK(cudaMemcpy(lse_raw.data(), lse.ptr, lse_bytes, cudaMemcpyDeviceToHost));
    std::vector<double> lse_BHS(lse_raw.size());  // masked graphs write [N, Hq]: reorder to the reference's [B, Hq, S]
    for (int64_t b = 0; b < d.b; ++b)
        for (int64_t h = 0; h < d.hq; ++h)
            for (int64_t i = 0; i < d.s; ++i)
                lse_BHS[size_t((b * d.hq + h) * d.s + i)] =
                    masked ? lse_raw[size_t((b * d.s + i) * d.hq + h)] : lse_raw[size_t((b * d.hq + h) * d.s + i)];
    expect_within(download_bf16(out, dout16.size()), want.out, 0.02, 0.02, "out");
    expect_within(lse_BHS, want.lse, 2e-3, 0.0, "lse");
    expect_within(download_bf16(dq, q16.size()), want.dq, 0.05, 0.05, "dq");
    expect_within(download_bf16(dk, k16.size()), want.dk, 0.05, 0.05, "dk");
    expect_within(download_bf16(dv, v16.size()), want.dv, 0.05, 0.05, "dv");
}

// Window r holds documents of lengths 37 + 11 r (capped at S), 1, then the rest; the last window (of 4 or more) is
// one document.
std::vector<int32_t> ragged_documents(const Shape& d) {
    std::vector<int32_t> start_BS(size_t(d.b * d.s));
    for (int64_t r = 0; r < d.b; ++r) {
        const int64_t first = r == 3 ? d.s : std::min(d.s, 37 + 11 * r);
        for (int64_t i = 0; i < d.s; ++i)
            start_BS[size_t(r * d.s + i)] = int32_t(i < first ? 0 : i == first ? first : first + 1);
    }
    return start_BS;
}

TEST(CudnnAttentionOnGpu, CausalForwardAndBackwardMatchAnFp64ReferenceOnTheDemoShape) {
    const std::string reason = gpu_skip_reason();
    if (!reason.empty()) GTEST_SKIP() << reason;
    run_against_reference(kDemo, std::vector<int32_t>(size_t(kDemo.b * kDemo.s), 0), false,
                          default_attention_scale(kDemo.hd_qk));
}

TEST(CudnnAttentionOnGpu, DocumentMaskedForwardAndBackwardMatchAnFp64ReferenceOnTheDemoShape) {
    const std::string reason = gpu_skip_reason();
    if (!reason.empty()) GTEST_SKIP() << reason;
    run_against_reference(kDemo, ragged_documents(kDemo), true, default_attention_scale(kDemo.hd_qk));
}

TEST(CudnnAttentionOnGpu, LatentAttentionWithDeepseekHeadDimsMatchesAnFp64ReferenceCausalAndDocumentMasked) {
    const std::string reason = gpu_skip_reason();
    if (!reason.empty()) GTEST_SKIP() << reason;
    const Shape d{2, 128, 4, 4, 192, 128};
    const float scale = 0.9f * default_attention_scale(d.hd_qk);  // not 1 / sqrt(Dqk), as with YaRN
    run_against_reference(d, std::vector<int32_t>(size_t(d.b * d.s), 0), false, scale);
    run_against_reference(d, ragged_documents(d), true, scale);
}

TEST(CudnnAttentionOnGpu, LatentAttentionWithSmallUnequalHeadDimsMatchesAnFp64Reference) {
    const std::string reason = gpu_skip_reason();
    if (!reason.empty()) GTEST_SKIP() << reason;
    run_against_reference(kTinyMla, std::vector<int32_t>(size_t(kTinyMla.b * kTinyMla.s), 0), false, 0.3f);
    run_against_reference(kTinyMla, ragged_documents(kTinyMla), true, 0.3f);
}

}  // namespace
}  // namespace frugal
