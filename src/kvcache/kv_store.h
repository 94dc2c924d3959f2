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

    size_t row_bytes() const { return ggml_row_size(type, n_embd_kv); }
    // K + V over all layers for one token.
    size_t bytes_per_cell() const { return 2 * row_bytes() * static_cast<size_t>(n_layer); }
};

// Checks that the cell type suits the model (q8_0 needs heads that are whole 32-blocks).
Result<KvGeometry> make_geometry(const model::ModelHParams& hp, GgmlType type);

class KvStore final : public model::KvView {
public:
    KvStore(const KvGeometry& geometry, int32_t n_cells);

    model::KvLayerRef layer(int il) override;
    int32_t n_cells() const override { return n_cells_; }
    const KvGeometry& geometry() const { return geo_; }
    size_t bytes() const { return data_.size(); }  // exactly n_cells * bytes_per_cell

private:
    KvGeometry geo_;
    int32_t n_cells_;
    std::vector<uint8_t> data_;  // (n_layer, {K, V}, n_cells, row_bytes)
};

}  // namespace kvrag::kvcache
