// Parameters and their gradients, held in two flat buffers (values, grads) so that the optimizer, the global
// gradient norm and the later bucketed gradient sync walk contiguous memory.
//
// Registration happens while layers are constructed (add()); allocate() then lays the parameters out, replicated
// ones first and expert ones after, each group in registration order, and hands each its views; init() fills values
// from the counter-based RNG keyed by (seed, name), indexed by the element's position in the parameter's GLOBAL tensor,
// so a sharded expert gets the same numbers as the unsharded one.
#pragma once

#include <deque>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/tensor.h"

namespace frugal::model {

enum class ParamKind { kWeight, kNorm, kEmbedding, kBias, kRouter };
const char* param_kind_name(ParamKind kind);

struct Param {
    std::string name;
    Shape shape;            // local shape (this rank's shard)
    Shape global_shape;     // shape of the whole parameter across ranks
    int64_t global_offset;  // element index in the global tensor of this shard's first element
    ParamKind kind;
    bool is_expert;   // replicated over the expert-data-parallel group only
    double init_std;  // normal(0, init_std); norms start at 1
    Tensor value;
    Tensor grad;
};

// State a model holds beside its parameters, neither trained nor in the flat buffers: the router's FP32 expert
// bias (DeepSeek-V3's e_score_correction_bias). Registered by the layer that owns the tensor (a view of the same
// memory); Hugging Face import and export read and write it by name like a parameter.
struct Buffer {
    std::string name;
    Tensor value;  // float32, on the model's device
};

class ParamStore {
  public:
    // Registers a parameter; the pointer stays valid for the store's lifetime.
    Param* add(const std::string& name, const Shape& shape, ParamKind kind, double init_std, bool is_expert = false,
               const Shape& global_shape = {}, int64_t global_offset = 0);
    // Registers a buffer viewing value's memory (float32, any device); the pointer stays valid for the store's life.
    Buffer* add_buffer(const std::string& name, const Tensor& value);
    // with_grads = false: values only (inference); the grads stay undefined. The flat buffers come from allocator
    // (the model's backend).
    void allocate(DType dtype, bool with_grads = true, Allocator& allocator = host_allocator());
    // Draws every value on the host (core/rng.h); a store on a device gets them by one copy.
    void init(uint64_t seed);
    void zero_grad();
    // Runs fn with every Param::value and Buffer::value viewing host memory: the store's own on the host; on a
    // device, host copies, written back to the device afterwards when write_back (an import of weights), the views
    // restored either way. For code that reads or writes parameters element by element on the host (Hugging Face
    // import and export).
    void with_host_values(const std::function<void()>& fn, bool write_back);

    std::vector<Param*>& params() { return params_; }
    const std::vector<Param*>& params() const { return params_; }
    Param* find(const std::string& name) const;
    const std::vector<Buffer*>& buffers() const { return buffers_; }
    Buffer* find_buffer(const std::string& name) const;
    int64_t numel() const;
    // Elements of the replicated (non-expert) parameters; they come first in the flat buffers.
    int64_t dense_numel() const { return dense_numel_; }
    Tensor& flat_values() { return values_; }
    Tensor& flat_grads() { return grads_; }

  private:
    std::deque<Param> storage_;
    std::vector<Param*> params_;
    std::unordered_map<std::string, Param*> by_name_;  // add() and find() in constant time: building is linear
    std::deque<Buffer> buffer_storage_;
    std::vector<Buffer*> buffers_;
    Tensor values_;
    Tensor grads_;
    int64_t dense_numel_ = 0;
};

}  // namespace frugal::model
