#include "core/tensor.h"

#include <cstdlib>
#include <cstring>
#include <sstream>

namespace frugal {

namespace {
constexpr size_t kAlignment = 64;

Shape contiguous_strides(const Shape& shape) {
    Shape strides(shape.size());
    int64_t s = 1;
    for (size_t i = shape.size(); i-- > 0;) {
        strides[i] = s;
        s *= shape[i];
    }
    return strides;
}
}  // namespace

std::string shape_str(const Shape& shape) {
    std::ostringstream os;
    os << "[";
    for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
    os << "]";
    return os.str();
}

int64_t shape_numel(const Shape& shape) {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    return n;
}

namespace {
class HostAllocator final : public Allocator {
  public:
    Device device() const override { return Device::kCpu; }
    void* allocate(size_t nbytes) override {
        size_t rounded = (nbytes + kAlignment - 1) / kAlignment * kAlignment;
        if (rounded == 0) rounded = kAlignment;
        void* p = std::aligned_alloc(kAlignment, rounded);
        FRUGAL_CHECK(p != nullptr, "out of host memory allocating ", nbytes, " bytes");
        return p;
    }
    void deallocate(void* p, size_t) noexcept override { std::free(p); }
    void fill_zero(void* p, size_t nbytes) override { std::memset(p, 0, nbytes); }
    void copy_within(void* dst, const void* src, size_t nbytes) override { std::memcpy(dst, src, nbytes); }
    void copy_to_host(void* dst, const void* src, size_t nbytes) override { std::memcpy(dst, src, nbytes); }
    void copy_from_host(void* dst, const void* src, size_t nbytes) override { std::memcpy(dst, src, nbytes); }
};

Allocator* g_device_allocators[2] = {nullptr, nullptr};
}  // namespace

Allocator& host_allocator() {
    static HostAllocator host;
    return host;
}

Allocator& allocator_for(Device device) {
    if (device == Device::kCpu) return host_allocator();
    Allocator* a = g_device_allocators[size_t(device)];
    FRUGAL_CHECK(a != nullptr, "no allocator for device ", device_name(device),
                 ": this build has no such backend, or it has not been created yet (run.device)");
    return *a;
}

void register_allocator(Device device, Allocator* allocator) {
    FRUGAL_CHECK(device != Device::kCpu, "the host allocator is built in");
    g_device_allocators[size_t(device)] = allocator;
}

Storage::Storage(size_t nbytes, Allocator& allocator)
    : data_(allocator.allocate(nbytes)), nbytes_(nbytes), allocator_(&allocator) {}

Storage::~Storage() { allocator_->deallocate(data_, nbytes_); }

Tensor Tensor::empty(const Shape& shape, DType dtype, Allocator& allocator) {
    for (int64_t s : shape) FRUGAL_CHECK(s >= 0, "negative dimension in shape ", shape_str(shape));
    Tensor t;
    t.storage_ = std::make_shared<Storage>(static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype), allocator);
    t.shape_ = shape;
    t.strides_ = contiguous_strides(shape);
    t.dtype_ = dtype;
    return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Allocator& allocator) {
    Tensor t = empty(shape, dtype, allocator);
    allocator.fill_zero(t.raw_data(), t.nbytes());
    return t;
}

int64_t Tensor::size(int64_t d) const {
    if (d < 0) d += dim();
    FRUGAL_CHECK(d >= 0 && d < dim(), "dimension ", d, " out of range for shape ", shape_str(shape_));
    return shape_[static_cast<size_t>(d)];
}

bool Tensor::is_contiguous() const { return strides_ == contiguous_strides(shape_); }

void* Tensor::raw_data() const {
    FRUGAL_CHECK(storage_ != nullptr, "use of an undefined tensor");
    return static_cast<char*>(storage_->data()) + offset_ * static_cast<int64_t>(dtype_size(dtype_));
}

Tensor Tensor::view(const Shape& shape) const {
    FRUGAL_CHECK(is_contiguous(), "view() needs a contiguous tensor, shape ", shape_str(shape_));
    FRUGAL_CHECK(shape_numel(shape) == numel(), "view ", shape_str(shape), " does not match ", shape_str(shape_));
    Tensor t = *this;
    t.shape_ = shape;
    t.strides_ = contiguous_strides(shape);
    return t;
}

Tensor Tensor::slice(int64_t d, int64_t start, int64_t end) const {
    if (d < 0) d += dim();
    FRUGAL_CHECK(d >= 0 && d < dim(), "slice dimension ", d, " out of range for ", shape_str(shape_));
    FRUGAL_CHECK(0 <= start && start <= end && end <= shape_[d], "slice [", start, ", ", end,
                 ") out of range for size ", shape_[d]);
    Tensor t = *this;
    t.offset_ += start * strides_[d];
    t.shape_[d] = end - start;
    return t;
}

Tensor Tensor::select(int64_t d, int64_t i) const {
    Tensor t = slice(d, i, i + 1);
    t.shape_.erase(t.shape_.begin() + d);
    t.strides_.erase(t.strides_.begin() + d);
    return t;
}

void Tensor::zero_() {
    FRUGAL_CHECK(storage_ != nullptr, "zero_() of an undefined tensor");
    FRUGAL_CHECK(is_contiguous(), "zero_() needs a contiguous tensor");
    storage_->allocator().fill_zero(raw_data(), nbytes());
}

void Tensor::copy_from(const Tensor& src) {
    FRUGAL_CHECK(src.shape_ == shape_ && src.dtype_ == dtype_, "copy_from: ", shape_str(src.shape_), " ",
                 dtype_name(src.dtype_), " into ", shape_str(shape_), " ", dtype_name(dtype_));
    FRUGAL_CHECK(is_contiguous() && src.is_contiguous(), "copy_from needs contiguous tensors");
    FRUGAL_CHECK(storage_ != nullptr && src.storage_ != nullptr, "copy_from with an undefined tensor");
    if (device() == src.device())
        storage_->allocator().copy_within(raw_data(), src.raw_data(), nbytes());
    else if (src.device() == Device::kCpu)
        storage_->allocator().copy_from_host(raw_data(), src.raw_data(), nbytes());
    else if (device() == Device::kCpu)
        src.storage_->allocator().copy_to_host(raw_data(), src.raw_data(), nbytes());
    else
        FRUGAL_CHECK(false, "copy_from: between two devices (", device_name(src.device()), " to ",
                     device_name(device()), "): copy through the host");
}

Tensor Tensor::clone() const {
    FRUGAL_CHECK(storage_ != nullptr, "clone of an undefined tensor");
    Tensor t = empty(shape_, dtype_, storage_->allocator());
    t.copy_from(*this);
    return t;
}

}  // namespace frugal
