// Embeddings and rerank scores from encoder-only BERT-family models (bert, nomic-bert, bert
// rerankers such as bge-reranker), the models people run beside the chat model for RAG.
//
// An Embedder owns its thread pool and scratch and holds no KV cells: each call tokenizes its
// texts, sorts them by length and packs as many as fit into one forward pass
// (EmbedderConfig::max_pass_tokens), each sequence attending only to itself. Results do not
// depend on which texts share a pass or on the thread count (the same bits alone or batched),
// and come back in input order.
//
// Conventions are the reference engine's (llama.cpp; ../shared/data/README.md lists them and
// tests/engine/embedder_test.cpp holds kvrag to its outputs):
//   - a text is tokenized as [CLS] text [SEP] (special-token texts such as "[SEP]" inside it
//     are recognised, as llama.cpp does);
//   - a rerank pair is [CLS] query [SEP] document (llama-server's /rerank), or with
//     PairLayout::hf [CLS] query [SEP] document [SEP] (llama-embedding, Hugging Face); token
//     types are 0 throughout;
//   - L2 normalisation sums the squares in double and multiplies each component by the float
//     1/norm; rank scores are the raw head output (no sigmoid) and are never normalised.
//
// Decoder models (llama, qwen2) keep embedding through Engine::embed (mean-pooled hidden state
// of the chat model), which stays the fallback when no embedding model is loaded.
//
// Wiring notes for the server and memory pipeline: every method is thread-safe (passes are
// serialised by an internal mutex; a call of many texts runs its passes back to back, so batch
// many texts per call rather than one per call). Errors are Result values with Errc codes the
// server already maps: request_too_long (E5002) -> 400, request_invalid (E5001) -> 400,
// tokenizer_bad_token (E2003) -> 400, model_unsupported_arch (E7001) at creation.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "core/thread_pool.h"
#include "engine/loaded_model.h"
#include "model/encoder_forward.h"
#include "model/hparams.h"

namespace kvrag::engine {

using model::PoolingType;  // none, mean, cls, last, rank; model::parse_pooling_type reads names

// What a loaded encoder is for: its metadata's pooling is rank (a cross-encoder with a
// classifier head) or anything else (an embedding model).
enum class EmbedderKind { embedding, reranker };
const char* embedder_kind_name(EmbedderKind k);  // "embedding" / "reranker"

// How a rerank (query, document) pair is laid out (see the file comment).
enum class PairLayout {
    server,  // [CLS] query [SEP] document: llama-server /rerank (the default)
    hf,      // [CLS] query [SEP] document [SEP]: llama-embedding --pooling rank, Hugging Face
};

struct EmbedderConfig {
    int32_t n_threads = 0;           // 0 = physical cores
    // Tokens per forward pass: texts are packed by length up to this total. A single text
    // longer than this (but within max_tokens()) runs in a pass of its own. Memory for the
    // scratch grows with it: about max_pass_tokens * (6 n_embd + 2 n_ff) floats.
    int32_t max_pass_tokens = 2048;
};

struct EmbedOptions {
    std::optional<PoolingType> pooling;  // nullopt = the model's own (<arch>.pooling_type)
    bool normalize = true;               // L2; ignored for rank (scores are never normalised)
};

struct EmbedResult {
    // One entry per input, in input order. Pooled: (dim()) floats, or (n_cls_out) for rank;
    // PoolingType::none: (n_tokens, dim()) floats, one row per token, each row normalised.
    std::vector<std::vector<float>> vectors;
    std::vector<int32_t> n_tokens;  // tokens per input, [CLS]/[SEP] included (for usage counts)
    int64_t total_tokens() const;
};

struct RerankResult {
    std::vector<float> scores;      // one per document, in input order; higher = more relevant
    std::vector<int32_t> n_tokens;  // tokens per (query, document) pair
    int64_t total_tokens() const;
};

// What runs the scheduler's encode jobs (engine/job.h): an Embedder, or a test double.
// Consecutive queued encode jobs for the same Encoder and options are run as one call, so many
// small requests share forward passes.
class Encoder {
public:
    virtual ~Encoder() = default;
    // One result row per input, in input order (Embedder::embed_tokens' contract).
    virtual Result<EmbedResult> encode(std::span<const std::vector<int32_t>> inputs, const EmbedOptions& options) = 0;
};

class Embedder final : public Encoder {
public:
    // Errors: model_unsupported_arch when the model is a decoder (the message names its
    // architecture and points to Engine::embed / --embed-model); engine_bad_config for a
    // thread count outside 0..1024 or max_pass_tokens < 1.
    static Result<std::unique_ptr<Embedder>> create(LoadedModel model, const EmbedderConfig& config);

