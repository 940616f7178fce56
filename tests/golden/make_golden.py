#!/usr/bin/env python3
"""Golden reference for Frugal's model: the same tiny MoE transformers written independently in PyTorch.

How the committed files were made (run from the repository root after `make build`):

    build/tests/golden_export tests/golden/tiny_inputs.bin        # Frugal's initialized weights, batch, config
    pip install torch numpy                                        # only here: the test suite needs neither
    python3 tests/golden/make_golden.py tests/golden/tiny_inputs.bin tests/golden/tiny_golden.bin

The output holds, for every case, the inputs it was computed from (weights, expert biases, tokens, targets) plus
the logits, the total loss (mean cross-entropy over non-ignored targets + balancing loss + z-loss of every MoE
layer) and the gradient of that loss for every parameter, all in float64. tests/model/test_golden.cc loads the
weights into Frugal, runs forward and backward in double and in float, and compares.

The PyTorch model is written from the published definitions, not from Frugal's code: HF-style rotate-half RoPE,
per-head RMSNorm on q/k (Qwen3), grouped-query attention through scaled_dot_product_attention, SwiGLU, routing by
top-k on score + bias with weights from the unbiased scores (DeepSeek-V3 section 2.1.2), the Switch/GShard
batch-level balancing loss or DeepSeek-V3's sequence-wise one, and the ST-MoE z-loss. Experts run densely over a
mask, so no permutation code is shared with Frugal.
"""
import sys

import numpy as np
import torch
import torch.nn.functional as F

from golden_io import read, write  # tests/golden/golden_io.py


def rmsnorm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope(x, theta):  # x: [B, H, S, hd], rotate-half convention
    hd, s = x.shape[-1], x.shape[-2]
    inv_freq = theta ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    ang = torch.arange(s, dtype=torch.float64)[:, None] * inv_freq[None, :]
    cos, sin = torch.cat([ang.cos(), ang.cos()], -1), torch.cat([ang.sin(), ang.sin()], -1)
    x1, x2 = x[..., : hd // 2], x[..., hd // 2 :]
    return x * cos + torch.cat([-x2, x1], -1) * sin


def swiglu(x, w13, w2):
    f = w13.shape[0] // 2
    h = x @ w13.T
    return (F.silu(h[..., :f]) * h[..., f:]) @ w2.T


def run_case(p, c, name):
    cfg = lambda k: float(p[f"{name}/cfg.{k}"][0])
    W = {k[len(name) + 1 :]: torch.tensor(v, requires_grad=True) for k, v in p.items()
         if k.startswith(name + "/") and not k.startswith(name + "/cfg.") and "expert_bias" not in k
         and not k.endswith("/tokens") and not k.endswith("/targets")}
    tokens = torch.tensor(p[f"{name}/tokens"], dtype=torch.long)
    targets = torch.tensor(p[f"{name}/targets"], dtype=torch.long)
    B, S = tokens.shape
    D, L = int(cfg("d_model")), int(cfg("n_layers"))
    Hq, Hkv, hd = int(cfg("n_heads")), int(cfg("n_kv_heads")), int(cfg("head_dim"))
    E, K = int(cfg("n_experts")), int(cfg("top_k"))
    eps = cfg("norm_eps")
    aux_total = torch.zeros((), dtype=torch.float64)

    h = W["embed.weight"][tokens]  # [B, S, D]
    for l in range(L):
        pre = f"layers.{l}."
        x = rmsnorm(h, W[pre + "attn_norm.weight"], eps)
        q = (x @ W[pre + "attn.wq.weight"].T).view(B, S, Hq, hd)
        k = (x @ W[pre + "attn.wk.weight"].T).view(B, S, Hkv, hd)
        v = (x @ W[pre + "attn.wv.weight"].T).view(B, S, Hkv, hd)
        if cfg("qk_norm"):
            q = rmsnorm(q, W[pre + "attn.q_norm.weight"], eps)
            k = rmsnorm(k, W[pre + "attn.k_norm.weight"], eps)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        q, k = rope(q, cfg("rope_theta")), rope(k, cfg("rope_theta"))
        k = k.repeat_interleave(Hq // Hkv, dim=1)
        v = v.repeat_interleave(Hq // Hkv, dim=1)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        h = h + a.transpose(1, 2).reshape(B, S, Hq * hd) @ W[pre + "attn.wo.weight"].T
        x = rmsnorm(h, W[pre + "ffn_norm.weight"], eps)
        if l < int(cfg("dense_layers")):
            h = h + swiglu(x, W[pre + "mlp.w13.weight"], W[pre + "mlp.w2.weight"])
            continue
        xt = x.reshape(B * S, D)
        logits = xt @ W[pre + "moe.router.weight"].T
        scores = torch.sigmoid(logits) if cfg("sigmoid") else torch.softmax(logits, -1)
        bias = torch.tensor(p[f"{name}/{pre}moe.expert_bias"])
        idx = torch.topk(scores.detach() + bias, K, dim=-1).indices
        w = scores.gather(1, idx)
        if cfg("norm_topk_prob"):
            w = w / w.sum(-1, keepdim=True)
        w = w * cfg("routed_scaling_factor")
        out = torch.zeros_like(xt)
        for e in range(E):
            gate = (w * (idx == e)).sum(-1, keepdim=True)  # 0 for tokens that did not choose e
            out = out + gate * swiglu(xt, W[pre + "moe.experts.w13"][e], W[pre + "moe.experts.w2"][e])
        if pre + "moe.shared.w13.weight" in W:
            out = out + swiglu(xt, W[pre + "moe.shared.w13.weight"], W[pre + "moe.shared.w2.weight"])
        h = h + out.view(B, S, D)
        # Balancing loss: E * sum_e f_e P_e per group (the batch, or each sequence), f_e = share of the T*K
        # choices, P_e = mean normalized score; averaged over groups.
        coef = cfg("aux_loss_coef")
        if coef > 0:
            probs = scores / scores.sum(-1, keepdim=True)
            groups = B if cfg("aux_seq") else 1
            onehot = F.one_hot(idx, E).sum(1).double().view(groups, -1, E)
            pg = probs.view(groups, -1, E)
            f = onehot.sum(1) / (pg.shape[1] * K)
            P = pg.mean(1)
            aux_total = aux_total + coef * (E * (f * P).sum(-1)).mean()
        if cfg("z_loss_coef") > 0:
            aux_total = aux_total + cfg("z_loss_coef") * torch.logsumexp(logits, -1).pow(2).mean()
    x = rmsnorm(h, W["final_norm.weight"], eps)
    head = W["embed.weight"] if cfg("tie_embeddings") else W["head.weight"]
    logits = x @ head.T
    ce = F.cross_entropy(logits.view(B * S, -1), targets.view(-1), ignore_index=-100)
    loss = ce + aux_total
    loss.backward()
    out = {f"{name}/logits": logits.detach().view(B * S, -1).numpy(), f"{name}/loss": np.array([loss.item()])}
    for k, t in W.items():
        out[f"{name}/grad/{k}"] = t.grad.numpy()
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    p = read(sys.argv[1])
    cases = sorted({k.split("/")[0] for k in p})
    out = dict(p)
    for name in cases:
        out.update(run_case(p, None, name))
        print(f"case {name}: loss {out[name + '/loss'][0]:.12f}")
    write(sys.argv[2], out)


if __name__ == "__main__":
    torch.set_default_dtype(torch.float64)
    main()
