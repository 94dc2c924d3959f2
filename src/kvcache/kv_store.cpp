#include "kvcache/kv_store.h"

namespace kvrag::kvcache {

Result<KvGeometry> make_geometry(const model::ModelHParams& hp, GgmlType type, bool split_local) {
    if (type != GgmlType::F16 && type != GgmlType::F32 && type != GgmlType::Q8_0) {
        return Error{Errc::engine_bad_config, "KV cell type " + std::string(ggml_type_name(type)) +
                                                  " is not supported; use f16, q8_0 or f32"};
    }
    const int64_t block = ggml_type_traits(type).block_size;
    if (hp.head_dim % block != 0) {
        return Error{Errc::engine_bad_config, "KV cell type " + std::string(ggml_type_name(type)) + " needs a head dimension that is a multiple of " +
                                                  std::to_string(block) + ", this model's is " + std::to_string(hp.head_dim) +
                                                  "; use f16 or f32"};
    }
    KvGeometry g{hp.n_layer, hp.n_embd_kv(), hp.head_dim, type};
    if (split_local && hp.has_swa()) {
        g.swa_pattern = hp.swa_pattern;
        g.n_swa = hp.n_swa;
        for (int il = 0; il < hp.n_layer; ++il) g.n_local_layers += hp.is_swa(il) ? 1 : 0;
    }
    return g;
}

KvStore::KvStore(const KvGeometry& geometry, int32_t n_cells, int32_t n_local_cells)
    : geo_(geometry), n_cells_(n_cells), n_local_cells_(geometry.split() ? n_local_cells : 0),
      slot_(static_cast<size_t>(geometry.n_layer), 0),
      data_(geometry.bytes_per_cell() * static_cast<size_t>(n_cells), 0),
      local_(geometry.bytes_per_local_cell() * static_cast<size_t>(n_local_cells_), 0) {
    int32_t n_global = 0, n_local = 0;
    for (int il = 0; il < geo_.n_layer; ++il) slot_[static_cast<size_t>(il)] = geo_.is_local(il) ? n_local++ : n_global++;
}

model::KvLayerRef KvStore::layer(int il) {
    const bool local = geo_.is_local(il);
    const size_t plane = geo_.row_bytes() * static_cast<size_t>(local ? n_local_cells_ : n_cells_);
    uint8_t* base = (local ? local_.data() : data_.data()) + static_cast<size_t>(slot_[static_cast<size_t>(il)]) * 2 * plane;
    return model::KvLayerRef{geo_.type, base, base + plane, geo_.row_bytes()};
}

}  // namespace kvrag::kvcache