    const LoadedModel& model() const { return model_; }
    EmbedderKind kind() const;
    int32_t dim() const { return model_.model->hparams().n_embd; }  // embedding width
    int32_t max_tokens() const { return model_.model->hparams().n_ctx_train; }  // per text or pair
    PoolingType default_pooling() const { return model_.model->hparams().pooling; }
    int n_threads() const { return pool_->size(); }

    // [CLS] text [SEP] as embed() tokenizes it.
    std::vector<int32_t> tokenize(std::string_view text) const;
    // The ids of a rerank pair as rerank() builds them.
    std::vector<int32_t> tokenize_pair(std::string_view query, std::string_view document,
                                       PairLayout layout = PairLayout::server) const;

    // Embeds every text. Errors (nothing is returned for any text): request_too_long when a
    // text has more tokens than max_tokens() ("E5002 input 3 has 700 tokens > the model's
    // context 512; split it into smaller chunks"), request_invalid for an empty token list or
    // pooling rank on a model without a classifier head.
    Result<EmbedResult> embed(std::span<const std::string> texts, const EmbedOptions& options = {});
    // The same for token ids (each list already wrapped in [CLS] ... [SEP] as wanted).
    Result<EmbedResult> embed_tokens(std::span<const std::vector<int32_t>> inputs, const EmbedOptions& options = {});
    // Encoder: the scheduler's encode jobs run here.
    Result<EmbedResult> encode(std::span<const std::vector<int32_t>> inputs, const EmbedOptions& options) override {
        return embed_tokens(inputs, options);
    }

    // Scores each document against the query with the model's classifier head (pooling rank).
    // Errors: request_invalid when the model has no classifier head (an embedding model: the
    // message says so) or documents is empty; request_too_long for a pair over max_tokens()
    // (the message names the document's index and the numbers).
    // With `truncate`, a pair past max_tokens() is cut at its end (the document's tail) instead
    // of failing, as Jina's and Cohere's rerank APIs do by default.
    Result<RerankResult> rerank(std::string_view query, std::span<const std::string> documents,
                                PairLayout layout = PairLayout::server, bool truncate = false);
    // The token ids rerank() runs, one list per document (cut as `truncate` says).
    std::vector<std::vector<int32_t>> rerank_pairs(std::string_view query, std::span<const std::string> documents,
                                                   PairLayout layout = PairLayout::server, bool truncate = false) const;

private:
    Embedder(LoadedModel model, const EmbedderConfig& config);
    // Validates, packs by length and runs the passes; rows come back (n_inputs, width) in input order.
    Result<EmbedResult> run(std::span<const std::vector<int32_t>> inputs, PoolingType pooling, bool normalize);

    LoadedModel model_;
    EmbedderConfig config_;
    std::unique_ptr<ThreadPool> pool_;
    std::mutex mu_;  // one pass at a time: forward_ and its scratch are shared
    std::unique_ptr<model::EncoderForward> forward_;
};

// common_embd_normalize(…, 2) of the reference engine: v *= float(1 / sqrt(sum of float
// squares summed in double)); a zero vector stays zero. v: (n).
void l2_normalize(float* v, int64_t n);

}  // namespace kvrag::engine
