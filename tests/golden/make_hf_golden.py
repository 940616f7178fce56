#!/usr/bin/env python3
"""Golden data for Hugging Face import: tiny randomly initialized models of each importable family, made and run by
`transformers` (PyPI; only here, the test suite needs neither it nor torch).

    pip install torch transformers
    python3 tests/golden/make_hf_golden.py [FAMILY ...]      (no FAMILY: all of them)

For qwen3_moe, qwen2_moe, mixtral, olmoe, deepseek_v3, deepseek_v2, glm4_moe and dots1 it writes
tests/golden/hf/FAMILY/ (config.json and model.safetensors in float32, from save_pretrained) and
tests/golden/hf/FAMILY.golden (the FRGLGOLD named-tensor file of tests/golden/tensor_file.h): the batch (`tokens`,
`targets`), the logits, the mean cross-entropy over the non-ignored targets (`loss`) and the gradient of that loss
for every parameter, under its Frugal name (`grad/NAME`).

DeepSeek lays each head's rotary query/key values out in interleaved pairs (rope_interleave); Frugal rotates
halves, so the import reorders those rows of q_proj / q_b_proj / kv_a_proj_with_mqa (evens, then odds) and the
golden gradients are reordered the same way. The routers' e_score_correction_bias buffers are drawn away from zero
so that they change which experts are chosen. transformers has no multi-token-prediction layers: the models are
saved with num_nextn_predict_layers 0.
"""
import os

import numpy as np
import torch
import torch.nn.functional as F
from transformers import (DeepseekV2Config, DeepseekV2ForCausalLM, DeepseekV3Config, DeepseekV3ForCausalLM,
                          Dots1Config, Dots1ForCausalLM, Glm4MoeConfig, Glm4MoeForCausalLM, MixtralConfig,
                          MixtralForCausalLM, OlmoeConfig, OlmoeForCausalLM, Qwen2MoeConfig, Qwen2MoeForCausalLM,
                          Qwen3MoeConfig, Qwen3MoeForCausalLM)

from golden_io import write  # tests/golden/golden_io.py

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hf")


def frugal_name(hf):
    """Frugal's name of a transformers parameter (the in-memory names: experts fused as gate_up_proj [E, 2F, D],
    gate rows first, and down_proj [E, D, F], which is Frugal's w13 / w2 layout). The shared expert's gate_proj
    and up_proj are two halves of Frugal's shared.w13: both map to it, with the row half they fill."""
    if hf == "model.embed_tokens.weight":
        return "embed.weight"
    if hf == "model.norm.weight":
        return "final_norm.weight"
    if hf == "lm_head.weight":
        return "head.weight"
    parts = hf.split(".")
    layer, rest = parts[2], ".".join(parts[3:])
    table = {
        "input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
        "self_attn.q_proj.weight": "attn.wq.weight", "self_attn.k_proj.weight": "attn.wk.weight",
        "self_attn.v_proj.weight": "attn.wv.weight", "self_attn.o_proj.weight": "attn.wo.weight",
        "self_attn.q_norm.weight": "attn.q_norm.weight", "self_attn.k_norm.weight": "attn.k_norm.weight",
        "mlp.gate.weight": "moe.router.weight", "mlp.experts.gate_up_proj": "moe.experts.w13",
        "mlp.experts.down_proj": "moe.experts.w2",
        "self_attn.q_proj.bias": "attn.wq.bias", "self_attn.k_proj.bias": "attn.wk.bias",
        "self_attn.v_proj.bias": "attn.wv.bias", "mlp.shared_expert_gate.weight": "moe.shared_gate.weight",
        "mlp.shared_expert.gate_proj.weight": "moe.shared.w13.weight",
        "mlp.shared_expert.up_proj.weight": "moe.shared.w13.weight",
        "mlp.shared_expert.down_proj.weight": "moe.shared.w2.weight",
        "mlp.shared_experts.gate_proj.weight": "moe.shared.w13.weight",
        "mlp.shared_experts.up_proj.weight": "moe.shared.w13.weight",
        "mlp.shared_experts.down_proj.weight": "moe.shared.w2.weight",
        "mlp.gate_proj.weight": "mlp.w13.weight", "mlp.up_proj.weight": "mlp.w13.weight",
        "mlp.down_proj.weight": "mlp.w2.weight",
        "self_attn.q_a_proj.weight": "attn.wq_a.weight", "self_attn.q_a_layernorm.weight": "attn.q_a_norm.weight",
        "self_attn.q_b_proj.weight": "attn.wq_b.weight", "self_attn.kv_a_proj_with_mqa.weight": "attn.wkv_a.weight",
        "self_attn.kv_a_layernorm.weight": "attn.kv_a_norm.weight", "self_attn.kv_b_proj.weight": "attn.wkv_b.weight",
    }
    return "layers." + layer + "." + table[rest]


