#include "model/moe/dispatcher.h"

#include <algorithm>
#include <type_traits>

#include "core/error.h"
#include "model/layers/common.h"

namespace frugal::model {

void build_permutation(backend::Backend& be, Permutation& perm, const int32_t* expert_TK, int64_t t, int64_t k,
                       int64_t e) {
    perm.num_tokens = t;
    perm.top_k = k;
    perm.num_experts = e;
    perm.tokens_per_expert_E.resize(size_t(e));
    perm.offset_E.resize(size_t(e + 1));
    // Every row a token could fill (T*K, the most that can be kept), so the buffers grow with the micro-batch only.
    int32_t* row_of = ensure<int32_t>(be, perm.row_of_TK, std::max<int64_t>(t * k, 1));
    int32_t* token_of = ensure<int32_t>(be, perm.token_of_row_R, std::max<int64_t>(t * k, 1));
    perm.num_rows = be.build_permutation(row_of, token_of, perm.tokens_per_expert_E.data(), perm.offset_E.data(),
                                         expert_TK, t, k, e);
}

template <typename T>
void LocalDispatcher<T>::dispatch_prepare(const T* x_TD, const int32_t* expert_TK, int64_t t, int64_t k, int64_t e,
                                          int64_t d) {
    auto& h = this->handle_;
    h.d = d;
    build_permutation(this->ops_.backend(), h.perm, expert_TK, t, k, e);
    T* rows = ensure<T>(this->ops_, h.send_rows_RD, std::max<int64_t>(h.perm.num_rows, 1) * d);
    permute_rows(this->ops_, rows, x_TD, h.perm, d);
    if constexpr (std::is_same_v<T, float>) {
        if (fp8_)
            this->ops_.backend().fake_quant_row_tiles(rows, rows, h.perm.num_rows, d, 128, precision::Fp8Format::kE4M3,
                                                      true);
    } else {
        FRUGAL_CHECK(!fp8_, "FP8 dispatch quantizes float rows");
    }
}

template <typename T>
void LocalDispatcher<T>::dispatch_finish() {
    auto& h = this->handle_;
    h.tokens_per_local_expert = h.perm.tokens_per_expert_E;
    h.expert_rows = h.send_rows_RD.template data<T>();
    h.num_expert_rows = h.perm.num_rows;
}

template class LocalDispatcher<float>;
template class LocalDispatcher<double>;

}  // namespace frugal::model
