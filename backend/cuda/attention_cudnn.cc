// cuDNN SDPA graphs (forward with softmax statistics, backward from them) through cudnn-frontend; see
// attention_cudnn.h for the layouts and the masking. This is the only file that includes cudnn_frontend.h (a large
// header-only library), so that the rest of the CUDA backend compiles fast; it needs no nvcc.
//
// Invariants: every cudnn-frontend status is checked and a failure names the call and the graph's key; a graph in
// the cache is finalized (has a plan) and is never rebuilt; the graph tensors' strides describe Frugal's token-major
// buffers (stride of a head = its width, Dqk for q/k/dq/dk and Dv for v/out/dout/dv, of a token = heads * width),
// so nothing is transposed; the ragged offsets of a tensor count elements of that tensor's own token width.
#include "backend/cuda/attention_cudnn.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wall"
#pragma GCC diagnostic ignored "-Wextra"
#include <cudnn_frontend.h>
#pragma GCC diagnostic pop

#include <cuda_runtime_api.h>

#include <algorithm>
#include <array>
#include <climits>
#include <cmath>
#include <sstream>
#include <string>
#include <unordered_map>

#include "backend/cuda/check.h"
#include "core/error.h"

namespace frugal::cuda {

namespace fe = cudnn_frontend;

namespace {

using TensorPtr = std::shared_ptr<fe::graph::Tensor_attributes>;

// Graph tensor ids: the variant pack maps these to device pointers.
enum Uid : int64_t {
    kQ = 1,
    kK,
    kV,
    kOut,
    kLse,
    kDout,
    kDq,
    kDk,
    kDv,
    kSeqLenQ,
    kSeqLenKv,
    kQOffset,
    kKOffset,
    kVOffset,
    kOutOffset,
    kLseOffset,
    kDoutOffset,
    kDqOffset,
    kDkOffset,
    kDvOffset,
};

std::string describe(const AttentionKey& key) {
    std::ostringstream os;
    os << (key.direction == AttentionDirection::kForward ? "forward" : "backward") << " b " << key.b << ", s " << key.s
       << ", hq " << key.hq << ", hkv " << key.hkv << ", hd_qk " << key.hd_qk << ", hd_v " << key.hd_v << ", scale "
       << key.scale;
    if (key.is_document_masked)
        os << ", document masked over " << key.num_doc_slots << " slots";
    else
        os << ", causal";
    return os.str();
}

// Throws with the failing call, the graph and cuDNN's reason. A document-masked graph that cuDNN refuses says
// which setting to change.
void check_status(const fe::error_t& status, const char* call, const AttentionKey& key) {
    if (status.is_good()) return;
    if (key.is_document_masked)
        FRUGAL_THROW("data.document_mask is not supported by the CUDA attention on this cuDNN/GPU: ", call,
                     " failed for the ", describe(key), " graph: ", status.err_msg,
                     "; fix: set data.document_mask to false");
    FRUGAL_THROW("cuDNN attention: ", call, " failed for the ", describe(key), " graph: ", status.err_msg);
}

int64_t round_up4(int64_t n) { return (n + 3) / 4 * 4; }

int64_t next_pow2(int64_t n) {
    int64_t p = 1;
    while (p < n) p *= 2;
    return p;
}

// Where each section of pack_documents' index buffer begins for P slots: seq_len, then the q, k, v, o and lse
// offsets (attention_cudnn.h). pack_documents and the variant pack both read this.
enum Section { kSeqLen = 0, kQSection, kKSection, kVSection, kOSection, kLseSection, kSectionCount };
std::array<int64_t, kSectionCount + 1> index_sections(int64_t p) {
    std::array<int64_t, kSectionCount + 1> at{};
    at[kSeqLen] = 0;
    at[kQSection] = round_up4(p);
    for (int sec = kKSection; sec <= kSectionCount; ++sec) at[size_t(sec)] = at[size_t(sec - 1)] + round_up4(p + 1);
    return at;  // at[kSectionCount]: the buffer's length
}

// The graph's view of the packed-document description: per-slot lengths and offsets, int32 [P(+1), 1, 1, 1].
TensorPtr index_tensor(fe::graph::Graph& graph, const char* name, int64_t uid, int64_t n) {
    return graph.tensor(fe::graph::Tensor_attributes()
                            .set_name(name)
                            .set_uid(uid)
                            .set_dim({n, 1, 1, 1})
                            .set_stride({1, 1, 1, 1})
                            .set_data_type(fe::DataType_t::INT32));
}

// A [batch, heads, S, width] view of a token-major [B*S, heads*width] buffer (width: Dqk or Dv). With document
// masking the batch axis is the P slots and the ragged offset tensor (offset_uid) gives each slot's first element.
void set_token_major(fe::graph::Tensor_attributes& t, fe::graph::Graph& graph, const AttentionKey& key, int64_t heads,
                     int64_t width, const char* offset_name, int64_t offset_uid) {
    const int64_t batch = key.is_document_masked ? key.num_doc_slots : key.b;
    t.set_dim({batch, heads, key.s, width}).set_stride({key.s * heads * width, width, heads * width, 1});
    if (key.is_document_masked) t.set_ragged_offset(index_tensor(graph, offset_name, offset_uid, batch + 1));
}

TensorPtr token_major_input(fe::graph::Graph& graph, const AttentionKey& key, const char* name, int64_t uid,
                            int64_t heads, int64_t width, const char* offset_name, int64_t offset_uid) {
    fe::graph::Tensor_attributes t;
    t.set_name(name).set_uid(uid);
    set_token_major(t, graph, key, heads, width, offset_name, offset_uid);
    return graph.tensor(t);
}

// lse: [B, Hq, S, 1] packed, or with document masking [P, Hq, S, 1] over the token-major [B*S, Hq] buffer.
void set_lse_layout(fe::graph::Tensor_attributes& t, fe::graph::Graph& graph, const AttentionKey& key) {
    t.set_data_type(fe::DataType_t::FLOAT);
    if (!key.is_document_masked) {
        t.set_dim({key.b, key.hq, key.s, 1}).set_stride({key.hq * key.s, key.s, 1, 1});
        return;
    }
    const int64_t p = key.num_doc_slots;
    t.set_dim({p, key.hq, key.s, 1}).set_stride({key.hq * key.s, 1, key.hq, 1});
    t.set_ragged_offset(index_tensor(graph, "lse_offset", kLseOffset, p + 1));
}

std::shared_ptr<fe::graph::Graph> new_graph(int sm_version) {
    auto graph = std::make_shared<fe::graph::Graph>();
    graph->set_io_data_type(fe::DataType_t::BFLOAT16)
        .set_intermediate_data_type(fe::DataType_t::FLOAT)
        .set_compute_data_type(fe::DataType_t::FLOAT);
    if (sm_version > 0) graph->set_sm_version(sm_version);
    return graph;
}

// Causal (top-left diagonal, key j <= query i) and, with document masking, per-slot lengths (padding mask), which
// makes the diagonal start at each document's first token. Options is SDPA_attributes or its backward twin.
template <typename Options>
void set_masking(Options& options, fe::graph::Graph& graph, const AttentionKey& key) {
    options.set_diagonal_alignment(fe::DiagonalAlignment_t::TOP_LEFT).set_diagonal_band_right_bound(0);
    if (!key.is_document_masked) return;
    const int64_t p = key.num_doc_slots;
    options.set_padding_mask(true)
        .set_seq_len_q(index_tensor(graph, "seq_len_q", kSeqLenQ, p))
        .set_seq_len_kv(index_tensor(graph, "seq_len_kv", kSeqLenKv, p))
        .set_max_total_seq_len_q(key.b * key.s)
        .set_max_total_seq_len_kv(key.b * key.s);
}

std::shared_ptr<fe::graph::Graph> forward_graph(const AttentionKey& key, int sm_version) {
    auto graph = new_graph(sm_version);
    auto q = token_major_input(*graph, key, "q", kQ, key.hq, key.hd_qk, "q_offset", kQOffset);
    auto k = token_major_input(*graph, key, "k", kK, key.hkv, key.hd_qk, "k_offset", kKOffset);
    auto v = token_major_input(*graph, key, "v", kV, key.hkv, key.hd_v, "v_offset", kVOffset);
    auto options = fe::graph::SDPA_attributes()
                       .set_name("frugal_attention_forward")
                       .set_generate_stats(true)
                       .set_attn_scale(key.scale);
    set_masking(options, *graph, key);
    auto [out, lse] = graph->sdpa(q, k, v, options);
    out->set_output(true).set_uid(kOut);
    set_token_major(*out, *graph, key, key.hq, key.hd_v, "out_offset", kOutOffset);
    lse->set_output(true).set_uid(kLse);
    set_lse_layout(*lse, *graph, key);
    return graph;
}

std::shared_ptr<fe::graph::Graph> backward_graph(const AttentionKey& key, int sm_version) {
    auto graph = new_graph(sm_version);
    auto q = token_major_input(*graph, key, "q", kQ, key.hq, key.hd_qk, "q_offset", kQOffset);
    auto k = token_major_input(*graph, key, "k", kK, key.hkv, key.hd_qk, "k_offset", kKOffset);
    auto v = token_major_input(*graph, key, "v", kV, key.hkv, key.hd_v, "v_offset", kVOffset);
    auto out = token_major_input(*graph, key, "out", kOut, key.hq, key.hd_v, "out_offset", kOutOffset);
    auto dout = token_major_input(*graph, key, "dout", kDout, key.hq, key.hd_v, "dout_offset", kDoutOffset);
    fe::graph::Tensor_attributes lse_attributes;
    lse_attributes.set_name("lse").set_uid(kLse);
    set_lse_layout(lse_attributes, *graph, key);
    auto lse = graph->tensor(lse_attributes);
    // Deterministic: the same inputs give bitwise-equal gradients (DESIGN.md, numerics and determinism).
    auto options = fe::graph::SDPA_backward_attributes()
                       .set_name("frugal_attention_backward")
                       .set_attn_scale(key.scale)
                       .set_deterministic_algorithm(true);
    set_masking(options, *graph, key);
    auto [dq, dk, dv] = graph->sdpa_backward(q, k, v, out, dout, lse, options);
    dq->set_output(true).set_uid(kDq);
    set_token_major(*dq, *graph, key, key.hq, key.hd_qk, "dq_offset", kDqOffset);
    dk->set_output(true).set_uid(kDk);
    set_token_major(*dk, *graph, key, key.hkv, key.hd_qk, "dk_offset", kDkOffset);
    dv->set_output(true).set_uid(kDv);
    set_token_major(*dv, *graph, key, key.hkv, key.hd_v, "dv_offset", kDvOffset);
    return graph;
}

void check_key(const AttentionKey& key) {
    FRUGAL_CHECK(key.b > 0 && key.s > 0 && key.hq > 0 && key.hkv > 0 && key.hd_qk > 0 && key.hd_v > 0,
                 "attention dims must be positive: ", describe(key));
    FRUGAL_CHECK(key.hq % key.hkv == 0, "attention: the query heads (", key.hq,
                 ") must be a multiple of the key/value heads (", key.hkv, "): set model.num_kv_heads to a divisor of ",
                 key.hq);
    FRUGAL_CHECK(std::isfinite(key.scale) && key.scale > 0, "attention scale must be positive and finite, got ",
                 key.scale);
    FRUGAL_CHECK(!key.is_document_masked || key.num_doc_slots >= key.b,
                 "document-masked attention needs at least one slot per window: ", describe(key));
}

// Head dims cuDNN has no plan for although its validate() may pass them (the BF16 forward checks only multiples of
// 8 there): on Hopper either above 256; on Blackwell Dqk != Dv other than 192/128 with either above 128. The
// multiples of 8 are cuDNN's own validate() checks, whose reason check_status passes on.
void check_head_dims(const AttentionKey& key, int sm_version) {
    const char* fix =
        "; fix: set model.qk_nope_head_dim + model.qk_rope_head_dim (queries/keys) and model.v_head_dim (values), "
        "or the head dim,";
    if (sm_version / 10 == 9)
        FRUGAL_CHECK(key.hd_qk <= 256 && key.hd_v <= 256, "the CUDA attention on Hopper (sm ", sm_version,
                     ") takes head dims up to 256, got hd_qk ", key.hd_qk, " and hd_v ", key.hd_v, " (", describe(key),
                     ")", fix, " to at most 256");
    if (sm_version / 10 != 10 || key.hd_qk == key.hd_v) return;
    const bool deepseek = key.hd_qk == 192 && key.hd_v == 128;
    FRUGAL_CHECK(deepseek || (key.hd_qk <= 128 && key.hd_v <= 128), "the CUDA attention on Blackwell (sm ", sm_version,
                 ") takes query/key and value head dims that differ only as 192/128 or both <= 128, got hd_qk ",
                 key.hd_qk, " and hd_v ", key.hd_v, " (", describe(key), ")", fix,
                 " to 192 and 128 or both to at most 128");
}

// The SM version of the current device (major * 10 + minor).
int current_sm_version() {
    int device = 0, major = 0, minor = 0;
    FRUGAL_CUDA_CHECK(cudaGetDevice(&device));
    FRUGAL_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
    FRUGAL_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
    return major * 10 + minor;
}

// The device pointers of a document-masked graph's index tensors, from the one index buffer.
void add_document_index(std::unordered_map<int64_t, void*>& pack, const AttentionKey& key, const int32_t* index_I) {
    FRUGAL_CHECK(index_I != nullptr, "the document-masked attention (", describe(key),
                 ") needs the device copy of pack_documents(...).index_I");
    const auto at = index_sections(key.num_doc_slots);
    auto* base = const_cast<int32_t*>(index_I);
    pack[kSeqLenQ] = base + at[kSeqLen];
    pack[kSeqLenKv] = base + at[kSeqLen];
    for (int64_t uid : {kQOffset, kDqOffset}) pack[uid] = base + at[kQSection];
    for (int64_t uid : {kKOffset, kDkOffset}) pack[uid] = base + at[kKSection];
    for (int64_t uid : {kVOffset, kDvOffset}) pack[uid] = base + at[kVSection];
    for (int64_t uid : {kOutOffset, kDoutOffset}) pack[uid] = base + at[kOSection];
    pack[kLseOffset] = base + at[kLseSection];
}

}  // namespace

struct AttentionGraph::Impl {
    AttentionKey key;
    std::shared_ptr<fe::graph::Graph> graph;
    int64_t workspace_bytes = -1;  // -1 until finalized

