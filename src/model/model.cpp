#include "model/model.h"

namespace kvrag::model {

Result<std::shared_ptr<Model>> Model::load(const std::string& path, const LoadProgress& progress) {
    auto file = gguf::GgufFile::open(path);
    if (!file) return file.error();
    return from_file(std::move(*file), progress);
}

Result<std::shared_ptr<Model>> Model::from_file(std::shared_ptr<gguf::GgufFile> file, const LoadProgress& progress) {
    auto m = std::make_shared<Model>();
    m->file_ = std::move(file);
    auto hp = read_hparams(*m->file_);
    if (!hp) return hp.error();
    m->hp_ = std::move(*hp);
    if (model::is_encoder(m->hp_.arch)) {
        auto w = bind_encoder_weights(*m->file_, m->hp_);
        if (!w) return w.error();
        m->enc_ = std::move(*w);
    } else {
        auto w = bind_weights(*m->file_, m->hp_);
        if (!w) return w.error();
        m->w_ = std::move(*w);
    }
    for (const auto& t : m->file_->tensors()) {
        m->n_params_ += t.n_elements;
        m->weight_bytes_ += t.n_bytes;
    }
    // Touch every page of the weights now, so the first request does not pay for page faults
    // and the user sees load progress instead of a slow first token.
    uint64_t done = 0;
    volatile uint8_t sink = 0;
    constexpr uint64_t kPage = 4096, kReport = 64ull << 20;
    uint64_t next_report = kReport;
    for (const auto& t : m->file_->tensors()) {
        for (uint64_t off = 0; off < t.n_bytes; off += kPage) sink = sink + t.data[off];
        done += t.n_bytes;
        if (progress && done >= next_report) {
            progress(done, m->weight_bytes_);
            next_report = done + kReport;
        }
    }
    if (progress) progress(m->weight_bytes_, m->weight_bytes_);
    pack_weights(m->w_);
    return m;
}

}  // namespace kvrag::model
