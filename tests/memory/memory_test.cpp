// End to end on a synthetic model and a real store directory: ingest a corpus the project
// ships (its docs, HTML/Markdown/text under tests/data/memory, a generated PDF), search it
// lexically and by vector, ask with sources, never overflow the context, leave the KV cache
// at its baseline.
#include "memory/memory.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "memory/memory_test_util.h"
#include "memory/prompt_builder.h"

namespace kvrag::memory {
namespace {

namespace fs = std::filesystem;

// One synthetic engine for the whole file (loading is the slow part).
engine::Engine& shared_engine() {
    static std::unique_ptr<engine::Engine> e = [] {
        auto m = engine::testing::load_synthetic("memory-e2e", 64, 2, 128);
        return engine::testing::make_engine(std::move(m), 512, 2, 128);
    }();
    return *e;
}

struct EndToEndFixture {
    fs::path dir;
    std::unique_ptr<Memory> mem;
    int n_generate_calls = 0;
    size_t max_prompt_seen = 0;
    int32_t last_max_tokens = 0;
};

// A Memory over the shared engine whose generate hook checks the context bound on every call.
std::unique_ptr<EndToEndFixture> make_fixture(const std::string& tag, ChunkOptions chunking = {64, 12}, engine::Engine* eng = nullptr,
                                      RerankFn rerank = nullptr) {
    engine::Engine& e = eng ? *eng : shared_engine();
    auto f = std::make_unique<EndToEndFixture>();
    f->dir = testing::temp_dir(tag);
    auto store = Store::open(f->dir.string());
    EXPECT_TRUE(store.ok()) << store.error().what();
    auto hooks = engine_hooks(e, e);
    EXPECT_TRUE(hooks.ok()) << hooks.error().what();
    EndToEndFixture* raw = f.get();
    auto inner = hooks->generate;
    const int64_t n_ctx = e.config().n_ctx;
    hooks->generate = [raw, inner, n_ctx](std::vector<int32_t> prompt, const engine::GenerateOptions& o) -> Result<engine::GenerateResult> {
        ++raw->n_generate_calls;
        raw->max_prompt_seen = std::max(raw->max_prompt_seen, prompt.size());
        raw->last_max_tokens = o.max_tokens;
        EXPECT_LE(static_cast<int64_t>(prompt.size()) + o.max_tokens, n_ctx)
            << "prompt " << prompt.size() << " + max_tokens " << o.max_tokens;
        return inner(std::move(prompt), o);
    };
    hooks->rerank = std::move(rerank);
    f->mem = std::make_unique<Memory>(std::shared_ptr<Store>(std::move(*store)), std::move(*hooks), chunking);
    return f;
}

// The corpus: the project's docs/*.md, tests/data/memory/*, and a generated PDF.
std::vector<std::string> project_corpus(const fs::path& scratch) {
    std::vector<std::string> files;
    for (const auto& e : fs::directory_iterator(std::string(KVRAG_SOURCE_DIR) + "/docs")) {
        if (e.path().extension() == ".md") files.push_back(e.path().string());
    }
    // Files only: the retrieval/ evaluation set below it is the eval command's, not this corpus.
    for (const auto& e : fs::directory_iterator(testing::data_dir())) {
        if (e.is_regular_file()) files.push_back(e.path().string());
    }
    const auto pdf = scratch / "aardvark.pdf";
    testing::write_file(pdf, testing::make_pdf("Aardvarks are nocturnal burrowing mammals.\nThey eat ants and termites."));
    files.push_back(pdf.string());
    std::sort(files.begin(), files.end());
    return files;
}

int count_ok(EndToEndFixture& f, const std::vector<std::string>& files, std::vector<std::string>* errors = nullptr) {
    int ok = 0;
    for (const auto& p : files) {
        const bool ours = p.find("tests/data/memory") != std::string::npos;
        auto r = f.mem->ingest_file(p, "default", ours ? Tags{{"set", "data"}} : Tags{{"set", "docs"}});
        if (r) ++ok;
        else if (errors) errors->push_back(r.error().what());
    }
    return ok;
}

TEST(MemoryEndToEnd, IngestCorpusSearchAndReingest) {
    auto f = make_fixture("corpus");
    const auto files = project_corpus(f->dir);
    std::vector<std::string> errors;
    const int ok = count_ok(*f, files, &errors);
    // broken.pdf and report.docx fail with clear errors; the batch carries on.
    ASSERT_EQ(errors.size(), 2u);
    EXPECT_EQ(ok, static_cast<int>(files.size()) - 2);
    std::string all_errors;
    for (auto& e : errors) all_errors += e + "\n";
    EXPECT_NE(all_errors.find("E6002 'broken.pdf' is a broken PDF"), std::string::npos) << all_errors;
    EXPECT_NE(all_errors.find("E6003 'report.docx' is binary"), std::string::npos) << all_errors;
    EXPECT_EQ(*f->mem->store().check_consistency(), "");

    auto docs = f->mem->store().list_documents("default");
    const size_t n_docs = docs->size();
    int64_t n_chunks = 0;
    for (auto& d : *docs) n_chunks += d.n_chunks;
    EXPECT_GT(n_chunks, 20);

    // Same content, same id: a no-op. Changed content: replaced, not duplicated.
    auto again = f->mem->ingest_file(testing::data_dir() + "/sourdough.md", "default", {{"set", "data"}});
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(again->outcome, WriteOutcome::unchanged);
    const auto changed = f->dir / "sourdough.md";
    testing::write_file(changed, "# Sourdough\n\nA completely new text about rye bread.");
    auto rep = f->mem->ingest_file(changed.string(), "default", {}, again->doc_id);
    ASSERT_TRUE(rep.ok()) << rep.error().what();
    EXPECT_EQ(rep->outcome, WriteOutcome::replaced);
    EXPECT_EQ(f->mem->store().list_documents("default")->size(), n_docs);

    // Lexical: unique words find their documents.
    SearchOptions lex;
    lex.mode = SearchMode::lexical;
    struct Case { const char* query; const char* doc_part; };
    for (const Case& c : {Case{"Quillback lighthouse automated", "lighthouse"}, Case{"aardvarks termites", "aardvark"},
                          Case{"Hohmann transfer", "orbital"}, Case{"zebra stripes Serengeti", "zebra"}}) {
        auto r = f->mem->search(c.query, lex);
        ASSERT_TRUE(r.ok()) << r.error().what();
        ASSERT_FALSE(r->hits.empty()) << c.query;
        EXPECT_NE(r->hits[0].chunk.doc_id.find(c.doc_part), std::string::npos) << c.query << " -> " << r->hits[0].chunk.doc_id;
        EXPECT_EQ(r->hits[0].lexical_rank, 1);
    }
    EXPECT_EQ(f->mem->search("rye bread", lex)->hits.at(0).chunk.doc_id, again->doc_id);

    // Vector: a chunk's own text is its nearest neighbour (cosine 1).
    auto vs = f->mem->store().vectors("default");
    auto rows = f->mem->store().chunks({(*vs)->chunk_ids[(*vs)->size() / 2]});
    ASSERT_EQ(rows->size(), 1u);
    SearchOptions vec;
    vec.mode = SearchMode::vector;
    auto v = f->mem->search((*rows)[0].text, vec);
    ASSERT_TRUE(v.ok());
    ASSERT_FALSE(v->hits.empty());
    EXPECT_EQ(v->hits[0].chunk.chunk_id, (*rows)[0].chunk_id)
        << "query chunk [" << (*rows)[0].text << "] of " << (*rows)[0].doc_id << ", top hit [" << v->hits[0].chunk.text
        << "] of " << v->hits[0].chunk.doc_id;
    EXPECT_NEAR(v->hits[0].relevance, 1.0, 1e-3);
    // Hybrid ranks it first too (first in both lists).
    auto h = f->mem->search((*rows)[0].text, SearchOptions{});
    EXPECT_EQ(h->hits.at(0).chunk.chunk_id, (*rows)[0].chunk_id);

    // Filters: by tag and by document; min relevance and limit.
    SearchOptions tagged;
    tagged.filter.tags = {{"set", "docs"}};
    tagged.limit = 50;
    auto tg = f->mem->search("lighthouse zebra cache", tagged);
    ASSERT_TRUE(tg.ok());
    ASSERT_FALSE(tg->hits.empty());
    for (const auto& hit : tg->hits) EXPECT_EQ(format_tags(hit.chunk.tags), "set=docs");
    SearchOptions one_doc;
    one_doc.filter.doc_id = rows->at(0).doc_id;
    one_doc.limit = 50;
    auto od = f->mem->search("the", one_doc);
    ASSERT_FALSE(od->hits.empty());
    for (const auto& hit : od->hits) EXPECT_EQ(hit.chunk.doc_id, rows->at(0).doc_id);
    SearchOptions strict;
    strict.min_relevance = 1.0;
    EXPECT_TRUE(f->mem->search("completely unrelated words", strict)->hits.size() <= 1);
    SearchOptions lim;
    lim.limit = 3;
    EXPECT_EQ(f->mem->search("the", lim)->hits.size(), 3u);

    // Deleting removes it from search.
    EXPECT_EQ(*f->mem->store().delete_document("default", again->doc_id), 1);
    EXPECT_TRUE(f->mem->search("rye bread", lex)->hits.empty() ||
                f->mem->search("rye bread", lex)->hits[0].chunk.doc_id != again->doc_id);
    EXPECT_EQ(*f->mem->store().check_consistency(), "");
    fs::remove_all(f->dir);
}

TEST(MemoryEndToEnd, AnotherModelIsRefused) {
    auto f = make_fixture("mismatch");
    ASSERT_TRUE(f->mem->ingest_file(testing::data_dir() + "/orbital_notes.txt", "default", {}).ok());
    auto hooks = f->mem->hooks();
    hooks.embed_model.fingerprint = "size:1 sha256:other";
    Memory other(f->mem->store_ptr(), hooks);
    auto s = other.search("orbit", SearchOptions{});
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.error().code, Errc::memory_model_mismatch);
    auto i = other.ingest_file(testing::data_dir() + "/sourdough.md", "default", {});
    ASSERT_FALSE(i.ok());
    EXPECT_EQ(i.error().code, Errc::memory_model_mismatch);
    fs::remove_all(f->dir);
}

TEST(MemoryEndToEnd, AskAnswersWithSourcesOrSaysNothingFound) {
    auto f = make_fixture("ask");
    count_ok(*f, project_corpus(f->dir));
    AskOptions o;
    o.max_tokens = 16;
    auto a = f->mem->ask("When was the Quillback lighthouse automated?", o);
    ASSERT_TRUE(a.ok()) << a.error().what();
    EXPECT_TRUE(a->found);
    ASSERT_FALSE(a->sources.empty());
    EXPECT_EQ(f->n_generate_calls, 1);
    EXPECT_LE(a->n_prompt_tokens + a->max_tokens, a->n_ctx);
    EXPECT_FALSE(a->finish_reason.empty());
    bool has_lighthouse = false;
    for (const auto& s : a->sources) has_lighthouse |= s.chunk.doc_id.find("lighthouse") != std::string::npos;
    EXPECT_TRUE(has_lighthouse);
    EXPECT_EQ(shared_engine().cache().stats().used, 0);

    // No chunk passes min relevance: the model is not called.
    o.min_relevance = 1.0;
    auto none = f->mem->ask("qwertyuiop asdfghjkl", o);
    ASSERT_TRUE(none.ok());
    EXPECT_FALSE(none->found);
    EXPECT_EQ(none->answer, kNothingFound);
    EXPECT_TRUE(none->sources.empty());
    EXPECT_EQ(f->n_generate_calls, 1);
    fs::remove_all(f->dir);
}

// Ask reranks its retrieval (n_candidates 20 -> a pool of 80) unless told not to, and its
// sources come in the reranker's order. The fake reranker reverses the fused order, so the
// last chunk of the pool must become source [1].
TEST(MemoryEndToEnd, AskUsesTheRerankStage) {
    size_t n_calls = 0, n_docs = 0;
    std::string last_of_pool;
    RerankFn reverse = [&](std::string_view, const std::vector<std::string_view>& docs) -> Result<std::vector<float>> {
        ++n_calls;
        n_docs = docs.size();
        last_of_pool = std::string(docs.back());
        std::vector<float> s;
        for (size_t i = 0; i < docs.size(); ++i) s.push_back(static_cast<float>(i));
        return s;
    };
    auto f = make_fixture("askrerank", {64, 12}, nullptr, reverse);
    count_ok(*f, project_corpus(f->dir));
    AskOptions o;
    o.max_tokens = 8;
    auto a = f->mem->ask("When was the Quillback lighthouse automated?", o);
    ASSERT_TRUE(a.ok()) << a.error().what();
    EXPECT_EQ(n_calls, 1u);
    EXPECT_EQ(n_docs, static_cast<size_t>(rerank_candidates(o.n_candidates)));
    ASSERT_FALSE(a->sources.empty());
    EXPECT_TRUE(a->sources[0].reranked);
    EXPECT_EQ(a->sources[0].chunk.text, last_of_pool);
    EXPECT_EQ(a->sources[0].rerank_score, static_cast<double>(n_docs - 1));
    o.rerank = false;
    auto plain = f->mem->ask("When was the Quillback lighthouse automated?", o);
    ASSERT_TRUE(plain.ok()) << plain.error().what();
    EXPECT_EQ(n_calls, 1u);
    ASSERT_FALSE(plain->sources.empty());
    EXPECT_FALSE(plain->sources[0].reranked);
    fs::remove_all(f->dir);
}

TEST(MemoryEndToEnd, PromptAlwaysFitsWith50HugeChunksAndALongConversation) {
    // 50+ chunks of up to 200 tokens in a 512 context: at most two fit beside the rest.
    auto f = make_fixture("huge", ChunkOptions{200, 0});
    std::string text;
    for (int c = 0; c < 25; ++c) {
        for (int s = 0; s < 30; ++s) text += "Huge chunk " + std::to_string(c) + " sentence " + std::to_string(s) + " about the lighthouse keeper. ";
        text += "\n\n";
    }
    IngestRequest req;
    req.name = "huge.txt";
    req.bytes = text;
    auto ing = f->mem->ingest(req);
    ASSERT_TRUE(ing.ok()) << ing.error().what();
    EXPECT_GE(ing->n_chunks, 50);

    // A long conversation: 200 stored turns of ~60 tokens each.
    std::vector<Turn> turns;
    for (int i = 0; i < 100; ++i) {
        std::string q = "Earlier question " + std::to_string(i) + " about the keeper and the lamp and the granite headland?";
        std::string a = "Earlier answer " + std::to_string(i) + ": the lamp was lit in 1871 and automated in 1962, as the sources say.";
        turns.push_back({"user", q, 0});
        turns.push_back({"assistant", a, 0});
    }
    ASSERT_TRUE(f->mem->store().append_turns("long-talk", turns).ok());

    std::string huge_question;
    for (int i = 0; i < 400; ++i) huge_question += "why " + std::to_string(i) + " ";
    for (int32_t max_tokens : {1, 32, 200}) {
        for (const std::string& q : {std::string("Who kept the lighthouse?"), huge_question}) {
            AskOptions o;
            o.max_tokens = max_tokens;
            o.n_candidates = 50;
            o.conversation_id = "long-talk";
            auto a = f->mem->ask(q, o);
            ASSERT_TRUE(a.ok()) << "max_tokens " << max_tokens << ": " << a.error().what();
            EXPECT_LE(a->n_prompt_tokens + max_tokens, 512) << "max_tokens " << max_tokens;
            EXPECT_GT(a->n_history_dropped, 0);
            if (q.size() > 1000) {
                EXPECT_TRUE(a->question_truncated);
            }
            EXPECT_EQ(shared_engine().cache().stats().used, 0);
        }
    }
    EXPECT_EQ(f->n_generate_calls, 6);
    EXPECT_LE(static_cast<int64_t>(f->max_prompt_seen), 511);
    // A context that cannot hold even the instructions is a clear error, not an overflow.
    AskOptions tight;
    tight.max_tokens = 505;
    auto e = f->mem->ask("Who?", tight);
    ASSERT_FALSE(e.ok());
    EXPECT_EQ(e.error().code, Errc::memory_bad_input);
    EXPECT_NE(e.error().message.find("context 512 - max_tokens 505"), std::string::npos) << e.error().message;
    fs::remove_all(f->dir);
}

// Conversation history is kept and re-used; the oldest turns go first.
TEST(MemoryEndToEnd, ConversationCarriesHistory) {
    auto f = make_fixture("conv");
    ASSERT_TRUE(f->mem->ingest_file(testing::data_dir() + "/orbital_notes.txt", "default", {}).ok());
    AskOptions o;
    o.max_tokens = 8;
    o.conversation_id = "c1";
    auto a1 = f->mem->ask("What is a Hohmann transfer?", o);
    ASSERT_TRUE(a1.ok()) << a1.error().what();
    EXPECT_EQ(a1->n_history_used, 0);
    auto a2 = f->mem->ask("And the delta-v budget?", o);
    ASSERT_TRUE(a2.ok());
    EXPECT_EQ(a2->n_history_used, 2);
    EXPECT_EQ(f->mem->store().conversation("c1")->size(), 4u);
    fs::remove_all(f->dir);
}

// Summarize mode: the turns that no longer fit become a model-written summary at the head of
// the history, still within the context.
TEST(MemoryEndToEnd, SummarizeModeReplacesDroppedTurnsWithASummary) {
    auto f = make_fixture("summ");
    ASSERT_TRUE(f->mem->ingest_file(testing::data_dir() + "/orbital_notes.txt", "default", {}).ok());
    std::vector<Turn> turns;
    for (int i = 0; i < 60; ++i) {
        turns.push_back({"user", "Earlier question " + std::to_string(i) + " about transfer orbits and the delta-v budget?", 0});
        turns.push_back({"assistant", "Earlier answer " + std::to_string(i) + ": a Hohmann transfer uses two burns.", 0});
    }
    ASSERT_TRUE(f->mem->store().append_turns("long", turns).ok());
    AskOptions o;
    o.max_tokens = 16;
    o.conversation_id = "long";
    o.history_mode = HistoryMode::summarize;
    o.summary_max_tokens = 24;
    const int calls_before = f->n_generate_calls;
    auto a = f->mem->ask("What is a Hohmann transfer?", o);
    ASSERT_TRUE(a.ok()) << a.error().what();
    EXPECT_TRUE(a->history_summarized);
    EXPECT_GT(a->n_history_dropped, 0);
    EXPECT_FALSE(a->history_summary.empty());
    EXPECT_EQ(f->n_generate_calls, calls_before + 2);  // the summary, then the answer
    EXPECT_LE(a->n_prompt_tokens + o.max_tokens, 512);
    EXPECT_LE(static_cast<int64_t>(f->max_prompt_seen), 511);
    EXPECT_EQ(shared_engine().cache().stats().used, 0);
    // drop mode makes one call and no summary.
    o.history_mode = HistoryMode::drop;
    auto b = f->mem->ask("What is a Hohmann transfer?", o);
    ASSERT_TRUE(b.ok());
    EXPECT_FALSE(b->history_summarized);
    EXPECT_FALSE(parse_history_mode("forget").ok());
    fs::remove_all(f->dir);
}

// The prompt builder alone, over every chat template family and tight budgets.
TEST(MemoryPromptBuilder, FitsForEveryTemplateAndBudget) {
    const auto& tok = *shared_engine().model().tokenizer;
    PromptParts parts;
    parts.instructions = kDefaultInstructions;
    for (int i = 0; i < 50; ++i) parts.sources.push_back("doc (part " + std::to_string(i) + "):\n" + std::string(800, 'a' + i % 26));
    for (int i = 0; i < 40; ++i) parts.history.push_back({i % 2 ? "assistant" : "user", "turn " + std::to_string(i) + " " + std::string(200, 'x')});
    parts.question = "What is it?";
    for (const char* name : {"chatml", "llama2", "llama3", "mistral", "gemma", "phi3"}) {
        auto tmpl = chat::ChatTemplate::by_name(name);
        ASSERT_TRUE(tmpl.ok()) << name;
        for (int32_t n_ctx : {400, 600, 1000, 4096}) {
            for (int32_t max_tokens : {1, 50}) {
                PromptBudget b{n_ctx, max_tokens, n_ctx / 4};
                auto p = build_prompt(*tmpl, tok, parts, b);
                ASSERT_TRUE(p.ok()) << name << " " << n_ctx << ": " << p.error().what();
                EXPECT_LE(static_cast<int32_t>(p->tokens.size()) + max_tokens, n_ctx) << name << " " << n_ctx;
                EXPECT_FALSE(p->included.empty()) << name << " " << n_ctx;  // the top source, cut if need be
                EXPECT_EQ(p->included[0], 0);
                EXPECT_NE(p->text.find("Question: What is it?"), std::string::npos);
                // The instruction prefix is the same for every prompt (prefix-cache reuse).
                EXPECT_LT(p->text.find(kDefaultInstructions), p->text.find("Question:"));
            }
        }
    }
}

// 1,000 sequential asks leave the KV cache at its baseline: no live cells between asks.
TEST(MemoryEndToEnd, ThousandAsksLeaveKvCacheAtBaseline) {
    // A smaller model than the other tests (1 layer, dim 32) keeps 1,000 prefills quick.
    auto small = engine::testing::make_engine(engine::testing::load_synthetic("memory-soak", 32, 1, 64), 256, 2, 128);
    auto f = make_fixture("soak", ChunkOptions{32, 4}, small.get());
    ASSERT_TRUE(f->mem->ingest_file(testing::data_dir() + "/orbital_notes.txt", "default", {}).ok());
    ASSERT_TRUE(f->mem->ingest_file(testing::data_dir() + "/zebra_facts.html", "default", {}).ok());
    auto& cache = small->cache();
    const auto before = cache.stats();
    EXPECT_EQ(before.used, 0);
    AskOptions o;
    o.max_tokens = 2;
    o.n_candidates = 1;
    o.instructions = "Answer from the sources.";
    const char* questions[] = {"What is a Hohmann transfer?", "How fast is a zebra?", "What is delta-v?", "Where do zebras migrate?"};
    for (int i = 0; i < 1000; ++i) {
        auto a = f->mem->ask(questions[i % 4], o);
        ASSERT_TRUE(a.ok()) << "ask " << i << ": " << a.error().what();
        const auto st = cache.stats();
        ASSERT_EQ(st.used, 0) << "ask " << i;
        ASSERT_EQ(st.n_sequences, 0) << "ask " << i;
        ASSERT_EQ(st.reserved, 0) << "ask " << i;
    }
    EXPECT_EQ(f->n_generate_calls, 1000);
    EXPECT_TRUE(cache.check_invariants().empty());
    EXPECT_GT(cache.stats().prefix_hits, 0u) << "the shared instruction prefix is reused";
    fs::remove_all(f->dir);
}

}  // namespace
}  // namespace kvrag::memory