    void execute(cudnnHandle_t handle, std::unordered_map<int64_t, void*>& pack, const int32_t* doc_index_I,
                 void* workspace, int64_t workspace_size) const {
        FRUGAL_CHECK(workspace_bytes >= 0, "the attention graph (", describe(key),
                     ") was not finalized: call finalize_attention_graph or use AttentionGraphCache");
        FRUGAL_CHECK(workspace_size >= workspace_bytes, "the attention graph (", describe(key), ") needs ",
                     workspace_bytes, " bytes of workspace, got ", workspace_size);
        if (key.is_document_masked) add_document_index(pack, key, doc_index_I);
        check_status(graph->execute(handle, pack, workspace), "graph.execute", key);
    }
};

AttentionGraph::AttentionGraph(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
AttentionGraph::~AttentionGraph() = default;
const AttentionKey& AttentionGraph::key() const { return impl_->key; }
int64_t AttentionGraph::workspace_bytes() const { return impl_->workspace_bytes; }

float default_attention_scale(int64_t hd) { return float(1.0 / std::sqrt(double(hd))); }

AttentionKey causal_attention_key(int64_t b, int64_t s, int64_t hq, int64_t hkv, int64_t hd_qk, int64_t hd_v,
                                  float scale, AttentionDirection direction) {
    AttentionKey key;
    key.b = b, key.s = s, key.hq = hq, key.hkv = hkv, key.hd_qk = hd_qk, key.hd_v = hd_v;
    key.scale = scale, key.direction = direction;
    return key;
}

AttentionKey document_attention_key(int64_t b, int64_t s, int64_t hq, int64_t hkv, int64_t hd_qk, int64_t hd_v,
                                    float scale, const DocumentPacking& packing, AttentionDirection direction) {
    AttentionKey key = causal_attention_key(b, s, hq, hkv, hd_qk, hd_v, scale, direction);
    key.is_document_masked = true;
    key.num_doc_slots = packing.num_doc_slots;
    return key;
}

DocumentPacking pack_documents(const int32_t* doc_start_BS, int64_t b, int64_t s, int64_t hq, int64_t hkv,
                               int64_t hd_qk, int64_t hd_v) {
    FRUGAL_CHECK(b > 0 && s > 0 && hq > 0 && hkv > 0 && hd_qk > 0 && hd_v > 0,
                 "pack_documents: dims must be positive (b ", b, ", s ", s, ", hq ", hq, ", hkv ", hkv, ", hd_qk ",
                 hd_qk, ", hd_v ", hd_v, ")");
    const int64_t n = b * s, widest = std::max(hq, hkv) * std::max(hd_qk, hd_v);
    FRUGAL_CHECK(n * widest <= INT32_MAX, "data.document_mask is not supported by the CUDA attention for ", n,
                 " tokens of ", std::max(hq, hkv), " heads of up to ", std::max(hd_qk, hd_v),
                 " values: element offsets pass int32; fix: lower train.micro_batch or train.seq_len");
    std::vector<int32_t> first_token, length;
    for (int64_t r = 0; r < b; ++r) {
        for (int64_t i = 0; i < s; ++i) {
            const int64_t start = doc_start_BS[r * s + i];
            const bool begins = start == i;
            const bool continues = i > 0 && start < i && start == doc_start_BS[r * s + i - 1];
            if (!begins && !continues)
                FRUGAL_THROW("data.document_mask is not supported by the CUDA attention: token ", i, " of window ", r,
                             " starts its document at ", start,
                             ", which is neither itself nor the previous token's start (",
                             i > 0 ? std::to_string(doc_start_BS[r * s + i - 1]) : std::string("none"),
                             "); cuDNN's packed sequences express only contiguous documents (data::document_starts)");
            if (begins) {
                first_token.push_back(int32_t(r * s + i));
                length.push_back(0);
            }
            ++length.back();
        }
    }
    DocumentPacking packing;
    packing.num_docs = int64_t(first_token.size());
    const int64_t p = next_pow2(std::max(b, packing.num_docs));
    packing.num_doc_slots = p;
    const auto at = index_sections(p);
    packing.q_offset_at = at[kQSection];
    packing.k_offset_at = at[kKSection];
    packing.v_offset_at = at[kVSection];
    packing.o_offset_at = at[kOSection];
    packing.lse_offset_at = at[kLseSection];
    packing.index_I.assign(size_t(at[kSectionCount]), 0);
    int32_t* idx = packing.index_I.data();
    for (int64_t slot = 0; slot <= p; ++slot) {
        const bool is_doc = slot < packing.num_docs;
        const int64_t token = is_doc ? first_token[size_t(slot)] : n;
        if (slot < p) idx[slot] = is_doc ? length[size_t(slot)] : 0;
        idx[packing.q_offset_at + slot] = int32_t(token * hq * hd_qk);
        idx[packing.k_offset_at + slot] = int32_t(token * hkv * hd_qk);
        idx[packing.v_offset_at + slot] = int32_t(token * hkv * hd_v);
        idx[packing.o_offset_at + slot] = int32_t(token * hq * hd_v);
        idx[packing.lse_offset_at + slot] = int32_t(token * hq);
    }
    return packing;
}

std::unique_ptr<AttentionGraph> build_attention_graph(const AttentionKey& key, int sm_version) {
    check_key(key);
    if (sm_version <= 0) sm_version = current_sm_version();
    check_head_dims(key, sm_version);
    auto impl = std::make_unique<AttentionGraph::Impl>();
    impl->key = key;
    impl->graph = key.direction == AttentionDirection::kForward ? forward_graph(key, sm_version)
                                                                : backward_graph(key, sm_version);
    check_status(impl->graph->validate(), "graph.validate", key);
    return std::make_unique<AttentionGraph>(std::move(impl));
}

void finalize_attention_graph(AttentionGraph& graph, cudnnHandle_t handle) {
    AttentionGraph::Impl& impl = graph.impl();
    const AttentionKey& key = impl.key;
    check_status(impl.graph->build_operation_graph(handle), "graph.build_operation_graph", key);
    check_status(impl.graph->create_execution_plans({fe::HeurMode_t::A}), "graph.create_execution_plans", key);
    check_status(impl.graph->check_support(handle), "graph.check_support", key);
    check_status(impl.graph->build_plans(handle), "graph.build_plans", key);
    int64_t bytes = 0;
    check_status(impl.graph->get_workspace_size(bytes), "graph.get_workspace_size", key);
    impl.workspace_bytes = bytes;
}

AttentionGraph& AttentionGraphCache::get(cudnnHandle_t handle, const AttentionKey& key) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = graphs_.find(key);
    if (it != graphs_.end()) return *it->second;
    auto graph = build_attention_graph(key, 0);  // 0: the SM version of the current device (handle's)
    finalize_attention_graph(*graph, handle);
    return *graphs_.emplace(key, std::move(graph)).first->second;
}

int64_t AttentionGraphCache::size() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return int64_t(graphs_.size());
}

