// libFuzzer target: any byte string given to the GGUF reader, then to the model binder and the
// tokenizer, must produce a model or a clear error, never a crash, a hang or an out-of-bounds
// read. Built with -DKVRAG_FUZZ=ON (clang, ASan + UBSan); scripts/sanitize.sh runs it.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "gguf/gguf_file.h"
#include "model/hparams.h"
#include "model/weights.h"
#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    auto file = kvrag::gguf::GgufFile::from_bytes(std::vector<uint8_t>(data, data + size), "fuzz.gguf");
    if (!file) return 0;
    if (auto hp = kvrag::model::read_hparams(**file); hp) {
        (void)kvrag::model::bind_weights(**file, *hp);
    }
    if (auto tok = kvrag::tokenizer::Tokenizer::from_gguf(**file); tok) {
        const auto ids = (*tok)->encode("Hello world, <s> 123 \xe2\x96\x81 caf\xc3\xa9", true, true);
        (void)(*tok)->decode(ids);
    }
    return 0;
}
