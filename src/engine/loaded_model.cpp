#include "engine/loaded_model.h"

namespace kvrag::engine {

Result<LoadedModel> LoadedModel::load(const std::string& path, const model::LoadProgress& progress) {
    auto file = gguf::GgufFile::open(path);
    if (!file) return file.error();
    auto tok = tokenizer::Tokenizer::from_gguf(**file);
    if (!tok) return tok.error();
    auto m = model::Model::from_file(*file, progress);
    if (!m) return m.error();
    if ((*tok)->n_vocab() != (*m)->hparams().n_vocab) {
        return Error{Errc::tokenizer_bad_vocab, path + ": the tokenizer has " + std::to_string((*tok)->n_vocab()) +
                                                    " tokens but token_embd.weight has " +
                                                    std::to_string((*m)->hparams().n_vocab) + " rows"};
    }
    return LoadedModel{std::move(*m), std::move(*tok)};
}

}  // namespace kvrag::engine
