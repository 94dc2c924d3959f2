// Extraction of each supported type, and clear per-document errors for the rest.
#include "memory/extract.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "memory/memory_test_util.h"

namespace kvrag::memory {
namespace {

std::string read(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

TEST(MemoryExtract, TypesByExtensionAndMime) {
    EXPECT_EQ(*doc_type_for("a/b/README.md"), DocType::markdown);
    EXPECT_EQ(*doc_type_for("x.HTML"), DocType::html);
    EXPECT_EQ(*doc_type_for("x.pdf"), DocType::pdf);
    EXPECT_EQ(*doc_type_for("notes.txt"), DocType::text);
    EXPECT_EQ(*doc_type_for("blob", "application/pdf"), DocType::pdf);
    auto bad = doc_type_for("report.docx");
    ASSERT_FALSE(bad.ok());
    EXPECT_EQ(bad.error().code, Errc::memory_unsupported_type);
    EXPECT_NE(bad.error().message.find("'.docx'"), std::string::npos) << bad.error().message;
    EXPECT_EQ(doc_type_for("Makefile").error().code, Errc::memory_unsupported_type);
}

TEST(MemoryExtract, MarkdownKeepsTextAndBlocks) {
    auto t = extract_text(read(testing::data_dir() + "/sourdough.md"), DocType::markdown, "sourdough.md");
    ASSERT_TRUE(t.ok()) << t.error().what();
    EXPECT_NE(t->find("Sourdough bread\n\n"), std::string::npos) << *t;
    EXPECT_NE(t->find("Dutch oven"), std::string::npos);
    EXPECT_NE(t->find("hydration = water / flour"), std::string::npos);
    EXPECT_EQ(t->find("##"), std::string::npos);
    EXPECT_EQ(t->find("```"), std::string::npos);
}

TEST(MemoryExtract, HtmlSkipsScriptsAndToleratesBrokenMarkup) {
    auto z = extract_text(read(testing::data_dir() + "/zebra_facts.html"), DocType::html, "zebra_facts.html");
    ASSERT_TRUE(z.ok()) << z.error().what();
    EXPECT_NE(z->find("unique stripe pattern"), std::string::npos) << *z;
    EXPECT_EQ(z->find("xylophonist"), std::string::npos) << "script text leaked";
    EXPECT_EQ(z->find("font-family"), std::string::npos) << "style text leaked";
    auto l = extract_text(read(testing::data_dir() + "/lighthouse.html"), DocType::html, "lighthouse.html");
    ASSERT_TRUE(l.ok());
    EXPECT_NE(l->find("automated in 1962"), std::string::npos);
    EXPECT_NE(l->find("with bold text"), std::string::npos);
}

TEST(MemoryExtract, PdfTextAndBrokenPdf) {
    auto t = extract_text(testing::make_pdf("The aardvark eats termites at night.\nSecond line here."), DocType::pdf, "a.pdf");
    ASSERT_TRUE(t.ok()) << t.error().what();
    EXPECT_NE(t->find("aardvark eats termites"), std::string::npos) << *t;
    EXPECT_NE(t->find("Second line"), std::string::npos) << *t;
    auto broken = extract_text(read(testing::data_dir() + "/broken.pdf"), DocType::pdf, "broken.pdf");
    ASSERT_FALSE(broken.ok());
    EXPECT_EQ(broken.error().code, Errc::memory_extract);
    EXPECT_NE(broken.error().message.find("broken.pdf"), std::string::npos) << broken.error().message;
    EXPECT_FALSE(extract_text("hello", DocType::pdf, "x.pdf").ok());
}

TEST(MemoryExtract, BinaryEmptyAndInvalidUtf8) {
    auto bin = extract_text(std::string("abc\0def", 7), DocType::text, "x.txt");
    ASSERT_FALSE(bin.ok());
    EXPECT_NE(bin.error().message.find("NUL byte at offset 3"), std::string::npos) << bin.error().message;
    auto empty = extract_text("  \n\n ", DocType::text, "e.txt");
    ASSERT_FALSE(empty.ok());
    EXPECT_NE(empty.error().message.find("has no text"), std::string::npos);
    EXPECT_FALSE(extract_text("<html><script>x</script></html>", DocType::html, "s.html").ok());
    auto bad = extract_text("ok \xff\xfe end", DocType::text, "u.txt");
    ASSERT_TRUE(bad.ok());
    EXPECT_EQ(*bad, "ok \xEF\xBF\xBD\xEF\xBF\xBD end");
}

// Found while writing tests/fuzz/extract_fuzz.cpp's "extracted text is valid UTF-8" invariant:
// byte sequences with the right shape but outside RFC 3629's ranges (a UTF-16 surrogate,
// overlong forms, a code point past U+10FFFF) passed through as if valid, so the store held
// text that strict UTF-8 readers reject.
TEST(MemoryExtract, IllFormedSequencesOfValidShapeBecomeReplacementCharacters) {
    const std::string r = "\xEF\xBF\xBD";
    const struct {
        const char* in;
        std::string want;
    } cases[] = {
        {"a\xED\xA0\x80z", "a" + r + r + r + "z"},          // U+D800, a surrogate
        {"a\xE0\x80\xAFz", "a" + r + r + r + "z"},          // overlong '/'
        {"a\xF0\x80\x80\xAFz", "a" + r + r + r + r + "z"},  // overlong '/' in four bytes
        {"a\xF4\x90\x80\x80z", "a" + r + r + r + r + "z"},  // U+110000
        {"a\xF5\x80\x80\x80z", "a" + r + r + r + r + "z"},  // no lead byte past F4
        {"a\xC0\xAFz", "a" + r + r + "z"},                  // C0 is never a lead byte
        // The extremes of the valid ranges stay as they are.
        {"\xED\x9F\xBF \xEE\x80\x80 \xF4\x8F\xBF\xBD \xE0\xA0\x80 \xF0\x90\x80\x80",
         "\xED\x9F\xBF \xEE\x80\x80 \xF4\x8F\xBF\xBD \xE0\xA0\x80 \xF0\x90\x80\x80"},
    };
    for (const auto& c : cases) {
        for (DocType type : {DocType::text, DocType::markdown, DocType::html}) {
            auto t = extract_text(c.in, type, "u.txt");
            ASSERT_TRUE(t.ok()) << t.error().what();
            // Markdown and HTML add block breaks around the text; the characters are the same.
            EXPECT_NE(t->find(c.want), std::string::npos) << doc_type_name(type) << ": " << *t;
        }
    }
}

}  // namespace
}  // namespace kvrag::memory
