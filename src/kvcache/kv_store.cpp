#include "kvcache/kv_store.h"

namespace kvrag::kvcache {

Result<KvGeometry> make_geometry(const model::ModelHParams& hp, GgmlType type) {
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
    return KvGeometry{hp.n_layer, hp.n_embd_kv(), hp.head_dim, type};
}

KvStore::KvStore(const KvGeometry& geometry, int32_t n_cells)
    : geo_(geometry), n_cells_(n_cells), data_(geometry.bytes_per_cell() * static_cast<size_t>(n_cells), 0) {}

model::KvLayerRef KvStore::layer(int il) {
    const size_t plane = geo_.row_bytes() * static_cast<size_t>(n_cells_);
    uint8_t* base = data_.data() + static_cast<size_t>(il) * 2 * plane;
    return model::KvLayerRef{geo_.type, base, base + plane, geo_.row_bytes()};
}

}  // namespace kvrag::kvcache