void attention_forward(const AttentionGraph& graph, cudnnHandle_t handle, void* out, float* lse, const void* q,
                       const void* k, const void* v, const int32_t* doc_index_I, void* workspace,
                       int64_t workspace_bytes) {
    const AttentionGraph::Impl& impl = graph.impl();
    FRUGAL_CHECK(impl.key.direction == AttentionDirection::kForward, "attention_forward was given the ",
                 describe(impl.key), " graph");
    std::unordered_map<int64_t, void*> pack = {
        {kQ, const_cast<void*>(q)}, {kK, const_cast<void*>(k)}, {kV, const_cast<void*>(v)}, {kOut, out}, {kLse, lse},
    };
    impl.execute(handle, pack, doc_index_I, workspace, workspace_bytes);
}

void attention_backward(const AttentionGraph& graph, cudnnHandle_t handle, void* dq, void* dk, void* dv,
                        const void* dout, const void* out, const float* lse, const void* q, const void* k,
                        const void* v, const int32_t* doc_index_I, void* workspace, int64_t workspace_bytes) {
    const AttentionGraph::Impl& impl = graph.impl();
    FRUGAL_CHECK(impl.key.direction == AttentionDirection::kBackward, "attention_backward was given the ",
                 describe(impl.key), " graph");
    std::unordered_map<int64_t, void*> pack = {
        {kQ, const_cast<void*>(q)},
        {kK, const_cast<void*>(k)},
        {kV, const_cast<void*>(v)},
        {kOut, const_cast<void*>(out)},
        {kDout, const_cast<void*>(dout)},
        {kLse, const_cast<float*>(lse)},
        {kDq, dq},
        {kDk, dk},
        {kDv, dv},
    };
    impl.execute(handle, pack, doc_index_I, workspace, workspace_bytes);
}

}  // namespace frugal::cuda
