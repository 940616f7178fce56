// The dispatcher's local steps on the CPU (layout in model/moe/dispatcher.h): the stable permutation of an MoE
// layer's token choices by expert, the row gather and its backward, and the weighted combine and its backward.
//
// Legend: T tokens, K choices per token, E experts, R kept rows (T*K - dropped), D row width.
//   rows_RD[r] = x_TD[token_of_row_R[r]]; row_of_TK[t*K + k] = the row of choice k of token t, or -1 when dropped.
// The parallel loops run over tokens (each token's rows found through row_of_TK), so no two threads add into one row
// and the sums are in choice order whatever the thread count.
#pragma once

#include <cstdint>

namespace frugal::backend::cpu {

// Counting sort of expert_TK (entries -1 are dropped), stable in (token, choice) order. Writes row_of_TK [T*K],
// token_of_row_R [R], tokens_per_expert_E [E] and offset_E [E + 1]; returns R.
int64_t build_permutation(int32_t* row_of_TK, int32_t* token_of_row_R, int64_t* tokens_per_expert_E, int64_t* offset_E,
                          const int32_t* expert_TK, int64_t t, int64_t k, int64_t e);

template <typename T>
void permute_rows(T* rows_RD, const T* x_TD, const int32_t* token_of_row_R, int64_t num_rows, int64_t d);
template <typename T>
void permute_rows_backward(T* dx_TD, const T* drows_RD, const int32_t* row_of_TK, int64_t t, int64_t k, int64_t d);
template <typename T>
void unpermute_combine(T* out_TD, const T* rows_RD, const T* weight_TK, const int32_t* row_of_TK, int64_t t, int64_t k,
                       int64_t d);
template <typename T>
void unpermute_combine_backward(T* drows_RD, T* dweight_TK, const T* dout_TD, const T* rows_RD, const T* weight_TK,
                                const int32_t* row_of_TK, int64_t t, int64_t k, int64_t d);

}  // namespace frugal::backend::cpu
