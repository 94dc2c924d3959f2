#include <cstdio>

#include "cli/commands.h"
#include "tokenizer/tokenizer.h"

namespace kvrag::cli {

Runner add_tokenize(CLI::App& app) {
    struct Args {
        std::string model_path, text;
        bool no_bos = false, special = false, pieces = false;
    };
    auto a = std::make_shared<Args>();
    app.add_option("-m,--model", a->model_path, "GGUF file (a model, or a vocabulary-only file)")->required();
    app.add_option("text", a->text, "text to tokenise")->required();
    app.add_flag("--no-special-tokens", a->no_bos, "do not add BOS/EOS");
    app.add_flag("--special", a->special, "parse special-token texts such as <|im_start|>");
    app.add_flag("--pieces", a->pieces, "print id:'piece' pairs");
    return [a] {
        // Only the tokenizer metadata is needed, so vocabulary-only files work too.
        auto file = gguf::GgufFile::open(a->model_path);
        if (!file) return fail(file.error());
        auto tok = tokenizer::Tokenizer::from_gguf(**file);
        if (!tok) return fail(tok.error());
        const auto ids = (*tok)->encode(a->text, !a->no_bos, a->special);
        for (size_t i = 0; i < ids.size(); ++i) {
            if (a->pieces) {
                std::printf("%s%d:'%s'", i ? " " : "", ids[i], (*tok)->token_to_piece(ids[i], true).c_str());
            } else {
                std::printf("%s%d", i ? " " : "", ids[i]);
            }
        }
        std::printf("\n");
        return 0;
    };
}

}  // namespace kvrag::cli
