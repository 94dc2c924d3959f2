// Re-rotation of stored keys for a context shift.
//
// K rows live in the cache after RoPE, at their cell's position. When a context shift moves a
// position from p to p + delta, its key must become R(p + delta) k. RoPE angles are linear in
// the position, so R(p + delta) = R(delta) R(p): one more rotation by delta moves a stored key
// without recomputing it. Which frequencies and which pairing the rotation uses is the model's
// business (they must match the forward pass exactly), so this lives in model/ and the KV cache
// only calls it.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "model/hparams.h"
#include "model/kv_view.h"

namespace kvrag::model {

class KeyRotation {
public:
    // freq_factors: (n_rot / 2) per-dimension divisors of the angle (the model's rope_freqs
    // tensor, or the LongRoPE set of this context), or empty; must be what the forward pass uses.
    // LongRoPE's attn_factor is not applied: it scales a key once, when it is first rotated, and
    // a shift must only turn it further.
    explicit KeyRotation(const ModelHParams& hp, std::span<const float> freq_factors = {});

    // Rotates the K rows of `cell` in every layer of kv by delta positions (negative moves the
    // keys towards the start). Each head is dequantised, rotated and written back in the row's
    // type. V rows are left alone. Not thread-safe (one scratch row): the owner serialises calls.
    // Preconditions: 0 <= cell < kv.n_cells() (kv.n_local_cells() for Layers::local), kv has this model's n_layer layers of
    // n_head_kv * head_dim elements.
    // layers: which layers to turn (a sliding-window cache keeps local and global layers in
    // different cells, so each of its cells is rotated in its own layers only).
    enum class Layers { all, global, local };
    void rotate(KvView& kv, int32_t cell, int32_t delta, Layers layers = Layers::all);

    int32_t n_layer() const { return n_layer_; }

private:
    int32_t n_layer_ = 0;
    int32_t n_head_kv_ = 0;
    int32_t head_dim_ = 0;
    int32_t n_rot_ = 0;
    bool neox_ = false;
    ModelHParams hp_;                   // per-layer RoPE base and scale (sliding-window layers differ)
    std::vector<float> freq_factors_;   // (n_rot / 2) or empty
    std::vector<float> scratch_;        // (head_dim + 2 * n_rot): one head, then the global and local cos/sin tables
};

}  // namespace kvrag::model
