#include "accounting/estimate.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <iomanip>
#include <numeric>
#include <sstream>

#include "accounting/cpu_peak.h"
#include "core/error.h"
#include "core/json.h"

namespace frugal::accounting {

double parse_count(const std::string& text, const std::string& what) {
    FRUGAL_CONFIG_CHECK(!text.empty(), what, ": empty value");
    double mult = 1;
    std::string num = text;
    switch (std::toupper(static_cast<unsigned char>(text.back()))) {
        case 'K':
            mult = 1e3;
            break;
        case 'M':
            mult = 1e6;
            break;
        case 'B':
        case 'G':
            mult = 1e9;
            break;
        case 'T':
            mult = 1e12;
            break;
        default:
            mult = 0;
    }
    if (mult != 0)
        num = text.substr(0, text.size() - 1);
    else
        mult = 1;
    char* end = nullptr;
    const double v = std::strtod(num.c_str(), &end);
    FRUGAL_CONFIG_CHECK(!num.empty() && *end == '\0' && std::isfinite(v), what, " '", text,
                        "' is not a number: write e.g. 14.8T, 180K, 2.5e9 (suffixes K, M, B, T)");
    FRUGAL_CONFIG_CHECK(v > 0, what, " '", text, "' must be positive");
    return v * mult;
}

int64_t whole_count(double v, const std::string& what, int64_t max) {
    FRUGAL_CONFIG_CHECK(v >= 1 && v <= double(max) && v == std::floor(v), what, " ", v,
                        " must be a whole number in [1, ", max, "]");
    return int64_t(v);
}

namespace {
// The divisors of n that are at most limit, as "1, 2, 4".
std::string divisors(int64_t n, int64_t limit) {
    std::string out;
    for (int64_t d = 1; d <= n && d <= limit; ++d)
        if (n % d == 0) out += (out.empty() ? "" : ", ") + std::to_string(d);
    return out;
}
}  // namespace

void check_layout(const EstimateInput& in) {
    const model::ModelConfig& m = in.model;
    FRUGAL_CONFIG_CHECK(in.tp >= 1 && in.pp >= 1 && in.ep >= 1 && in.gpus >= 1, "--tp ", in.tp, ", --pp ", in.pp,
                        ", --ep ", in.ep, " and --gpus ", in.gpus, " must be at least 1");
    FRUGAL_CONFIG_CHECK(m.n_heads % in.tp == 0, "--tp ", in.tp, " must divide the model's ", m.n_heads,
                        " attention heads (each tensor-parallel rank holds whole heads): use --tp ",
                        divisors(m.n_heads, in.gpus));
    FRUGAL_CONFIG_CHECK(in.pp <= m.n_layers, "--pp ", in.pp, " exceeds the model's ", m.n_layers,
                        " layers (each pipeline stage holds at least one): use --pp 1 to ", m.n_layers);
    const int64_t experts = m.moe.n_experts;
    FRUGAL_CONFIG_CHECK(in.ep == 1 || (experts > 0 && experts % in.ep == 0), "--ep ", in.ep, " must divide the ",
                        experts, " routed experts: use --ep ", experts > 0 ? divisors(experts, in.gpus) : "1");
    const int64_t mp = in.tp * in.pp;
    FRUGAL_CONFIG_CHECK(mp <= in.gpus && in.gpus % mp == 0, "--gpus ", in.gpus,
                        " is not a multiple of the model-parallel size --tp x --pp = ", in.tp, " x ", in.pp, " = ", mp,
                        ": use --gpus ", mp, ", ", 2 * mp, ", ", 4 * mp, ", ... or a tp x pp dividing ", in.gpus);
    const int64_t dp = in.gpus / mp;
    FRUGAL_CONFIG_CHECK(dp % in.ep == 0, "--ep ", in.ep, " must divide the ", dp, " data-parallel ranks (--gpus ",
                        in.gpus, " / (tp x pp = ", mp,
                        ")): experts are spread over "
                        "data-parallel ranks, so tp x pp x ep = ",
                        mp * in.ep, " must divide the GPUs; use --ep ",
                        divisors(std::gcd(dp, experts > 0 ? experts : 1), dp));
}

Estimate estimate(const EstimateInput& in) {
    check_layout(in);
    Estimate e;
    const model::ModelConfig& m = in.model;
    const int64_t seq = in.seq_len > 0 ? in.seq_len : m.max_seq_len;
    e.params = count_params(m);
    e.mtp_params = mtp_params(m);
    e.flops_per_token = training_flops_per_token(m, seq);
    e.total_flops = e.flops_per_token * in.tokens;
    const PeakFigure peak_figure = device_peak(in.device, in.fp8);
    e.peak_tflops = peak_figure.tflops;
    e.peak_source = peak_figure.source;
    const double peak = e.peak_tflops * 1e12;
    if (in.mfu > 0) {
        FRUGAL_CONFIG_CHECK(peak > 0, "--mfu needs a device peak; ", in.device.key, " has none for this precision");
        e.tokens_per_gpu_second = in.mfu * peak / e.flops_per_token;
    } else if (in.gpu_hours_per_trillion > 0) {
        e.tokens_per_gpu_second = 1e12 / (in.gpu_hours_per_trillion * 3600.0);
    } else {
        e.tokens_per_gpu_second = in.tokens_per_gpu_second;
    }
    FRUGAL_CONFIG_CHECK(e.tokens_per_gpu_second > 0,
                        "give the throughput: --mfu X, --gpu-hours-per-trillion-tokens X, --tokens-per-gpu-second X "
                        "or --from-run RUN_DIR");
    e.gpu_hours = in.tokens / e.tokens_per_gpu_second / 3600.0;
    e.wall_days = e.gpu_hours / double(in.gpus) / 24.0;
    e.cost_usd = e.gpu_hours * (in.price_per_hour > 0 ? in.price_per_hour : in.device.price_per_hour);
    e.mfu = peak > 0 ? e.tokens_per_gpu_second * e.flops_per_token / peak : 0;

    // Memory per GPU. Parameters: replicated ones split by tensor and pipeline parallelism, experts also by expert
    // parallelism. Bytes per parameter (mixed precision): BF16 weights 2, FP32 gradients 4, FP32 master weights and
    // two FP32 moments 12 (about 18 in all; ZeRO paper, arXiv 1910.02054). ZeRO stage z shards the optimizer (z >= 1),
    // the gradients (z >= 2) and the weights (z >= 3) over the group that replicates them, as parallel.zero does: the
    // replicated parameters over the data-parallel group (dp ranks), the experts over the expert-data-parallel
    // group (dp / ep ranks: the other ep ranks hold other experts).
    const double expert_params = routed_expert_params(m);
    const double dense_params = e.params.total - expert_params;
    const double dense_gpu = dense_params / double(in.tp * in.pp);
    const double expert_gpu = expert_params / double(in.ep * in.tp * in.pp);
    const double dp = std::max(1.0, double(in.gpus) / double(in.tp * in.pp));
    const double edp = std::max(1.0, dp / double(in.ep));
    auto per_gpu = [&](int64_t stage) {
        return in.zero >= stage ? dense_gpu / dp + expert_gpu / edp : dense_gpu + expert_gpu;
    };
    e.mem_weights = 2.0 * per_gpu(3);
    e.mem_grads = 4.0 * per_gpu(2);
    e.mem_optimizer = 12.0 * per_gpu(1);
    // Activations of one sequence per layer without recomputation, 16-bit (Korthikanti et al., arXiv 2205.05198):
    // s h (34 + 5 a s / h) bytes; the 5 a s / h term is the stored attention-score matrix, which a fused
    // (flash) attention kernel does not keep, so it is counted only with flash_attention = false. Split by tensor
    // parallelism; with a 1F1B pipeline the first stage keeps pp micro-batches of its n_layers / pp layers in
    // flight, i.e. n_layers layers' worth.
    const double s = double(seq), h = double(m.d_model), a = double(m.n_heads);
    const double per_token = 34.0 + (in.flash_attention ? 0.0 : 5.0 * a * s / h);
    e.mem_activations = double(m.n_layers) * s * h * per_token / double(in.tp);
    e.mem_total = e.mem_weights + e.mem_grads + e.mem_optimizer + e.mem_activations;
    e.mem_capacity = in.device.memory_gb * 1e9;
    e.fits = e.mem_capacity <= 0 || e.mem_total <= e.mem_capacity;
    return e;
}

namespace {
// Elements every layer keeps for one micro-batch. Each layer owns its forward buffers (what its backward reads) and
// its backward scratch, and keeps both from step to step, so all layers count at once. Legend: n = b s tokens,
// d model dim, qw = heads x head_dim, kw = kv_heads x head_dim, f dense width, E experts, K top-k,
// R = n K routed rows on this rank (balanced routing: with expert parallelism a rank receives n K rows on average),
// fe expert width, fs shared width. In the spirit of Korthikanti et al. (arXiv 2205.05198, section 4), whose
// s b h (34 + 5 a s / h) bytes counts the same tensors in 16 bits; here every tensor is FP32, the attention
// probabilities b Hq s^2 are stored (no fused kernel), and each saved tensor has a gradient twin.
//   block     n1, h_mid, n2, h_next 4 n d, rstd 2 n
//   attention q, att 2 n qw; k, v 2 n kw; probs b Hq s^2; QK-norm inputs n (qw + kw); the same again for their
//             gradients (not probs: its gradient is an [s, s] scratch per thread)
//   dense FFN gate|up 2 n f, hidden n f, and their gradients
//   MoE       router logits, scores, sort keys (FP64) 4 n E and gradients 2 n E; experts 3 R fe and gradients;
//             rows R d (dispatch), R d (expert outputs), with expert parallelism 2 R d more (received, sent back);
//             gradients 2 R d (+ 2 R d); shared experts as a dense FFN of width fs (+ 2 n d with the gate)
//   model     embedding out, final norm, scratch 3 n d; logits n V; and gradients 2 n d + n V
// A non-FP32 recipe (precision/recipe.cc) keeps, in each Linear of a low-precision role, an FP32 copy of its rounded
// weight in out (cached for the optimizer step), and one operand scratch per calling thread shared by all of them,
// as large as the largest call needs: the rounded input n in, and when training the output gradient n out and
// (fp8-blockwise) a second rounding of the input n in.
// fp8-tensorwise and fp8-delayed keep the rounded input and output gradient in each Linear instead.
struct ActivationCount {
    const RankMemoryInput& in;
    double total = 0;
    double scratch = 0;  // the low-precision operand scratch: the largest of any call

