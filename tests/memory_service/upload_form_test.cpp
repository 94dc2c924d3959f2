// The /upload body without a server: kvrag's multipart parser on the bytes .NET, curl and
// odd clients write, and Kernel Memory's form rules (tests/fuzz/multipart_fuzz.cpp runs the
// same functions on arbitrary bytes).
#include "memory_service/upload_form.h"

#include <gtest/gtest.h>

namespace kvrag::memory_service {
namespace {

// What .NET's MultipartFormDataContent writes for MemoryWebClient.ImportDocumentAsync: string
// fields with a Content-Type line first and an unquoted name; file parts (ByteArrayContent)
// with no Content-Type, unquoted name and filename, and filename*.
const char* kDotnetBody =
    "--6c2a9b1e-1b7f-4d3c-9a35-0b8e7c2f4d11\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Disposition: form-data; name=index\r\n"
    "\r\n"
    "kb\r\n"
    "--6c2a9b1e-1b7f-4d3c-9a35-0b8e7c2f4d11\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Disposition: form-data; name=documentId\r\n"
    "\r\n"
    "doc-1\r\n"
    "--6c2a9b1e-1b7f-4d3c-9a35-0b8e7c2f4d11\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Disposition: form-data; name=tags\r\n"
    "\r\n"
    "user:ann\r\n"
    "--6c2a9b1e-1b7f-4d3c-9a35-0b8e7c2f4d11\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Disposition: form-data; name=tags\r\n"
    "\r\n"
    "draft\r\n"
    "--6c2a9b1e-1b7f-4d3c-9a35-0b8e7c2f4d11\r\n"
    "Content-Disposition: form-data; name=file0; filename=a.txt; filename*=utf-8''a.txt\r\n"
    "\r\n"
    "alpha\r\nwith a line\r\n"
    "--6c2a9b1e-1b7f-4d3c-9a35-0b8e7c2f4d11\r\n"
    "Content-Disposition: form-data; name=file1; filename=\"=?utf-8?B?w6kgZi5tZA==?=\"; filename*=utf-8''%C3%A9%20f.md\r\n"
    "\r\n"
    "# beta\r\n"
    "--6c2a9b1e-1b7f-4d3c-9a35-0b8e7c2f4d11--\r\n";

TEST(Multipart, DotnetFormWithUnquotedParametersAndQuotedBoundary) {
    auto b = multipart_boundary("multipart/form-data; boundary=\"6c2a9b1e-1b7f-4d3c-9a35-0b8e7c2f4d11\"");
    ASSERT_TRUE(b.ok()) << b.error().what();
    EXPECT_EQ(*b, "6c2a9b1e-1b7f-4d3c-9a35-0b8e7c2f4d11");
    auto parts = parse_multipart(kDotnetBody, *b);
    ASSERT_TRUE(parts.ok()) << parts.error().what();
    ASSERT_EQ(parts->size(), 6u);
    EXPECT_EQ((*parts)[0].name, "index");
    EXPECT_EQ((*parts)[0].content, "kb");
    EXPECT_EQ((*parts)[0].content_type, "text/plain; charset=utf-8");
    EXPECT_FALSE((*parts)[0].has_filename);
    EXPECT_EQ((*parts)[4].name, "file0");
    EXPECT_EQ((*parts)[4].filename, "a.txt");
    EXPECT_EQ((*parts)[4].content, "alpha\r\nwith a line");  // a CRLF inside content is content
    EXPECT_EQ((*parts)[5].filename, "\xC3\xA9 f.md");            // filename* wins, percent-decoded

    auto form = parse_upload_form(*parts);
    ASSERT_TRUE(form.ok()) << form.error().what();
    EXPECT_EQ(form->index, "kb");
    EXPECT_EQ(form->doc_id, "doc-1");
    EXPECT_EQ(form->tags, (memory::Tags{{"user", "ann"}, {"draft", ""}}));  // "draft" alone: a tag without a value
    ASSERT_EQ(form->files.size(), 2u);

    // Document.AddFiles: one Kernel Memory document, two kvrag documents tied by __document_id.
    const auto docs = file_documents(*form);
    ASSERT_EQ(docs.size(), 2u);
    EXPECT_EQ(docs[0].km_document_id, "doc-1");
    EXPECT_EQ(docs[0].doc_id, "doc-1__0");
    EXPECT_EQ(docs[1].doc_id, "doc-1__1");
    EXPECT_EQ(docs[0].content_type, "");
}

TEST(Multipart, CurlStyleQuotedParametersAndBareBoundary) {
    const std::string body =
        "preamble to ignore\r\n"
        "--XyZ\r\n"
        "content-disposition: form-data; name=\"file1\"; filename=\"notes.md\"\r\n"
        "content-type: text/markdown\r\n"
        "\r\n"
        "# notes\r\n"
        "--XyZ\r\n"
        "Content-Disposition: form-data; name=\"index\"\r\n"
        "\r\n"
        "\r\n"
        "--XyZ--";
    auto b = multipart_boundary("Multipart/Form-Data;boundary=XyZ");
    ASSERT_TRUE(b.ok());
    auto parts = parse_multipart(body, *b);
    ASSERT_TRUE(parts.ok()) << parts.error().what();
    ASSERT_EQ(parts->size(), 2u);
    EXPECT_EQ((*parts)[0].filename, "notes.md");
    EXPECT_EQ((*parts)[0].content_type, "text/markdown");
    auto form = parse_upload_form(*parts);
    ASSERT_TRUE(form.ok()) << form.error().what();
    EXPECT_EQ(form->index, "default");  // an empty index means Kernel Memory's default
    const auto docs = file_documents(*form);
    ASSERT_EQ(docs.size(), 1u);
    EXPECT_EQ(docs[0].doc_id, "notes.md");
    EXPECT_EQ(docs[0].content_type, "text/markdown");
}

TEST(Multipart, MalformedBodiesAreRefusedNamingWhatIsWrong) {
    struct Case {
        std::string body;
        const char* message_part;
    };
    const Case cases[] = {
        {"no delimiter at all", "no multipart delimiter"},
        {"--B\r\nContent-Disposition: form-data; name=a\r\n\r\ncut off", "not closed by a delimiter"},
        {"--B\r\nContent-Disposition: form-data; name=a\r\n", "headers never end"},
        {"--B\r\nX-Other: 1\r\n\r\nv\r\n--B--", "no Content-Disposition"},
        {"--B\r\nContent-Disposition: attachment; name=a\r\n\r\nv\r\n--B--", "not form-data"},
        {"--Bjunk", "not followed by a line end"},
    };
    for (const auto& c : cases) {
        auto p = parse_multipart(c.body, "B");
        ASSERT_FALSE(p.ok()) << c.message_part;
        EXPECT_EQ(p.error().code, Errc::memory_bad_input);
        EXPECT_NE(p.error().message.find(c.message_part), std::string::npos) << p.error().message;
    }
    EXPECT_FALSE(multipart_boundary("application/json").ok());
    EXPECT_FALSE(multipart_boundary("multipart/form-data").ok());
    EXPECT_FALSE(multipart_boundary("multipart/form-data; boundary=" + std::string(71, 'a')).ok());
}

FormPart field(std::string name, std::string_view content) {
    FormPart p;
    p.name = std::move(name);
    p.content = content;
    return p;
}

FormPart file(std::string name, std::string filename, std::string_view content = "x") {
    FormPart p = field(std::move(name), content);
    p.filename = std::move(filename);
    p.has_filename = true;
    return p;
}

TEST(UploadForm, StepsArgsAndRefusals) {
    {
        const std::vector<FormPart> parts = {file("f", "a.txt"), field("steps", "extract, partition;gen_embeddings save_records"),
                                             field("args", "{}")};
        auto f = parse_upload_form(parts);
        ASSERT_TRUE(f.ok()) << f.error().what();
        EXPECT_EQ(f->steps.size(), 4u);
    }
    struct Case {
        std::vector<FormPart> parts;
        const char* message_part;
    };
    const Case cases[] = {
        {{field("index", "x")}, "carries no file"},
        {{file("a", "a.txt"), field("tags", "__document_id:x")}, "reserved"},
        {{file("a", "a.txt"), field("tags", ":v")}, "empty key"},
        {{file("a", "a.txt"), file("b", "a.txt")}, "given twice"},
        {{file("a", "")}, "empty file name"},
        {{file("a", "a.txt"), field("index", "x"), field("index", "y")}, "'index' is given twice"},
        {{file("a", "a.txt"), field("steps", "extract summarize")}, "step 'summarize' is not supported"},
        {{file("a", "a.txt"), field("steps", "partition extract gen_embeddings save_records")}, "not kvrag's pipeline"},
        {{file("a", "a.txt"), field("args", "{\"custom_partitioning_max_tokens_per_paragraph_int\": 100}")},
         "custom_partitioning_max_tokens_per_paragraph_int"},
        {{file("a", "a.txt"), field("args", "[1]")}, "not a JSON object"},
        {{file("a", "a.txt"), field("color", "red")}, "form field 'color'"},
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
