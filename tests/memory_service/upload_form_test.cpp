// The /upload form rules without a server: which parts are documents, which are fields, and
// the refusals (tests/fuzz/multipart_fuzz.cpp runs the same function behind cpp-httplib).
#include "memory_service/upload_form.h"

#include <gtest/gtest.h>

namespace kvrag::memory_service {
namespace {

httplib::MultipartFormData part(std::string name, std::string content, std::string filename = "") {
    std::string type = filename.empty() ? "" : "text/plain";
    return httplib::MultipartFormData{std::move(name), std::move(content), std::move(filename), std::move(type)};
}

httplib::MultipartFormDataMap form_of(std::initializer_list<httplib::MultipartFormData> parts) {
    httplib::MultipartFormDataMap m;
    for (const auto& p : parts) m.emplace(p.name, p);
    return m;
}

TEST(UploadForm, FieldsAndFilesAreSeparatedByFileName) {
    const auto parts = form_of({part("file1", "hello", "a.txt"), part("index", "notes"), part("tags", "user:ann"),
                                part("tags", "k:v:w"), part("steps", "ignored")});
    auto f = parse_upload_form(parts);
    ASSERT_TRUE(f.ok()) << f.error().what();
    EXPECT_EQ(f->index, "notes");
    EXPECT_EQ(f->doc_id, "");
    ASSERT_EQ(f->files.size(), 1u);
    EXPECT_EQ(f->files[0]->filename, "a.txt");
    // The value keeps everything after the first colon.
    EXPECT_EQ(f->tags, (memory::Tags{{"user", "ann"}, {"k", "v:w"}}));
}

TEST(UploadForm, EmptyIndexKeepsTheDefault) {
    const auto parts = form_of({part("file", "x", "a.md"), part("index", "")});
    auto f = parse_upload_form(parts);
    ASSERT_TRUE(f.ok());
    EXPECT_EQ(f->index, "default");
}

TEST(UploadForm, Refusals) {
    struct Case {
        httplib::MultipartFormDataMap parts;
        const char* message_part;
    };
    const Case cases[] = {
        {form_of({part("index", "x")}), "carries no file"},
        {form_of({part("a", "1", "a.txt"), part("tags", "novalue")}), "is not key:value"},
        {form_of({part("a", "1", "a.txt"), part("tags", ":v")}), "is not key:value"},
        {form_of({part("a", "1", "a.txt"), part("b", "2", "b.txt"), part("documentId", "d")}), "documentId with 2 files"},
    };
    for (const auto& c : cases) {
        auto f = parse_upload_form(c.parts);
        ASSERT_FALSE(f.ok()) << c.message_part;
        EXPECT_EQ(f.error().code, Errc::memory_bad_input);
        EXPECT_NE(f.error().message.find(c.message_part), std::string::npos) << f.error().message;
    }
}

}  // namespace
}  // namespace kvrag::memory_service