def rope_rows(config, hf):
    """The rows of an MLA weight that hold interleaved rotary values, in Frugal's order (evens, then odds of each
    head's rope part), or None when the tensor has none or the family does not interleave."""
    if not hasattr(config, "kv_lora_rank") or not getattr(config, "rope_interleave", True):
        return None
    nope, rope, h = config.qk_nope_head_dim, config.qk_rope_head_dim, config.num_attention_heads
    half = list(range(0, rope, 2)) + list(range(1, rope, 2))
    if hf.endswith("self_attn.q_proj.weight") or hf.endswith("self_attn.q_b_proj.weight"):
        order = []
        for head in range(h):
            base = head * (nope + rope)
            order += list(range(base, base + nope)) + [base + nope + i for i in half]
        return order
    if hf.endswith("self_attn.kv_a_proj_with_mqa.weight"):
        r = config.kv_lora_rank
        return list(range(r)) + [r + i for i in half]
    return None


def set_router_biases(model):
    """e_score_correction_bias away from zero: it then changes the experts chosen (not their weights)."""
    with torch.no_grad():
        for n, b in model.named_buffers():
            if n.endswith("e_score_correction_bias"):
                b.copy_(0.05 * torch.randn_like(b))


def perturb(model):
    """RMSNorm weights away from 1 and biases away from 0, so their gradients matter."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n or n.endswith(".bias"):
                p.add_(0.1 * torch.randn_like(p))


def run(name, model):
    torch.manual_seed(1)
    out_dir = os.path.join(HERE, name)
    model.save_pretrained(out_dir, safe_serialization=True)
    b, s, v = 2, 10, model.config.vocab_size
    g = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, v, (b, s), generator=g)
    targets = torch.randint(0, v, (b, s), generator=g)
    targets[0, 3] = -100
    logits = model(input_ids=tokens).logits
    loss = F.cross_entropy(logits.reshape(-1, v).double(), targets.reshape(-1), ignore_index=-100)
    loss.backward()
    out = {"tokens": tokens.double().numpy(), "targets": targets.double().numpy(),
           "logits": logits.detach().double().reshape(b * s, v).numpy(), "loss": np.array([loss.item()])}
    for pname, p in model.named_parameters():
        key, g = "grad/" + frugal_name(pname), p.grad.double().numpy()
        order = rope_rows(model.config, pname)
        if order is not None:
            g = g[order]
        if pname.endswith("up_proj.weight") and ".experts." not in pname:  # second half of w13, after gate_proj
            out[key] = np.concatenate([out[key], g], axis=0)
        else:
            out[key] = g
    write(os.path.join(HERE, name + ".golden"), out)
    print(name, "loss", loss.item())


def main(only):
    os.makedirs(HERE, exist_ok=True)
    if only:
        for name, model in new_families():
            if name in only:
                perturb(model)
                set_router_biases(model)
                run(name, model)
        check_export_loads(only)
        return
    torch.manual_seed(0)
    qwen = Qwen3MoeConfig(vocab_size=97, hidden_size=32, intermediate_size=64, moe_intermediate_size=24,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                          num_experts=4, num_experts_per_tok=2, norm_topk_prob=True, decoder_sparse_step=1,
                          mlp_only_layers=[], max_position_embeddings=64, rope_theta=10000.0,
                          tie_word_embeddings=False, attention_bias=False, use_sliding_window=False,
                          output_router_logits=False, torch_dtype="float32")
    m = Qwen3MoeForCausalLM(qwen).float()
    perturb(m)
    run("qwen3_moe", m)
    torch.manual_seed(0)
    qwen2 = Qwen2MoeConfig(vocab_size=97, hidden_size=32, intermediate_size=64, moe_intermediate_size=24,
                           shared_expert_intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, num_experts=4, num_experts_per_tok=2, norm_topk_prob=False,
                           decoder_sparse_step=1, mlp_only_layers=[], max_position_embeddings=64,
                           rope_theta=10000.0, tie_word_embeddings=False, use_sliding_window=False,
                           output_router_logits=False, torch_dtype="float32")
    m = Qwen2MoeForCausalLM(qwen2).float()
    perturb(m)
    run("qwen2_moe", m)
    torch.manual_seed(0)
    olmoe = OlmoeConfig(vocab_size=97, hidden_size=32, intermediate_size=24, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, num_experts=4, num_experts_per_tok=2,
                        norm_topk_prob=False, max_position_embeddings=64, rope_theta=10000.0,
                        tie_word_embeddings=False, clip_qkv=None, output_router_logits=False,
                        torch_dtype="float32")
    m = OlmoeForCausalLM(olmoe).float()
    perturb(m)
    run("olmoe", m)
    torch.manual_seed(0)
    mix = MixtralConfig(vocab_size=97, hidden_size=32, intermediate_size=24, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
                        max_position_embeddings=64, rope_theta=10000.0, tie_word_embeddings=False,
                        sliding_window=None, output_router_logits=False, torch_dtype="float32")
    m = MixtralForCausalLM(mix).float()
    run("mixtral", m)
    for name, model in new_families():
        perturb(model)
        set_router_biases(model)
        run(name, model)
    check_export_loads(None)


def new_families():
    """deepseek_v3 (query compression, YaRN, group-limited sigmoid routing with a correction bias, a dense first
    layer, a shared expert, interleaved rope), deepseek_v2 (no query compression, group_limited_greedy softmax
    routing; top-3 of 2 groups, as with top-2 the best group maxima always hold the two best experts), glm4_moe
    (half-rotary heads, QKV biases, per-head QK-norm, groups) and dots1 (per-head QK-norm, sigmoid routing with a
    bias, one group)."""
    torch.manual_seed(0)
    yarn = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 16,
            "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0}
    v3 = DeepseekV3Config(vocab_size=97, hidden_size=32, intermediate_size=64, moe_intermediate_size=16,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, n_shared_experts=1,
                          n_routed_experts=8, routed_scaling_factor=2.5, kv_lora_rank=16, q_lora_rank=24,
                          qk_rope_head_dim=4, v_head_dim=8, qk_nope_head_dim=8, n_group=4, topk_group=2,
                          num_experts_per_tok=2, first_k_dense_replace=1, norm_topk_prob=True,
                          max_position_embeddings=64, rope_parameters=yarn, rope_interleave=True, num_mtp_layers=0,
                          tie_word_embeddings=False, torch_dtype="float32")
    yield "deepseek_v3", DeepseekV3ForCausalLM(v3).float()
    torch.manual_seed(0)
    v2 = DeepseekV2Config(vocab_size=97, hidden_size=32, intermediate_size=64, moe_intermediate_size=16,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, n_shared_experts=2,
                          n_routed_experts=8, routed_scaling_factor=1.5, kv_lora_rank=16, q_lora_rank=None,
                          qk_rope_head_dim=4, v_head_dim=8, qk_nope_head_dim=8, n_group=4, topk_group=2,
                          topk_method="group_limited_greedy", num_experts_per_tok=3, first_k_dense_replace=1,
                          norm_topk_prob=False, max_position_embeddings=64,
                          rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, tie_word_embeddings=False,
                          torch_dtype="float32")
    yield "deepseek_v2", DeepseekV2ForCausalLM(v2).float()
    torch.manual_seed(0)
    glm = Glm4MoeConfig(vocab_size=97, hidden_size=32, intermediate_size=64, moe_intermediate_size=16,
                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                        n_shared_experts=1, n_routed_experts=8, routed_scaling_factor=1.8, n_group=2, topk_group=1,
                        num_experts_per_tok=2, first_k_dense_replace=1, norm_topk_prob=True, use_qk_norm=True,
                        attention_bias=True, max_position_embeddings=64,
                        rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                         "partial_rotary_factor": 0.5},
                        num_mtp_layers=0, tie_word_embeddings=False, torch_dtype="float32")
    yield "glm4_moe", Glm4MoeForCausalLM(glm).float()
    torch.manual_seed(0)
    dots = Dots1Config(vocab_size=97, hidden_size=32, intermediate_size=64, moe_intermediate_size=16,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                       n_shared_experts=1, n_routed_experts=8, routed_scaling_factor=2.0, n_group=1, topk_group=1,
                       num_experts_per_tok=2, first_k_dense_replace=1, norm_topk_prob=True,
                       max_position_embeddings=64, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                       sliding_window=None, tie_word_embeddings=False, torch_dtype="float32")
    yield "dots1", Dots1ForCausalLM(dots).float()


def check_export_loads(only):
    """With build/frugal (or $FRUGAL) present: import each model, export it again (config.json generated by
    Frugal), load the
    export with transformers and check it gives the same logits (the C++ tests check the round trip bit for
    bit)."""
    import subprocess
    import tempfile
    frugal = os.environ.get("FRUGAL", os.path.join(os.path.dirname(HERE), "..", "..", "build", "frugal"))
    if not os.path.exists(frugal):
        print("build/frugal not found: export check skipped")
        return
    for name, cls in (("qwen3_moe", Qwen3MoeForCausalLM), ("qwen2_moe", Qwen2MoeForCausalLM),
                      ("mixtral", MixtralForCausalLM), ("olmoe", OlmoeForCausalLM),
                      ("deepseek_v3", DeepseekV3ForCausalLM), ("deepseek_v2", DeepseekV2ForCausalLM),
                      ("glm4_moe", Glm4MoeForCausalLM), ("dots1", Dots1ForCausalLM)):
        if only and name not in only:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(HERE, name)
            subprocess.run([frugal, "import-hf", src, "--out", os.path.join(tmp, "m.h5")], check=True)
            # No --config: the config.json is Frugal's own, generated from the model, and must load as it is.
            subprocess.run([frugal, "export-hf", os.path.join(tmp, "m.h5"), "--out", os.path.join(tmp, "hf"),
                            "--dtype", "f32"], check=True)
            a, b = cls.from_pretrained(src).eval(), cls.from_pretrained(os.path.join(tmp, "hf")).eval()
            x = torch.randint(0, a.config.vocab_size, (2, 10))
            with torch.no_grad():
                diff = (a(x).logits - b(x).logits).abs().max().item()
            print(name, "export loads in transformers, max logit difference", diff)
            assert diff == 0.0


if __name__ == "__main__":
    import sys
    main(sys.argv[1:])
