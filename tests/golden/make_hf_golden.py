#!/usr/bin/env python3
"""Golden data for Hugging Face import: tiny randomly initialized models of each importable family, made and run by
`transformers` (PyPI; only here, the test suite needs neither it nor torch).

    pip install torch transformers
    python3 tests/golden/make_hf_golden.py

For qwen3_moe and mixtral it writes tests/golden/hf/FAMILY/ (config.json and model.safetensors in float32, from
save_pretrained) and tests/golden/hf/FAMILY.golden (the FRGLGOLD named-tensor file of tests/golden/tensor_file.h):
the batch (`tokens`, `targets`), the logits, the mean cross-entropy over the non-ignored targets (`loss`) and the
gradient of that loss for every parameter, under its Hugging Face name (`grad/NAME`).
"""
import os

import numpy as np
import torch
import torch.nn.functional as F
from transformers import MixtralConfig, MixtralForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM

from golden_io import write  # tests/golden/golden_io.py

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hf")


def frugal_name(hf):
    """Frugal's name of a transformers parameter (the in-memory names: experts fused as gate_up_proj [E, 2F, D],
    gate rows first, and down_proj [E, D, F], which is Frugal's w13 / w2 layout)."""
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
    }
    return "layers." + layer + "." + table[rest]


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
        out["grad/" + frugal_name(pname)] = p.grad.double().numpy()
    write(os.path.join(HERE, name + ".golden"), out)
    print(name, "loss", loss.item())


def main():
    os.makedirs(HERE, exist_ok=True)
    torch.manual_seed(0)
    qwen = Qwen3MoeConfig(vocab_size=97, hidden_size=32, intermediate_size=64, moe_intermediate_size=24,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                          num_experts=4, num_experts_per_tok=2, norm_topk_prob=True, decoder_sparse_step=1,
                          mlp_only_layers=[], max_position_embeddings=64, rope_theta=10000.0,
                          tie_word_embeddings=False, attention_bias=False, use_sliding_window=False,
                          output_router_logits=False, torch_dtype="float32")
    m = Qwen3MoeForCausalLM(qwen).float()
    with torch.no_grad():  # RMSNorm weights away from 1, so the norms' gradients matter
        for n, p in m.named_parameters():
            if "norm" in n:
                p.add_(0.1 * torch.randn_like(p))
    run("qwen3_moe", m)
    torch.manual_seed(0)
    mix = MixtralConfig(vocab_size=97, hidden_size=32, intermediate_size=24, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
                        max_position_embeddings=64, rope_theta=10000.0, tie_word_embeddings=False,
                        sliding_window=None, output_router_logits=False, torch_dtype="float32")
    m = MixtralForCausalLM(mix).float()
    run("mixtral", m)
    check_export_loads()


def check_export_loads():
    """With build/frugal present: import each model, export it again, load the export with transformers and check
    it gives the same logits (the C++ tests check the round trip bit for bit)."""
    import subprocess
    import tempfile
    frugal = os.path.join(os.path.dirname(HERE), "..", "..", "build", "frugal")
    if not os.path.exists(frugal):
        print("build/frugal not found: export check skipped")
        return
    for name, cls in (("qwen3_moe", Qwen3MoeForCausalLM), ("mixtral", MixtralForCausalLM)):
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(HERE, name)
            subprocess.run([frugal, "import-hf", src, "--out", os.path.join(tmp, "m.h5")], check=True)
            subprocess.run([frugal, "export-hf", os.path.join(tmp, "m.h5"), "--out", os.path.join(tmp, "hf"),
                            "--dtype", "f32", "--config", os.path.join(src, "config.json")], check=True)
            a, b = cls.from_pretrained(src).eval(), cls.from_pretrained(os.path.join(tmp, "hf")).eval()
            x = torch.randint(0, a.config.vocab_size, (2, 10))
            with torch.no_grad():
                diff = (a(x).logits - b(x).logits).abs().max().item()
            print(name, "export loads in transformers, max logit difference", diff)
            assert diff == 0.0


if __name__ == "__main__":
    main()
