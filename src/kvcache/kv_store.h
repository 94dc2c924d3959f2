// The KV cache's memory: n_cells cells, each holding one token's K and V rows for every layer,
// in one allocation made at start-up. Which cell belongs to which sequence is the cache
// manager's business; this class only owns the bytes and computes their exact size.
#pragma once

#include <cstdint>
#include <vector>

#include "core/error.h"
#include "core/ggml_type.h"
#include "model/hparams.h"
#include "model/kv_view.h"

namespace kvrag::kvcache {

struct KvGeometry {
    int32_t n_layer = 0;
    int32_t n_embd_kv = 0;   // K (and V) row width per cell and layer
    int32_t head_dim = 0;
    GgmlType type = GgmlType::F16;
    // Sliding-window models with split cells: the local layers (il % swa_pattern <
    // swa_pattern - 1) keep their K/V in local cells of their own, which a sequence holds only
    // for the last n_swa positions. 0 local layers: one kind of cell holding every layer.
    int32_t n_local_layers = 0;
    int32_t swa_pattern = 0;
    int32_t n_swa = 0;

    bool split() const { return n_local_layers > 0; }
    bool is_local(int il) const { return split() && il % swa_pattern < swa_pattern - 1; }
    size_t row_bytes() const { return ggml_row_size(type, n_embd_kv); }
    // K + V for one token over the layers its ordinary cell holds (all but the local ones).
    size_t bytes_per_cell() const { return 2 * row_bytes() * static_cast<size_t>(n_layer - n_local_layers); }
    // K + V for one token over the local layers (0 when not split).
    size_t bytes_per_local_cell() const { return 2 * row_bytes() * static_cast<size_t>(n_local_layers); }
};

// Checks that the cell type suits the model (q8_0 needs heads that are whole 32-blocks).
// split_local: give a sliding-window model's local layers cells of their own (ignored for
// models without a window).
Result<KvGeometry> make_geometry(const model::ModelHParams& hp, GgmlType type, bool split_local = false);

class KvStore final : public model::KvView {
public:
    // n_local_cells: cells of the local layers (only when geometry.split(); else 0).
    KvStore(const KvGeometry& geometry, int32_t n_cells, int32_t n_local_cells = 0);

    // A local layer's rows are indexed by local cell, every other layer's by cell.
    model::KvLayerRef layer(int il) override;
    int32_t n_cells() const override { return n_cells_; }
    int32_t n_local_cells() const override { return n_local_cells_; }
    const KvGeometry& geometry() const { return geo_; }
    // Exactly n_cells * bytes_per_cell + n_local_cells * bytes_per_local_cell.
    size_t bytes() const { return data_.size() + local_.size(); }
    size_t local_bytes() const { return local_.size(); }

private:
    KvGeometry geo_;
    int32_t n_cells_;
    int32_t n_local_cells_;
    std::vector<int32_t> slot_;    // (n_layer) the layer's index among its kind (global or local)
    std::vector<uint8_t> data_;    // (n_global_layers, {K, V}, n_cells, row_bytes)
    std::vector<uint8_t> local_;   // (n_local_layers, {K, V}, n_local_cells, row_bytes)
};

}  // namespace kvrag::kvcache
