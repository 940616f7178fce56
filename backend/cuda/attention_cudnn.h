// Fused causal attention (scaled dot-product attention, SDPA) on the GPU through cuDNN's graph API
// (cudnn-frontend): the forward writes the output and the softmax statistics (logsumexp), which is what the CUDA
// backend saves for the backward instead of the [B, Hq, S, S] probabilities the CPU backend keeps.
//
// Legend: B batch (windows), S sequence (window length), Hq query heads, Hkv key/value heads (Hq a multiple of
// Hkv: query head h reads key/value head h / (Hq / Hkv)), Dqk the query/key head dim, Dv the value (and output)
// head dim, N = B*S tokens, P document slots. Multi-head latent attention has Dqk != Dv (DeepSeek-V3: 192 and 128).
//
// Buffers are Frugal's row-major layout, read in place (the graph's strides say where each element is, so no
// transpose copy is made), all BF16 except the statistics:
//   q, dq:            [B*S, Hq*Dqk]  = [B, S, Hq, Dqk]
//   k, dk:            [B*S, Hkv*Dqk] = [B, S, Hkv, Dqk]
//   v, dv:            [B*S, Hkv*Dv]  = [B, S, Hkv, Dv]
//   out, dout:        [B*S, Hq*Dv]   = [B, S, Hq, Dv]
//   lse (float):      causal only:       [B, Hq, S, 1], lse = log(sum_j exp(scale * q.k_j)) in natural log
//                     document masking:  [B*S, Hq] (token-major, the packed-sequence layout cuDNN requires)
// Both lse layouts hold B*S*Hq floats; the backward reads the layout its forward wrote.
//
// Masking: always causal (key j <= query i). With document masking (data.document_mask) token i of a window
// attends only to [doc_start[i], i]. cuDNN expresses that as packed ("ragged", THD) sequences: every document is
// one sequence of its own, located by ragged offsets into the unchanged buffers, with per-sequence lengths and a
// padding mask; causal alignment is top-left per sequence, which is exactly [doc_start[i], i]. The graph's batch
// axis is then P document slots, P = the next power of two >= max(B, number of documents), so a handful of graphs
// serve every step; slots past the last document have length 0. The per-step description (lengths and offsets)
// comes from pack_documents() on the host and is copied to the device by the caller.
//
// Graph cache: keyed by AttentionKey (shape, scale, masking, slots, direction), so a training step after the first
// builds nothing. Workspace memory comes from the caller (workspace_bytes()). The cuDNN handle carries the stream.
// The backward WRITES dq, dk and dv (cuDNN has no accumulate): callers give it buffers it may overwrite.
//
// Head dims (cuDNN 9.19's support matrix, BF16): both multiples of 8; Hopper (sm 9x) takes Dqk, Dv <= 256 in the
// forward and the backward, equal or not (192/128 included); Blackwell (sm 10x) takes Dqk != Dv only as 192/128 or
// both <= 128. build_attention_graph refuses the rest naming both dims (Frugal's own check where cuDNN's validate
// would pass a shape that then has no plan, cuDNN's reason otherwise).
//
// build_* validate a graph for a given SM version without a device (no handle): that is what the tests on
// machines without a GPU exercise. finalize/execute need a GPU.
#pragma once

#include <cudnn.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>
#include <vector>

namespace frugal::cuda {

enum class AttentionDirection { kForward, kBackward };

// Everything a graph depends on; the cache key.
struct AttentionKey {
    int64_t b = 0, s = 0, hq = 0, hkv = 0;
    int64_t hd_qk = 0, hd_v = 0;  // Dqk: queries and keys; Dv: values and the output
    float scale = 0;              // multiplies q.k before the softmax; default_attention_scale(hd_qk) or YaRN's
    bool is_document_masked = false;
    int64_t num_doc_slots = 0;  // P: the graph's batch axis when document masked, else 0
    AttentionDirection direction = AttentionDirection::kForward;

