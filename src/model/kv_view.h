// The forward pass's window onto the KV cache. The kvcache module owns the memory and decides
// which cells a token writes and sees; the model only reads and writes rows through this.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/ggml_type.h"

namespace kvrag::model {

// K and V storage of one layer: row c holds cell c's (n_head_kv * head_dim) values in `type`
// (F32, F16 or Q8_0). K rows are stored after RoPE, at the cell's position.
struct KvLayerRef {
    GgmlType type = GgmlType::F16;
    uint8_t* k = nullptr;   // (n_cells, row_bytes)
    uint8_t* v = nullptr;   // (n_cells, row_bytes)
    size_t row_bytes = 0;
};

class KvView {
public:
    virtual ~KvView() = default;
    virtual KvLayerRef layer(int il) = 0;
    virtual int32_t n_cells() const = 0;
    // Sliding-window models whose cache keeps the local (windowed) layers in cells of their
    // own: how many such local cells there are. 0 (the default, and every model without a
    // window): local layers live in the ordinary cells and BatchToken's local_* fields are unused.
    virtual int32_t n_local_cells() const { return 0; }
};

// One token of a forward batch. Tokens of different sequences may share a batch; each sees
// only the cells listed for it, so sequences never attend to each other.
struct BatchToken {
    int32_t token = 0;
    int32_t pos = 0;                     // position used for RoPE
    int32_t cell = 0;                    // cell this token's K/V are written to
    const int32_t* visible = nullptr;    // cells it attends to, in position order, own cell included
    int32_t n_visible = 0;
    bool want_logits = false;
    // Only when the view has local cells (n_local_cells() > 0): the local layers write this
    // token's K/V to local_cell and attend to local_visible, its window's local cells in
    // position order (own cell last, at most n_swa of them).
    int32_t local_cell = -1;
    const int32_t* local_visible = nullptr;
    int32_t n_local_visible = 0;
};

}  // namespace kvrag::model
