// Element types a Tensor can store. f32 is the compute and master-weight type; f64 exists for the double-precision
// gradient checks and test oracles; bf16, e4m3 and e5m2 are storage formats of the low-precision paths (their
// arithmetic lives in precision/).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace frugal {

enum class DType : uint8_t { kF32, kF64, kBF16, kE4M3, kE5M2, kI32, kI64, kU8, kU16 };

size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);

template <typename T>
struct DTypeOf;
template <>
struct DTypeOf<float> {
    static constexpr DType value = DType::kF32;
};
template <>
struct DTypeOf<double> {
    static constexpr DType value = DType::kF64;
};
template <>
struct DTypeOf<int32_t> {
    static constexpr DType value = DType::kI32;
};
template <>
struct DTypeOf<int64_t> {
    static constexpr DType value = DType::kI64;
};
template <>
struct DTypeOf<uint8_t> {
    static constexpr DType value = DType::kU8;
};
template <>
struct DTypeOf<uint16_t> {
    static constexpr DType value = DType::kU16;
};

enum class Device : uint8_t { kCpu, kCuda };
const char* device_name(Device device);

}  // namespace frugal