    auto tie() const {
        return std::tie(b, s, hq, hkv, hd_qk, hd_v, scale, is_document_masked, num_doc_slots, direction);
    }
    bool operator<(const AttentionKey& o) const { return tie() < o.tie(); }
};

// 1 / sqrt(hd), the scale of "Attention Is All You Need" section 3.2.1.
float default_attention_scale(int64_t hd);

// The key of a causal (not document masked) graph.
AttentionKey causal_attention_key(int64_t b, int64_t s, int64_t hq, int64_t hkv, int64_t hd_qk, int64_t hd_v,
                                  float scale, AttentionDirection direction);

// Packed documents as cuDNN's ragged layout wants them, built on the host from doc_start_BS (data::document_starts:
// token i of window r attends to [doc_start_BS[r*S + i], i]; a document is a run of equal starts beginning at its
// own start). index_I is one int32 buffer of six sections, each padded to a multiple of 4 entries (16 bytes):
//   [0, P)                          seq_len_P:       tokens in document slot p (0 past the last document)
//   [o1, o1 + P + 1)                q_offset_P1:     element offset of slot p's first token in q/dq (Hq*Dqk a token)
//   [o2, o2 + P + 1)                k_offset_P1:     element offset in k/dk (Hkv*Dqk a token)
//   [o3, o3 + P + 1)                v_offset_P1:     element offset in v/dv (Hkv*Dv a token)
//   [o4, o4 + P + 1)                o_offset_P1:     element offset in out/dout (Hq*Dv a token)
//   [o5, o5 + P + 1)                lse_offset_P1:   element offset in the [B*S, Hq] lse
// with o1 = round_up(P, 4) and each next section round_up(P + 1, 4) further; entry P of each offset section (and
// the entries of empty slots) is the end of the buffer.
struct DocumentPacking {
    int64_t num_docs = 0;
    int64_t num_doc_slots = 0;  // P
    std::vector<int32_t> index_I;
    int64_t q_offset_at = 0, k_offset_at = 0, v_offset_at = 0, o_offset_at = 0, lse_offset_at = 0;  // o1 .. o5
};

// Throws a frugal::Error naming data.document_mask when doc_start_BS is not a set of contiguous documents (a start
// after its token, or one that neither begins a document nor continues the previous token's), which cuDNN's packed
// sequences cannot express, or when an offset would not fit in int32.
DocumentPacking pack_documents(const int32_t* doc_start_BS, int64_t b, int64_t s, int64_t hq, int64_t hkv,
                               int64_t hd_qk, int64_t hd_v);

// The key of a document-masked graph for this packing.
AttentionKey document_attention_key(int64_t b, int64_t s, int64_t hq, int64_t hkv, int64_t hd_qk, int64_t hd_v,
                                    float scale, const DocumentPacking& packing, AttentionDirection direction);

// One cuDNN graph (cudnn-frontend's graph::Graph behind a pointer, so this header stays light).
class AttentionGraph {
  public:
    struct Impl;
    explicit AttentionGraph(std::unique_ptr<Impl> impl);
    ~AttentionGraph();
    const AttentionKey& key() const;
    // Device workspace execute needs; only after finalize.
    int64_t workspace_bytes() const;
    Impl& impl() { return *impl_; }
    const Impl& impl() const { return *impl_; }

  private:
    std::unique_ptr<Impl> impl_;
};

// Builds the forward or backward graph for key.direction and validates it for sm_version (90 Hopper, 100 Blackwell)
// without a device (0: the current device's). Throws a frugal::Error naming the dims, with cuDNN's reason when cuDNN
// refuses, when the shape or masking is not supported (a head dim not a multiple of 8, Dqk != Dv on Blackwell other
// than 192/128, Hq not a multiple of Hkv, ...).
std::unique_ptr<AttentionGraph> build_attention_graph(const AttentionKey& key, int sm_version);

// Lowers a validated graph to the backend and picks its plan on handle's device (needs a GPU).
void finalize_attention_graph(AttentionGraph& graph, cudnnHandle_t handle);

// The graphs of one device, built on first use (validated for the device's own SM version and finalized).
class AttentionGraphCache {
  public:
    AttentionGraph& get(cudnnHandle_t handle, const AttentionKey& key);
    int64_t size() const;

  private:
    mutable std::mutex mutex_;
    std::map<AttentionKey, std::unique_ptr<AttentionGraph>> graphs_;
};

// out = softmax(scale * q k^T + causal/document mask) v per head, and its lse. doc_index_I: the device copy of
// pack_documents(...).index_I when graph is document masked, else null. workspace: graph.workspace_bytes() bytes.
void attention_forward(const AttentionGraph& graph, cudnnHandle_t handle, void* out, float* lse, const void* q,
                       const void* k, const void* v, const int32_t* doc_index_I, void* workspace,
                       int64_t workspace_bytes);

// dq, dk, dv (written, not added) from dout and the forward's out and lse.
void attention_backward(const AttentionGraph& graph, cudnnHandle_t handle, void* dq, void* dk, void* dv,
                        const void* dout, const void* out, const float* lse, const void* q, const void* k,
                        const void* v, const int32_t* doc_index_I, void* workspace, int64_t workspace_bytes);

}  // namespace frugal::cuda
