#include "core/dtype.h"

namespace frugal {

size_t dtype_size(DType dtype) {
    switch (dtype) {
        case DType::kF32:
            return 4;
        case DType::kF64:
            return 8;
        case DType::kBF16:
            return 2;
        case DType::kE4M3:
            return 1;
        case DType::kE5M2:
            return 1;
        case DType::kI32:
            return 4;
        case DType::kI64:
            return 8;
        case DType::kU8:
            return 1;
        case DType::kU16:
            return 2;
    }
    return 0;
}

const char* dtype_name(DType dtype) {
    switch (dtype) {
        case DType::kF32:
            return "f32";
        case DType::kF64:
            return "f64";
        case DType::kBF16:
            return "bf16";
        case DType::kE4M3:
            return "e4m3";
        case DType::kE5M2:
            return "e5m2";
        case DType::kI32:
            return "i32";
        case DType::kI64:
            return "i64";
        case DType::kU8:
            return "u8";
        case DType::kU16:
            return "u16";
    }
    return "?";
}

const char* device_name(Device device) { return device == Device::kCpu ? "cpu" : "cuda"; }

}  // namespace frugal
