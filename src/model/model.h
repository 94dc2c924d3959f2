// A loaded model: the mapped GGUF file, its hyperparameters and bound weights.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "core/error.h"
#include "gguf/gguf_file.h"
#include "model/encoder_weights.h"
#include "model/hparams.h"
#include "model/weights.h"

namespace kvrag::model {

// Called while the weights are paged in: (bytes done, bytes total).
using LoadProgress = std::function<void(uint64_t done, uint64_t total)>;

class Model {
public:
    static Result<std::shared_ptr<Model>> load(const std::string& path, const LoadProgress& progress = nullptr);
    static Result<std::shared_ptr<Model>> from_file(std::shared_ptr<gguf::GgufFile> file,
                                                    const LoadProgress& progress = nullptr);

    const gguf::GgufFile& file() const { return *file_; }
    std::shared_ptr<gguf::GgufFile> file_ptr() const { return file_; }
    const ModelHParams& hparams() const { return hp_; }
    // Decoder weights; empty for encoder-only models (is_encoder(hparams().arch)).
    const ModelWeights& weights() const { return w_; }
    // Encoder weights; empty for decoders.
    const EncoderWeights& encoder_weights() const { return enc_; }
    bool is_encoder() const { return model::is_encoder(hp_.arch); }
    uint64_t n_params() const { return n_params_; }
    uint64_t weight_bytes() const { return weight_bytes_; }
    // Bytes of matrices the kernels read repacked (kernels/repack.h), and how many bytes of
    // their mapped file pages were released after packing (0 for a model from memory).
    uint64_t packed_bytes() const { return packed_bytes_; }
    uint64_t released_bytes() const { return released_bytes_; }

private:
    std::shared_ptr<gguf::GgufFile> file_;
    ModelHParams hp_;
    ModelWeights w_;
    EncoderWeights enc_;
    uint64_t n_params_ = 0;
    uint64_t weight_bytes_ = 0;
    uint64_t packed_bytes_ = 0;
    uint64_t released_bytes_ = 0;
};

}  // namespace kvrag::model
