// Tensor: a typed, strided view over reference-counted storage.
//
// Invariants:
//  - storage is 64-byte aligned (one AVX-512 line), so contiguous float rows start vector-aligned;
//  - shape and strides are in elements, row-major by default; a view shares storage with its source;
//  - data<T>() checks that T matches the dtype, so a float* never silently reads bf16 bytes;
//  - the storage's allocator (core/allocator.h) says where the bytes live and takes them back; tensors of a device
//    backend come from that backend's allocator, and zero_ / copy_from / clone run on that device.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/allocator.h"
#include "core/dtype.h"
#include "core/error.h"

namespace frugal {

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& shape);
int64_t shape_numel(const Shape& shape);

class Storage {
  public:
    Storage(size_t nbytes, Allocator& allocator);
    ~Storage();
    Storage(const Storage&) = delete;
    Storage& operator=(const Storage&) = delete;
    void* data() { return data_; }
    size_t nbytes() const { return nbytes_; }
    Device device() const { return allocator_->device(); }
    Allocator& allocator() const { return *allocator_; }

  private:
    void* data_ = nullptr;
    size_t nbytes_ = 0;
    Allocator* allocator_;
};

class Tensor {
  public:
    Tensor() = default;
    static Tensor empty(const Shape& shape, DType dtype, Allocator& allocator);
    static Tensor empty(const Shape& shape, DType dtype, Device device = Device::kCpu) {
        return empty(shape, dtype, allocator_for(device));
    }
    static Tensor zeros(const Shape& shape, DType dtype, Allocator& allocator);
    static Tensor zeros(const Shape& shape, DType dtype, Device device = Device::kCpu) {
        return zeros(shape, dtype, allocator_for(device));
    }

    bool defined() const { return storage_ != nullptr; }
    DType dtype() const { return dtype_; }
    Device device() const { return storage_ ? storage_->device() : Device::kCpu; }
    // The allocator the bytes came from (an Error for an undefined tensor).
    Allocator& allocator() const {
        FRUGAL_CHECK(storage_ != nullptr, "allocator() of an undefined tensor");
        return storage_->allocator();
    }
    const Shape& shape() const { return shape_; }
    const Shape& strides() const { return strides_; }
    int64_t dim() const { return static_cast<int64_t>(shape_.size()); }
    int64_t size(int64_t d) const;
    int64_t numel() const { return shape_numel(shape_); }
    size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
    bool is_contiguous() const;

    void* raw_data() const;
    template <typename T>
    T* data() const {
        FRUGAL_CHECK(DTypeOf<T>::value == dtype_, "tensor holds ", dtype_name(dtype_), ", asked for ",
                     dtype_name(DTypeOf<T>::value));
        return static_cast<T*>(raw_data());
    }

    // A contiguous tensor seen with another shape of the same element count.
    Tensor view(const Shape& shape) const;
    // Elements [start, end) along dimension d; shares storage.
    Tensor slice(int64_t d, int64_t start, int64_t end) const;
    // Index i along dimension d, that dimension removed; shares storage.
    Tensor select(int64_t d, int64_t i) const;

    void zero_();
    // Copies the elements of src (same shape and dtype, both contiguous) into this tensor; one of the two may be on a
    // device and the other on the host.
    void copy_from(const Tensor& src);
    Tensor clone() const;

  private:
    std::shared_ptr<Storage> storage_;
    int64_t offset_ = 0;  // in elements
    Shape shape_;
    Shape strides_;
    DType dtype_ = DType::kF32;
};

}  // namespace frugal
