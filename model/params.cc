#include "model/params.h"

#include "core/rng.h"

namespace frugal::model {

const char* param_kind_name(ParamKind kind) {
    switch (kind) {
        case ParamKind::kWeight:
            return "weight";
        case ParamKind::kNorm:
            return "norm";
        case ParamKind::kEmbedding:
            return "embedding";
        case ParamKind::kBias:
            return "bias";
        case ParamKind::kRouter:
            return "router";
    }
    return "?";
}

Param* ParamStore::add(const std::string& name, const Shape& shape, ParamKind kind, double init_std, bool is_expert,
                       const Shape& global_shape, int64_t global_offset) {
    FRUGAL_CHECK(!values_.defined(), "parameter '", name, "' registered after allocate()");
    FRUGAL_CHECK(!by_name_.count(name), "parameter '", name, "' registered twice");
    storage_.push_back(Param{name, shape, global_shape.empty() ? shape : global_shape, global_offset, kind, is_expert,
                             init_std, Tensor(), Tensor()});
    params_.push_back(&storage_.back());
    by_name_.emplace(name, &storage_.back());
    return &storage_.back();
}

Buffer* ParamStore::add_buffer(const std::string& name, const Tensor& value) {
    FRUGAL_CHECK(!by_name_.count(name) && !find_buffer(name), "buffer '", name, "' registered twice");
    FRUGAL_CHECK(value.dtype() == DType::kF32, "buffer '", name, "' must be float32");
    buffer_storage_.push_back(Buffer{name, value});
    buffers_.push_back(&buffer_storage_.back());
    return &buffer_storage_.back();
}

Buffer* ParamStore::find_buffer(const std::string& name) const {
    for (Buffer* b : buffers_)
        if (b->name == name) return b;
    return nullptr;
}

void ParamStore::allocate(DType dtype, bool with_grads, Allocator& allocator) {
    int64_t total = numel();
    values_ = Tensor::zeros({total}, dtype, allocator);
    if (with_grads) grads_ = Tensor::zeros({total}, dtype, allocator);
    // Replicated parameters first, expert parameters after: each gradient-sync group then owns one contiguous
    // range, [0, dense_numel) over the data-parallel group and [dense_numel, numel) over the expert-data-parallel one.
    int64_t off = 0;
    for (bool expert : {false, true})
        for (Param* p : params_) {
            if (p->is_expert != expert) continue;
            int64_t n = shape_numel(p->shape);
            p->value = values_.slice(0, off, off + n).view(p->shape);
            if (with_grads) p->grad = grads_.slice(0, off, off + n).view(p->shape);
            off += n;
        }
    dense_numel_ = 0;
    for (Param* p : params_)
        if (!p->is_expert) dense_numel_ += shape_numel(p->shape);
}

template <typename T>
static void fill(Param& p, uint64_t seed) {
    T* v = p.value.data<T>();
    int64_t n = p.value.numel();
    if (p.kind == ParamKind::kNorm) {
        for (int64_t i = 0; i < n; ++i) v[i] = T(1);
        return;
    }
    rng::Stream stream(seed, p.name);
#pragma omp parallel for schedule(static) if (n >= (int64_t(1) << 12))
    for (int64_t i = 0; i < n; ++i) v[i] = T(p.init_std * stream.normal(uint64_t(p.global_offset + i)));
}

void ParamStore::init(uint64_t seed) {
    FRUGAL_CHECK(values_.defined(), "init() before allocate()");
    if (values_.device() != Device::kCpu) {
        // Drawn on the host into a host copy of the same layout, then copied to the device in one transfer.
        with_host_values([&] { init(seed); }, true);
        return;
    }
    for (Param* p : params_) {
        if (values_.dtype() == DType::kF32)
            fill<float>(*p, seed);
        else
            fill<double>(*p, seed);
    }
}

void ParamStore::with_host_values(const std::function<void()>& fn, bool write_back) {
    FRUGAL_CHECK(values_.defined(), "with_host_values() before allocate()");
    if (values_.device() == Device::kCpu) {
        fn();
        return;
    }
    Tensor device_values = values_;
    std::vector<Tensor> device_views, device_buffers;
    for (Buffer* b : buffers_) {
        device_buffers.push_back(b->value);
        Tensor host = Tensor::empty(b->value.shape(), b->value.dtype());
        host.copy_from(b->value);
        b->value = host;
    }
    values_ = Tensor::empty({device_values.numel()}, device_values.dtype());
    values_.copy_from(device_values);
    int64_t off = 0;
    for (bool expert : {false, true})
        for (Param* p : params_) {
            if (p->is_expert != expert) continue;
            const int64_t n = shape_numel(p->shape);
            device_views.push_back(p->value);
            p->value = values_.slice(0, off, off + n).view(p->shape);
            off += n;
        }
    auto restore = [&] {
        size_t i = 0;
        for (bool expert : {false, true})
            for (Param* p : params_)
                if (p->is_expert == expert) p->value = device_views[i++];
        for (size_t j = 0; j < buffers_.size(); ++j) buffers_[j]->value = device_buffers[j];
        std::swap(values_, device_values);
    };
    try {
        fn();
    } catch (...) {
        restore();
        throw;
    }
    if (write_back) {
        device_values.copy_from(values_);
        for (size_t j = 0; j < buffers_.size(); ++j) device_buffers[j].copy_from(buffers_[j]->value);
    }
    restore();
}

void ParamStore::zero_grad() {
    if (grads_.defined()) grads_.zero_();
}

Param* ParamStore::find(const std::string& name) const {
    const auto it = by_name_.find(name);
    return it == by_name_.end() ? nullptr : it->second;
}

int64_t ParamStore::numel() const {
    int64_t n = 0;
    for (const Param* p : params_) n += shape_numel(p->shape);
    return n;
}

}  // namespace frugal::model
