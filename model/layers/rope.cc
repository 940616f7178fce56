// Rotary frequencies, plain and YaRN-scaled (YaRN: Peng et al. 2023, "YaRN: Efficient Context Window Extension of
// Large Language Models", section 3.2 "NTK-by-parts" with the ramp over rotation counts), computed the way
// transformers' _compute_yarn_parameters does (modeling_rope_utils.py), in double instead of float32.
#include <algorithm>
#include <cmath>

#include "model/layers/common.h"

namespace frugal::model {

namespace {
// The dimension index whose wavelength makes num_rotations turns over max_pos positions (YaRN eq. 17).
double correction_dim(double num_rotations, double dim, double base, double max_pos) {
    return dim * std::log(max_pos / (num_rotations * 2.0 * M_PI)) / (2.0 * std::log(base));
}
}  // namespace

std::vector<double> rope_inv_freq(const ModelConfig& cfg) {
    const int64_t rot = cfg.rope_dim();
    std::vector<double> plain = RopeTable<double>::plain_inv_freq(rot, cfg.rope_theta);
    if (cfg.rope_scaling != "yarn") return plain;
    const double factor = cfg.rope_factor;
    const double original = double(cfg.rope_original_max_seq_len > 0 ? cfg.rope_original_max_seq_len : cfg.max_seq_len);
    // The ramp between the dims that rotate more than beta_fast times (kept: extrapolation) and fewer than
    // beta_slow times (divided by factor: interpolation), bounds floored/ceiled as transformers truncates them.
    double low = std::floor(correction_dim(cfg.yarn_beta_fast, double(rot), cfg.rope_theta, original));
    double high = std::ceil(correction_dim(cfg.yarn_beta_slow, double(rot), cfg.rope_theta, original));
    low = std::max(low, 0.0);
    high = std::min(high, double(rot - 1));
    if (low == high) high += 0.001;  // no singular ramp
    std::vector<double> out(plain.size());
    for (size_t j = 0; j < plain.size(); ++j) {
        const double ramp = std::clamp((double(j) - low) / (high - low), 0.0, 1.0);
        const double extrapolation = 1.0 - ramp;  // weight of the unscaled frequency
        out[j] = plain[j] / factor * (1.0 - extrapolation) + plain[j] * extrapolation;
    }
    return out;
}

}  // namespace frugal::model
