// Overflow-checked size arithmetic for parsers and config validation: a product of user-given sizes (tokens x
// dtype bytes, layers x experts x widths) must be refused, never wrapped. checked_mul returns false on overflow;
// mul_or_throw throws ConfigError naming what was being computed, the operands and the fix.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>

#include "core/error.h"

namespace frugal {

inline bool checked_mul(int64_t a, int64_t b, int64_t* out) { return !__builtin_mul_overflow(a, b, out); }
inline bool checked_mul(uint64_t a, uint64_t b, uint64_t* out) { return !__builtin_mul_overflow(a, b, out); }
inline bool checked_add(int64_t a, int64_t b, int64_t* out) { return !__builtin_add_overflow(a, b, out); }
inline bool checked_add(uint64_t a, uint64_t b, uint64_t* out) { return !__builtin_add_overflow(a, b, out); }

// The product of factors, or -1 when it passes limit (or overflows int64). Factors must be >= 0.
inline int64_t product_within(std::initializer_list<int64_t> factors, int64_t limit) {
    int64_t p = 1;
    for (int64_t f : factors)
        if (f < 0 || !checked_mul(p, f, &p) || p > limit) return -1;
    return p;
}

// The product of factors; throws ConfigError "<what> = <expr> exceeds <limit>: <fix>" when it passes limit.
inline int64_t mul_or_throw(std::initializer_list<int64_t> factors, int64_t limit, const std::string& what,
                            const std::string& fix) {
    const int64_t p = product_within(factors, limit);
    if (p < 0) {
        std::string expr;
        for (int64_t f : factors) expr += (expr.empty() ? "" : " x ") + std::to_string(f);
        FRUGAL_CONFIG_ERROR(what, " = ", expr, " exceeds ", limit, ": ", fix);
    }
    return p;
}

}  // namespace frugal
