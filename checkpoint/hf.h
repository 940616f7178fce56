// Hugging Face checkpoints <-> Frugal parameters, for the families Frugal's model expresses exactly: qwen3_moe,
// qwen2_moe, mixtral, olmoe, deepseek_v3 (and kimi_k2), deepseek_v2, glm4_moe and dots1 (sliding windows, QKV
// clipping, output-projection biases and scalings other than YaRN are refused by name).
//
// Tensor names (L layer, e expert; M = mlp. or, for mixtral, block_sparse_moe.; S = mlp.shared_expert. for
// qwen2_moe, mlp.shared_experts. for deepseek_v3, deepseek_v2, glm4_moe and dots1):
//   embed.weight                        model.embed_tokens.weight
//   layers.L.attn_norm.weight           model.layers.L.input_layernorm.weight
//   layers.L.attn.{wq,wk,wv,wo}.weight  model.layers.L.self_attn.{q,k,v,o}_proj.weight
//   layers.L.attn.{wq,wk,wv}.bias       model.layers.L.self_attn.{q,k,v}_proj.bias        (qwen2_moe, glm4_moe)
//   layers.L.attn.{q,k}_norm.weight     model.layers.L.self_attn.{q,k}_norm.weight   (qwen3_moe, glm4_moe, dots1:
//                                       [hd]; olmoe: [n_heads hd] and [n_kv_heads hd], the whole projection)
//   MLA (H heads, dqk = qk_nope_head_dim + qk_rope_head_dim):
//   layers.L.attn.wq.weight [H dqk, D]  self_attn.q_proj.weight                                 (q_lora_rank 0)
//   layers.L.attn.{wq_a,q_a_norm,wq_b}  self_attn.{q_a_proj,q_a_layernorm,q_b_proj}.weight
//   layers.L.attn.wkv_a.weight          self_attn.kv_a_proj_with_mqa.weight [kv_lora_rank + rope, D]
//   layers.L.attn.kv_a_norm.weight      self_attn.kv_a_layernorm.weight
//   layers.L.attn.wkv_b.weight          self_attn.kv_b_proj.weight [H (nope + v_head_dim), kv_lora_rank]
//   layers.L.ffn_norm.weight            model.layers.L.post_attention_layernorm.weight
//   layers.L.mlp.w13.weight             rows [0, F): mlp.gate_proj; [F, 2F): mlp.up_proj       (dense layers)
//   layers.L.mlp.w2.weight              mlp.down_proj                                          (dense layers)
//   layers.L.moe.router.weight          model.layers.L.M gate.weight
//   layers.L.moe.router.bias (buffer)   M gate.e_score_correction_bias, always F32     (deepseek_v3, glm4_moe,
//                                       dots1; the other families have no place for it: it must stay zero)
//   layers.L.moe.experts.w13[e]         rows [0, F): M experts.e.gate_proj (mixtral: w1); rows [F, 2F): up_proj (w3)
//   layers.L.moe.experts.w2[e]          M experts.e.down_proj (mixtral: w2)
//   layers.L.moe.shared.w13.weight      rows [0, F): S gate_proj; [F, 2F): S up_proj
//   layers.L.moe.shared.w2.weight       S down_proj
//   layers.L.moe.shared_gate.weight     mlp.shared_expert_gate.weight [1, D]                         (qwen2_moe)
//   final_norm.weight                   model.norm.weight
//   head.weight                         lm_head.weight (absent when tie_word_embeddings)
//   mtp.I.{enorm,hnorm,eh_proj}.weight  model.layers.{n_layers + I}.{enorm,hnorm,eh_proj}.weight; mtp.I.final_norm is
//                                       its shared_head.norm, the rest of mtp.I. maps as a layer's; its embed_tokens
//                                       and shared_head.head are the main model's (exported as copies)
// Rotary convention: DeepSeek stores each head's rotary rows in interleaved pairs (deepseek_v2 always,
// deepseek_v3 when rope_interleave); the import reorders the rope rows of wq / wq_b (rows [nope, nope + rope) of
// every head) and of wkv_a (rows [kv_lora_rank, kv_lora_rank + rope)) to evens then odds, so that Frugal's
// rotate-half RoPE computes the same q.k, and the export restores the file's order: the round trip is bit for bit.
// The other families use rotate-half already.
#pragma once