    bool low(const std::string& role) const {
        for (const std::string& r : in.low_precision_roles)
            if (r == role) return true;
        return false;
    }
    // A Linear of `role` with n rows, in -> out; weights: how many weight matrices share its scratch.
    void linear(const std::string& role, double n, double in_w, double out_w, double weights = 1) {
        if (!low(role)) return;
        total += weights * in_w * out_w;
        const double operands = n * in_w + (in.backward ? n * out_w + (in.blockwise ? n * in_w : 0.0) : 0.0);
        if (in.per_layer_operands)
            total += operands;
        else
            scratch = std::max(scratch, operands);
    }
    // Forward buffers fwd, and as many again for the gradient when training (grad = the gradient's share).
    void saved(double fwd, double grad) { total += fwd + (in.backward ? grad : 0.0); }
    void ffn(const std::string& role, double n, double d, double f) {
        saved(3 * n * f, 3 * n * f);
        linear(role, n, d, 2 * f);
        linear(role, n, f, d);
    }
};
}  // namespace

RankMemory rank_memory(const RankMemoryInput& in) {
    const model::ModelConfig& m = in.model;
    const double ep = double(std::max<int64_t>(in.ep, 1));
    const double experts = routed_expert_params(m);
    const double local = count_params(m).total - experts + experts / ep;
    RankMemory r;
    r.params = 4.0 * local;
    r.grads = in.with_grads ? 4.0 * local : 0.0;
    const double sharded = (count_params(m).total - experts) / double(std::max<int64_t>(in.zero_dp, 1)) +
                           experts / ep / double(std::max<int64_t>(in.zero_edp, 1));
    r.optimizer = in.with_optimizer ? (in.bf16_moments ? 2.0 : 4.0) * 2.0 * sharded : 0.0;
    if (in.micro_batch <= 0 || in.seq_len <= 0) return r;

    const double b = double(in.micro_batch), s = double(in.seq_len), n = b * s, d = double(m.d_model);
    const double hq = double(m.n_heads), qw = hq * double(m.hd()), kw = double(m.kv_heads()) * double(m.hd());
    const double v = double(m.vocab_size), k = double(m.moe.top_k), e = double(m.moe.n_experts);
    ActivationCount a{in};
    a.saved(3 * n * d + n * v + 6 * n, 2 * n * d + n * v);
    a.linear("head", n, d, v);
    for (int64_t l = 0; l < m.n_layers; ++l) {
        a.saved(4 * n * d + 2 * n, 0);
        const double qk_norm = m.qk_norm ? n * (qw + kw) : 0.0;
        a.saved(2 * n * qw + 2 * n * kw + b * hq * s * s + qk_norm, 2 * n * qw + 2 * n * kw + qk_norm);
        for (double out_w : {qw, kw, kw}) a.linear("attention", n, d, out_w);
        a.linear("attention", n, qw, d);
        if (!m.is_moe_layer(l)) {
            a.ffn("dense_ffn", n, d, double(m.d_ff));
            continue;
        }
        const double rows = n * k, fe = double(m.moe.d_expert), local_experts = e / ep;
        a.saved(4 * n * e + 5 * n * k, 2 * n * e + n * k);
        a.saved(3 * rows * fe + 2 * rows * d + (ep > 1 ? 2 * rows * d : 0.0),
                3 * rows * fe + 2 * rows * d + (ep > 1 ? 2 * rows * d : 0.0));
        a.linear("experts", rows, d, 2 * fe, local_experts);
        a.linear("experts", rows, fe, d, local_experts);
        if (m.moe.n_shared_experts > 0) {
            a.ffn("shared_experts", n, d, double(m.moe.n_shared_experts) * fe);
            if (m.moe.shared_expert_gate) a.saved(n * d + n, n * d + n);
        }
    }
    r.activations = 4.0 * (a.total + a.scratch);
    return r;
}

std::string format_rank_memory(const RankMemory& need) {
    std::ostringstream os;
    os << std::fixed << std::setprecision(2) << "params " << need.params / 1e9 << " GB, grads " << need.grads / 1e9
       << " GB, optimizer " << need.optimizer / 1e9 << " GB, activations " << need.activations / 1e9
       << " GB = " << need.total() / 1e9 << " GB";
    return os.str();
}

void check_rank_memory(const RankMemory& need, double available_per_rank, const std::string& what,
                       const std::string& fix) {
    if (available_per_rank < 0) return;
    std::ostringstream avail;
    avail << std::fixed << std::setprecision(2) << available_per_rank / 1e9;
    FRUGAL_CONFIG_CHECK(need.total() <= 0.9 * available_per_rank, what, " needs about ", format_rank_memory(need),
                        " per rank, more than 90% of the ", avail.str(), " GB available to each rank: ", fix);
}

namespace {
std::string human(double v) {
    std::ostringstream os;
    os << std::fixed << std::setprecision(2);
    if (v >= 1e12)
        os << v / 1e12 << "T";
    else if (v >= 1e9)
        os << v / 1e9 << "B";
    else if (v >= 1e6)
        os << v / 1e6 << "M";
    else if (v >= 1e3)
        os << v / 1e3 << "K";
    else
        os << v;
    return os.str();
}
}  // namespace

std::string format_estimate(const EstimateInput& in, const Estimate& e) {
    std::ostringstream os;
    os << std::fixed;
    os << "model                 " << in.model_label << "\n";
    os << "parameters            " << human(e.params.total) << " total, " << human(e.params.active)
       << " activated per token (" << human(e.params.active_no_embed) << " without embedding and head)";
    if (e.mtp_params > 0) os << "; multi-token prediction " << human(e.mtp_params) << " more";
    os << "\n";
    os << "FLOPs per token       " << human(e.flops_per_token) << " (training, 6 per matmul parameter + causal "
       << "attention at sequence length " << (in.seq_len > 0 ? in.seq_len : in.model.max_seq_len) << ")\n";
    os << "total FLOPs           " << std::scientific << std::setprecision(3) << e.total_flops << std::fixed << " for "
       << human(in.tokens) << " tokens\n";
    os << "throughput            " << std::setprecision(0) << e.tokens_per_gpu_second << " tokens per GPU-second\n";
    os << "GPU-hours             " << std::setprecision(0) << e.gpu_hours << " (" << human(e.gpu_hours) << ")\n";
    os << "wall clock            " << std::setprecision(1) << e.wall_days << " days on " << in.gpus << " x "
       << in.device.name << "\n";
    os << "cost                  $" << std::setprecision(0) << e.cost_usd << " at $" << std::setprecision(2)
       << (in.price_per_hour > 0 ? in.price_per_hour : in.device.price_per_hour) << " per GPU-hour\n";
    os << "MFU                   " << std::setprecision(1) << 100 * e.mfu << "% of ";
    if (in.device.key == "cpu")
        os << std::setprecision(3) << e.peak_tflops << " TFLOP/s (" << e.peak_source << ")";
    else
        os << std::setprecision(0) << e.peak_tflops << " TFLOP/s (" << (in.fp8 ? "FP8" : "BF16") << " dense peak)";
    if (in.mfu <= 0) os << ", implied";
    os << "\n";
    os << "memory per GPU        " << std::setprecision(1) << e.mem_total / 1e9 << " GB = weights "
       << e.mem_weights / 1e9 << " + gradients " << e.mem_grads / 1e9 << " + optimizer " << e.mem_optimizer / 1e9
       << " + activations " << e.mem_activations / 1e9 << " (ep " << in.ep << ", pp " << in.pp << ", tp " << in.tp
       << ", ZeRO " << in.zero << ")";
    if (!e.fits)
        os << "\nwarning: " << std::setprecision(1) << e.mem_total / 1e9 << " GB does not fit in the " << in.device.name
           << "'s " << in.device.memory_gb << " GB: raise --ep, --pp or --tp, or use --zero 2 or 3";
    os << "\n";
    return os.str();
}

std::string estimate_json(const EstimateInput& in, const Estimate& e) {
    JsonWriter w;
    w.begin_object()
        .field("model", in.model_label)
        .field("total_params", e.params.total)
        .field("active_params", e.params.active)
        .field("active_params_without_embeddings", e.params.active_no_embed)
        .field("mtp_params", e.mtp_params)
        .field("flops_per_token", e.flops_per_token)
        .field("total_flops", e.total_flops)
        .field("tokens", in.tokens)
        .field("gpu", in.device.key)
        .field("gpus", in.gpus)
        .field("tokens_per_gpu_second", e.tokens_per_gpu_second)
        .field("gpu_hours", e.gpu_hours)
        .field("wall_days", e.wall_days)
        .field("cost_usd", e.cost_usd)
        .field("mfu", e.mfu)
        .field("peak_tflops", e.peak_tflops)
        .field("peak_source", e.peak_source);
    w.key("memory_per_gpu_bytes")
        .begin_object()
        .field("weights", e.mem_weights)
        .field("gradients", e.mem_grads)
        .field("optimizer", e.mem_optimizer)
        .field("activations", e.mem_activations)
        .field("total", e.mem_total)
        .field("capacity", e.mem_capacity)
        .end_object();
    return w.field("fits", e.fits).end_object().str();
}

}  // namespace frugal::accounting
