// Kernel Memory wire compatibility, end to end: the real `kvrag serve --memory --api-key`
// binary gets the requests MemoryWebClient (microsoft/kernel-memory, archived/km-v1,
// clients/dotnet/WebClient/MemoryWebClient.cs) and the km-cli scripts send, byte for byte as
// .NET's HttpClient, MultipartFormDataContent and System.Text.Json write them (unquoted part
// parameters, filename*, a quoted boundary, `Authorization: KEY`, KM's property names with
// nulls), and every answer is checked against Kernel Memory's types (field names, lists vs
// objects, ISO-8601 dates) as System.Text.Json would read them.
#include <gtest/gtest.h>
#include <httplib.h>

#include <cctype>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <thread>
#include <string>
#include <vector>

#include "server/server_process.h"

namespace kvrag {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using testing::ServerProcess;

constexpr const char* kKey = "km-secret-42";
// .NET's MultipartFormDataContent boundary: a GUID, quoted in the Content-Type header.
constexpr const char* kBoundary = "c5d3e9c4-8a1b-4b7e-9f0e-6d2a1c3b4e5f";

struct DotnetFile {
    std::string name;
    std::string bytes;
};

// MemoryWebClient.ImportInternalAsync's form as .NET writes it: StringContent fields (a
// Content-Type line, then an unquoted name) for index, documentId, steps and tags; one
// ByteArrayContent per file (no Content-Type; name=fileN; filename and filename*).
std::string dotnet_upload_body(const std::string& index, const std::string& doc_id, const std::vector<std::string>& tags,
                               const std::vector<DotnetFile>& files, const std::vector<std::string>& steps = {}) {
    const std::string b = kBoundary;
    std::string out;
    auto field = [&](const std::string& name, const std::string& value) {
        out += "--" + b + "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Disposition: form-data; name=" + name + "\r\n\r\n" + value + "\r\n";
    };
    field("index", index);
    field("documentId", doc_id);
    for (const auto& s : steps) field("steps", s);
    for (const auto& t : tags) field("tags", t);
    for (size_t i = 0; i < files.size(); ++i) {
        out += "--" + b + "\r\nContent-Disposition: form-data; name=file" + std::to_string(i) + "; filename=" + files[i].name +
               "; filename*=utf-8''" + files[i].name + "\r\n\r\n" + files[i].bytes + "\r\n";
    }
    out += "--" + b + "--\r\n";
    return out;
}

// ---- Kernel Memory's types, as System.Text.Json reads them ----

bool is_iso8601(const json& v) {
    static const std::regex re(R"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2}))");
    return v.is_string() && std::regex_match(v.get<std::string>(), re);
}

void expect_string(const json& o, const char* k) {
    ASSERT_TRUE(o.contains(k)) << k << " missing in " << o.dump();
    EXPECT_TRUE(o[k].is_string()) << k << " in " << o.dump();
}

// TagCollection: an object of lists of strings (or null).
void expect_tag_collection(const json& t) {
    ASSERT_TRUE(t.is_object()) << t.dump();
    for (const auto& [k, v] : t.items()) {
        ASSERT_TRUE(v.is_array()) << k;
        for (const auto& x : v) EXPECT_TRUE(x.is_string() || x.is_null()) << k;
    }
}

void expect_citation(const json& c) {
    for (const char* k : {"link", "index", "documentId", "fileId", "sourceContentType", "sourceName"}) expect_string(c, k);
    if (c.contains("sourceUrl")) { EXPECT_TRUE(c["sourceUrl"].is_string() || c["sourceUrl"].is_null()); }
    ASSERT_TRUE(c["partitions"].is_array());
    for (const auto& p : c["partitions"]) {
        expect_string(p, "text");
        EXPECT_TRUE(p["relevance"].is_number());
        EXPECT_TRUE(p["partitionNumber"].is_number_integer());
        EXPECT_TRUE(p["sectionNumber"].is_number_integer());
        EXPECT_TRUE(is_iso8601(p["lastUpdate"])) << p["lastUpdate"];
        expect_tag_collection(p["tags"]);
        // Kernel Memory's reserved tags on every partition.
        for (const char* k : {"__document_id", "__file_id", "__file_part", "__part_n", "__sect_n", "__file_type"}) {
            ASSERT_TRUE(p["tags"].contains(k)) << k;
            EXPECT_EQ(p["tags"][k].size(), 1u) << k;
        }
        EXPECT_EQ(p["tags"]["__document_id"][0], c["documentId"]);
        EXPECT_EQ(p["tags"]["__part_n"][0], std::to_string(p["partitionNumber"].get<int>()));
    }
}

void expect_memory_answer(const json& a) {
    if (a.contains("streamState")) {
        const std::string s = a["streamState"];
        EXPECT_TRUE(s == "error" || s == "reset" || s == "append" || s == "last") << s;
    }
    if (a.contains("question")) { EXPECT_TRUE(a["question"].is_string()); }
    EXPECT_TRUE(a["noResult"].is_boolean());
    if (a.contains("noResultReason")) { EXPECT_TRUE(a["noResultReason"].is_string() || a["noResultReason"].is_null()); }
    expect_string(a, "text");
    if (a.contains("tokenUsage")) {
        ASSERT_TRUE(a["tokenUsage"].is_array()) << "tokenUsage must be a list of TokenUsage";
        for (const auto& u : a["tokenUsage"]) {
            EXPECT_TRUE(is_iso8601(u["timestamp"]));
            for (const char* k : {"tokenizerTokensIn", "tokenizerTokensOut", "serviceTokensIn", "serviceTokensOut"}) {
                if (u.contains(k)) { EXPECT_TRUE(u[k].is_number_integer()) << k; }
            }
        }
    }
    if (a.contains("relevantSources")) {
        ASSERT_TRUE(a["relevantSources"].is_array());
        for (const auto& c : a["relevantSources"]) expect_citation(c);
    }
}

void expect_pipeline_status(const json& s) {
    for (const char* k : {"completed", "empty"}) EXPECT_TRUE(s[k].is_boolean()) << k;
    expect_string(s, "index");
    expect_string(s, "document_id");
    expect_tag_collection(s["tags"]);
    EXPECT_TRUE(is_iso8601(s["creation"])) << s["creation"];
    EXPECT_TRUE(is_iso8601(s["last_update"])) << s["last_update"];
    for (const char* k : {"steps", "remaining_steps", "completed_steps"}) {
        ASSERT_TRUE(s[k].is_array()) << k;
        for (const auto& x : s[k]) EXPECT_TRUE(x.is_string());
    }
}

class KmWireTest : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        dir_ = new fs::path(fs::temp_directory_path() / ("kvrag-km-wire-" + std::to_string(getpid())));
        fs::create_directories(*dir_);
        ASSERT_EQ(testing::run_kvrag_sync({"make-model", "-o", (*dir_ / "chat.gguf").string(), "--dim", "64", "--layers", "2", "--heads", "4",
                                           "--kv-heads", "2", "--ff", "128"}),
                  0);
        srv_ = new ServerProcess;
        ASSERT_TRUE(srv_->start({"-m", (*dir_ / "chat.gguf").string(), "--memory", (*dir_ / "store").string(), "--api-key", kKey, "--ctx", "512",
                                 "--chunk-tokens", "32", "--chunk-overlap", "0", "-t", "1"},
                                (*dir_ / "serve.log").string()))
            << srv_->log();
    }
    static void TearDownTestSuite() {
        if (srv_) srv_->stop();
        delete srv_;
        srv_ = nullptr;
        fs::remove_all(*dir_);
        delete dir_;
    }

    // The client's DefaultRequestHeaders: the raw key under Authorization (KM's default).
    static httplib::Client client() {
        httplib::Client cli("127.0.0.1", srv_->port());
        cli.set_read_timeout(60, 0);
        cli.set_default_headers({{"Authorization", kKey}});
        return cli;
    }
    static httplib::Result upload(const std::string& body) {
        return client().Post("/upload", body, std::string("multipart/form-data; boundary=\"") + kBoundary + "\"");
    }
    // System.Text.Json's StringContent: application/json; charset=utf-8.
    static httplib::Result post_json(const std::string& path, const std::string& body) {
        return client().Post(path.c_str(), body, "application/json; charset=utf-8");
    }
    // IsDocumentReadyAsync's loop: status != null && completed && !empty (bounded).
    static bool ready(const std::string& path) {
        for (int i = 0; i < 100; ++i) {
            auto r = client().Get(path.c_str());
            if (r && r->status == 200) {
                const json s = json::parse(r->body);
                expect_pipeline_status(s);
                if (s["completed"].get<bool>() && !s["empty"].get<bool>()) return true;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        return false;
    }

    static fs::path* dir_;
    static ServerProcess* srv_;
};
fs::path* KmWireTest::dir_ = nullptr;
ServerProcess* KmWireTest::srv_ = nullptr;

TEST_F(KmWireTest, RawKeyHeaderIsTheApiKeyAndOthersAreRefused) {
    auto ok = client().Get("/indexes");
    ASSERT_TRUE(ok);
    EXPECT_EQ(ok->status, 200) << ok->body;
    httplib::Client anon("127.0.0.1", srv_->port());
    auto no = anon.Get("/indexes", {{"Authorization", "wrong-key"}});
    ASSERT_TRUE(no);
    EXPECT_EQ(no->status, 401);
}

TEST_F(KmWireTest, ImportDocumentWithSeveralFilesStatusSearchAskDownloadDelete) {
    // ImportDocumentAsync(new Document("manual").AddFiles([...]).AddTag("team", "red")), index null.
    const std::string a = "The Quillback lighthouse was automated in 1962 by the harbour board.";
    const std::string b = "# Keepers\n\nMarta Vell kept the Quillback light until the automation.";
    auto up = upload(dotnet_upload_body("", "manual", {"team:red"}, {{"lighthouse.txt", a}, {"keepers.md", b}},
                                        {"extract", "partition", "gen_embeddings", "save_records"}));
    ASSERT_TRUE(up);
    ASSERT_EQ(up->status, 202) << up->body;
    const json acc = json::parse(up->body);  // UploadAccepted
    EXPECT_EQ(acc["index"], "default");
    EXPECT_EQ(acc["documentId"], "manual");
    expect_string(acc, "message");

    // GetDocumentStatusAsync / IsDocumentReadyAsync with index null.
    ASSERT_TRUE(ready("/upload-status?index=&documentId=manual"));
    const json st = json::parse(client().Get("/upload-status?index=&documentId=manual")->body);
    EXPECT_EQ(st["index"], "default");
    EXPECT_EQ(st["document_id"], "manual");
    EXPECT_EQ(st["tags"]["team"], json::array({"red"}));
    EXPECT_EQ(st["completed_steps"].size(), 4u);
    EXPECT_EQ(client().Get("/upload-status?index=&documentId=nope")->status, 404);

    // SearchAsync(query, filter: MemoryFilters.ByDocument("manual")) as SearchQuery serialises.
    auto se = post_json("/search", R"({"index":null,"query":"Quillback lighthouse automated","minRelevance":0,"limit":-1,)"
                                   R"("filters":[{"__document_id":["manual"]}],"args":{}})");
    ASSERT_TRUE(se);
    ASSERT_EQ(se->status, 200) << se->body;
    const json sr = json::parse(se->body);  // SearchResult
    expect_string(sr, "query");
    EXPECT_FALSE(sr["noResult"].get<bool>());
    ASSERT_TRUE(sr["results"].is_array());
    ASSERT_GE(sr["results"].size(), 1u);
    std::set<std::string> names;
    for (const auto& c : sr["results"]) {
        expect_citation(c);
        EXPECT_EQ(c["documentId"], "manual");
        EXPECT_EQ(c["index"], "default");
        names.insert(c["sourceName"].get<std::string>());
        EXPECT_EQ(c["link"], "default/manual/" + c["fileId"].get<std::string>());
    }
    EXPECT_TRUE(names.count("lighthouse.txt")) << se->body;

    // OR of two filter objects: a tag nobody has, or the document. A filter alone that
    // matches nothing gives noResult.
    auto orr = post_json("/search", R"({"index":"","query":"Quillback","minRelevance":0,"limit":5,)"
                                    R"("filters":[{"team":["blue"]},{"team":["red"],"__document_id":["manual"]}],"args":{}})");
    ASSERT_EQ(orr->status, 200) << orr->body;
    EXPECT_FALSE(json::parse(orr->body)["noResult"].get<bool>());
    auto none = post_json("/search", R"({"index":null,"query":"Quillback","minRelevance":0,"limit":-1,"filters":[{"team":["blue"]}],"args":{}})");
    ASSERT_EQ(none->status, 200) << none->body;
    EXPECT_TRUE(json::parse(none->body)["noResult"].get<bool>());

    // One object naming two document ids matches nothing; alone, it filters everything out.
    auto two_ids = post_json("/search", R"({"index":null,"query":"Quillback","limit":-1,"filters":[{"__document_id":["manual","other"]}],"args":{}})");
    ASSERT_EQ(two_ids->status, 200) << two_ids->body;
    EXPECT_TRUE(json::parse(two_ids->body)["noResult"].get<bool>());

    // Nothing relevant, not streamed: noResult with its reason and custom_rag_empty_answer_str.
    auto nothing = post_json("/ask", R"({"index":null,"question":"anything","minRelevance":0,"stream":false,"filters":[{"team":["blue"]}],)"
                                     R"("args":{"custom_rag_empty_answer_str":"INFO NOT FOUND"}})");
    ASSERT_EQ(nothing->status, 200) << nothing->body;
    const json na = json::parse(nothing->body);
    expect_memory_answer(na);
    EXPECT_TRUE(na["noResult"].get<bool>());
    EXPECT_EQ(na["text"], "INFO NOT FOUND");
    expect_string(na, "noResultReason");

    // AskAsync (MemoryQuery, stream false) with km-cli's args.
    auto ask = post_json("/ask", R"({"index":null,"question":"When was the lighthouse automated?","minRelevance":0,"stream":false,)"
                                 R"("filters":[],"args":{"custom_rag_max_tokens_int":4}})");
    ASSERT_TRUE(ask);
    ASSERT_EQ(ask->status, 200) << ask->body;
    const json ans = json::parse(ask->body);
    expect_memory_answer(ans);
    EXPECT_FALSE(ans.contains("streamState"));
    EXPECT_FALSE(ans["noResult"].get<bool>());
    ASSERT_EQ(ans["tokenUsage"].size(), 1u);
    EXPECT_LE(ans["tokenUsage"][0]["tokenizerTokensOut"].get<int>(), 4);
    EXPECT_GE(ans["relevantSources"].size(), 1u);

    // AskStreamingAsync(options: Stream = true): SSE of MemoryAnswer parts, then [DONE].
    auto sse = post_json("/ask", R"({"index":null,"question":"When was the lighthouse automated?","minRelevance":0,"stream":true,)"
                                 R"("filters":[],"args":{"custom_rag_max_tokens_int":4}})");
    ASSERT_TRUE(sse);
    ASSERT_EQ(sse->status, 200) << sse->body;
    EXPECT_EQ(sse->get_header_value("Content-Type").rfind("text/event-stream", 0), 0u);
    std::vector<json> parts;
    bool done = false;
    size_t pos = 0;
    while (pos < sse->body.size()) {
        const size_t end = sse->body.find("\n\n", pos);
        ASSERT_NE(end, std::string::npos) << "an event without its blank line: " << sse->body.substr(pos);
        const std::string ev = sse->body.substr(pos, end - pos);
        pos = end + 2;
        ASSERT_EQ(ev.rfind("data: ", 0), 0u) << ev;
        if (ev == "data: [DONE]") {
            done = true;
            continue;
        }
        EXPECT_FALSE(done) << "an event after [DONE]";
        parts.push_back(json::parse(ev.substr(6)));
        expect_memory_answer(parts.back());
    }
    EXPECT_TRUE(done);
    ASSERT_GE(parts.size(), 2u);
    EXPECT_EQ(parts.front()["streamState"], "reset");
    EXPECT_GE(parts.front()["relevantSources"].size(), 1u);
    EXPECT_EQ(parts.back()["streamState"], "last");
    ASSERT_EQ(parts.back()["tokenUsage"].size(), 1u);
    // The client's AskAsync fold: reset text + appended texts = the answer, as without streaming.
    std::string text;
    for (const auto& p : parts) text += p["text"].get<std::string>();
    while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
    EXPECT_EQ(text, ans["text"].get<std::string>());

    // Nothing relevant: one reset part with noResult, then [DONE].
    auto empty = post_json("/ask", R"({"index":null,"question":"anything","minRelevance":0,"stream":true,"filters":[{"team":["blue"]}],"args":{}})");
    ASSERT_EQ(empty->status, 200) << empty->body;
    EXPECT_NE(empty->body.find("\"streamState\":\"reset\""), std::string::npos) << empty->body;
    EXPECT_NE(empty->body.find("\"noResult\":true"), std::string::npos) << empty->body;
    EXPECT_NE(empty->body.find("data: [DONE]\n\n"), std::string::npos);

    // ExportFileAsync: the original bytes, Content-Type and Last-Modified.
    auto dl = client().Get("/download?index=&documentId=manual&filename=keepers.md");
    ASSERT_TRUE(dl);
    ASSERT_EQ(dl->status, 200) << dl->body;
    EXPECT_EQ(dl->body, b);
    EXPECT_TRUE(dl->has_header("Last-Modified"));
    EXPECT_EQ(client().Get("/download?index=&documentId=manual&filename=other.md")->status, 404);

    // Re-importing the document with one file replaces both.
    auto again = upload(dotnet_upload_body("", "manual", {}, {{"lighthouse.txt", a}}));
    ASSERT_EQ(again->status, 202) << again->body;
    ASSERT_TRUE(ready("/upload-status?index=&documentId=manual"));
    EXPECT_EQ(json::parse(client().Get("/upload-status?index=&documentId=manual")->body)["files"].size(), 1u);
    EXPECT_EQ(client().Get("/download?index=&documentId=manual&filename=keepers.md")->status, 404);

    // DeleteDocumentAsync("manual") with index null: 202 DeleteAccepted, then gone.
    auto del = client().Delete("/documents?index=&documentId=manual");
    ASSERT_TRUE(del);
    EXPECT_EQ(del->status, 202) << del->body;
    const json da = json::parse(del->body);
    EXPECT_EQ(da["index"], "default");
    EXPECT_EQ(da["documentId"], "manual");
    expect_string(da, "message");
    EXPECT_EQ(client().Get("/upload-status?index=&documentId=manual")->status, 404);
    EXPECT_EQ(client().Delete("/documents?index=&documentId=manual")->status, 404);  // the client treats 404 as done
}

TEST_F(KmWireTest, ImportTextListIndexesDeleteIndex) {
    // ImportTextAsync(text, documentId: "note-1", index: "notes"): one file "content.txt".
    auto up = upload(dotnet_upload_body("notes", "note-1", {"kind:memo"}, {{"content.txt", "Remember the tide tables for Quillback cove."}}));
    ASSERT_TRUE(up);
    ASSERT_EQ(up->status, 202) << up->body;
    ASSERT_TRUE(ready("/upload-status?index=notes&documentId=note-1"));

    // ListIndexesAsync: IndexCollection.
    auto li = client().Get("/indexes");
    ASSERT_TRUE(li);
    ASSERT_EQ(li->status, 200) << li->body;
    const json ic = json::parse(li->body);
    ASSERT_TRUE(ic["results"].is_array());
    bool found = false;
    for (const auto& i : ic["results"]) {
        expect_string(i, "name");
        found = found || i["name"] == "notes";
    }
    EXPECT_TRUE(found) << li->body;

    // km-cli search.sh: an empty filter object, limit -1, index given.
    auto se = post_json("/search", R"({"query":"tide tables","filters":[{}],"index":"notes","limit":-1})");
    ASSERT_EQ(se->status, 200) << se->body;
    const json sr = json::parse(se->body);
    ASSERT_GE(sr["results"].size(), 1u);
    EXPECT_EQ(sr["results"][0]["sourceName"], "content.txt");
    EXPECT_EQ(sr["results"][0]["partitions"][0]["tags"]["kind"], json::array({"memo"}));

    // Unknown ask arguments and fields are refused by name.
    auto bad = post_json("/ask", R"({"question":"q","args":{"custom_rag_prompt_str":"x"}})");
    EXPECT_EQ(bad->status, 400);
    EXPECT_NE(bad->body.find("custom_rag_prompt_str"), std::string::npos) << bad->body;
    auto badf = post_json("/search", R"({"query":"q","colour":"red"})");
    EXPECT_EQ(badf->status, 400);
    EXPECT_NE(badf->body.find("colour"), std::string::npos) << badf->body;

    // DeleteIndexAsync("notes"): 202 DeleteAccepted; the index is gone.
    auto di = client().Delete("/indexes?index=notes");
    ASSERT_TRUE(di);
    EXPECT_EQ(di->status, 202) << di->body;
    EXPECT_EQ(json::parse(di->body)["index"], "notes");
    EXPECT_EQ(client().Get("/upload-status?index=notes&documentId=note-1")->status, 404);
    EXPECT_EQ(client().Get("/indexes")->body.find("\"notes\""), std::string::npos);
    EXPECT_EQ(client().Delete("/indexes?index=notes")->status, 404);
}


TEST_F(KmWireTest, AFileIdThatIsAnotherDocumentsIdIsRefused) {
    auto two = upload(dotnet_upload_body("clash", "pair", {}, {{"one.txt", "first file"}, {"two.txt", "second file"}}));
    ASSERT_EQ(two->status, 202) << two->body;
    // "pair__0" is the first file of "pair": a document of that id must not replace it.
    auto other = upload(dotnet_upload_body("clash", "pair__0", {}, {{"three.txt", "third file"}}));
    ASSERT_TRUE(other);
    EXPECT_EQ(other->status, 400);
    EXPECT_NE(other->body.find("holds document 'pair'"), std::string::npos) << other->body;
    // Ingestion is asynchronous: the status lists a file once it is stored, so wait as a client
    // does (this read 1 file under ASan when taken at once).
    ASSERT_TRUE(ready("/upload-status?index=clash&documentId=pair"));
    const json st = json::parse(client().Get("/upload-status?index=clash&documentId=pair")->body);
    EXPECT_EQ(st["files"].size(), 2u);
    EXPECT_EQ(client().Delete("/indexes?index=clash")->status, 202);
}

}  // namespace
}  // namespace kvrag