#include <string>

#include "model/config.h"
#include "model/params.h"
#include "parallel/communicator.h"

namespace frugal::checkpoint {

// Throws ConfigError naming the field when the family or one of its settings cannot be imported exactly.
void check_importable(const std::string& hf_dir);

// Fills every parameter and buffer of store (float, possibly an expert shard) from the safetensors of hf_dir
// (single file or sharded with model.safetensors.index.json). Each rank reads only its own experts' tensors.
// Tensor shapes must match the store's exactly; a missing shard or tensor is named. MTP layers of the file beyond
// the store's mtp.I. modules are left unread (a model built with fewer model.mtp_modules).
void load_hf_weights(const std::string& hf_dir, model::ParamStore& store);

// The Hugging Face family that holds this model: deepseek_v3 (MLA; deepseek_v2 when it routes by softmax), dots1
// or glm4_moe (grouped-query attention with what only they hold: sigmoid routing, groups, dense layers, ungated
// shared experts, a routed scaling factor, partial rotation, MTP; dots1 when per-head QK-norm, full rotation and
// no biases), olmoe (projection QK-norm), qwen2_moe (QKV biases or a gated shared expert), qwen3_moe (per-head
// QK-norm) or mixtral.
std::string hf_model_type(const model::ModelConfig& cfg);

// Throws ConfigError naming the first model setting the Hugging Face family `type` cannot hold.
void check_exportable(const model::ModelConfig& cfg, const std::string& type);

// Refuses (ConfigError, exit 2) an export target that is a file, or a non-empty directory that is not a previous
// export (config.json with safetensors, tokenizer files and nothing else): an export replaces out_dir whole, so
// anything else there would be lost. force skips the check. key names the flag or config key for the message.
void check_export_target(const std::string& out_dir, const std::string& key, bool force);

// Writes config.json (from source_config when given, else generated for model_type), sharded safetensors with
// model.safetensors.index.json (shards of at most max_shard_bytes), in "bf16", "f16" or "f32" (router biases in
// F32 always), into a staging directory renamed to out_dir at the end. store holds all experts (one process).
// With source_config, the MTP layers the source holds beyond cfg.mtp_modules are copied from the source
// directory's safetensors as their bytes are.
void export_hf(const std::string& out_dir, const model::ParamStore& store, const model::ModelConfig& cfg,
               const std::string& model_type, const std::string& dtype, const std::string& source_config,
               int64_t max_shard_bytes = int64_t(5) << 30);

// Which part of the model a rank writes in a collective export: ep ranks hold the experts between them
// (ep_rank's 1/ep of each expert tensor); writer marks one rank per ep rank (the first replica). World rank 0 must
// be the writer of ep rank 0: it also writes the replicated tensors, the index and config.json.
struct ExportLayout {
    int ep = 1, ep_rank = 0;
    bool writer = true;
};
// The same, collective over world, from expert-parallel shards: each writer writes the files of its own experts
// (and ep rank 0 the replicated tensors), so no process ever holds more than its shard. Every tensor's name, shape
// and bytes are those of a single-process export of the whole model; the split into files follows the ranks.
void export_hf(const std::string& out_dir, const model::ParamStore& store, const model::ModelConfig& cfg,
               const std::string& model_type, const std::string& dtype, const std::string& source_config,
               parallel::Communicator& world, ExportLayout layout, int64_t max_shard_bytes = int64_t(5) << 30);

}  // namespace frugal::checkpoint
