// Hugging Face checkpoints <-> Frugal parameters, for the families Frugal's model expresses exactly: qwen3_moe and
// mixtral (qwen2_moe's gated shared expert, olmoe's full-projection QK-norm, MLA and attention biases are refused
// by name until the model has them).
//
// Tensor names (L layer, e expert):
//   embed.weight                      model.embed_tokens.weight
//   layers.L.attn_norm.weight         model.layers.L.input_layernorm.weight
//   layers.L.attn.{wq,wk,wv,wo}.weight  model.layers.L.self_attn.{q,k,v,o}_proj.weight
//   layers.L.attn.{q,k}_norm.weight   model.layers.L.self_attn.{q,k}_norm.weight            (qwen3_moe)
//   layers.L.ffn_norm.weight          model.layers.L.post_attention_layernorm.weight
//   layers.L.moe.router.weight        model.layers.L.mlp.gate.weight | block_sparse_moe.gate.weight
//   layers.L.moe.experts.w13[e]       rows [0, F): gate = mlp.experts.e.gate_proj | block_sparse_moe.experts.e.w1
//                                     rows [F, 2F): up  = mlp.experts.e.up_proj   | block_sparse_moe.experts.e.w3
//   layers.L.moe.experts.w2[e]        down = mlp.experts.e.down_proj | block_sparse_moe.experts.e.w2
//   final_norm.weight                 model.norm.weight
//   head.weight                       lm_head.weight (absent when tie_word_embeddings)
// Both families use the rotate-half RoPE convention Frugal uses, so no tensor is permuted.
#pragma once

#include <string>

#include "model/config.h"
#include "model/params.h"

namespace frugal::checkpoint {

// Throws ConfigError naming the field when the family or one of its settings cannot be imported exactly.
void check_importable(const std::string& hf_dir);

// Fills every parameter of store (float, possibly an expert shard) from the safetensors of hf_dir (single file or
// sharded with model.safetensors.index.json). Each rank reads only its own experts' tensors.
void load_hf_weights(const std::string& hf_dir, model::ParamStore& store, const model::ModelConfig& cfg);

// Writes config.json (from source_config when given, else generated for model_type), sharded safetensors with
// model.safetensors.index.json (shards of at most max_shard_bytes), in "bf16" or "f32". store holds all experts.
void export_hf(const std::string& out_dir, const model::ParamStore& store, const model::ModelConfig& cfg,
               const std::string& model_type, const std::string& dtype, const std::string& source_config,
               int64_t max_shard_bytes = int64_t(5) << 30);

}  // namespace frugal::checkpoint
