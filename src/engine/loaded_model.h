// A model together with its tokenizer: what every front end (CLI, server, memory) loads.
#pragma once

#include <memory>
#include <string>

#include "core/error.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace kvrag::engine {

struct LoadedModel {
    std::shared_ptr<model::Model> model;
    std::shared_ptr<const tokenizer::Tokenizer> tokenizer;

    static Result<LoadedModel> load(const std::string& path, const model::LoadProgress& progress = nullptr);
};

}  // namespace kvrag::engine
