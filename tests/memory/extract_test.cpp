// Extraction of each supported type, and clear per-document errors for the rest.
#include "memory/extract.h"

#include <gtest/gtest.h>
#include <zlib.h>

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

std::string long_text_for_gzip() {
    std::string t;
    for (int i = 0; i < 2000; ++i) t += "line " + std::to_string(i * 7919 % 10007) + " of a long changelog\n";
    return t;
}

TEST(MemoryExtract, TypesByExtensionAndMime) {
    EXPECT_EQ(*doc_type_for("a/b/README.md"), DocType::markdown);
    EXPECT_EQ(*doc_type_for("x.HTML"), DocType::html);
    EXPECT_EQ(*doc_type_for("x.pdf"), DocType::pdf);
    EXPECT_EQ(*doc_type_for("notes.txt"), DocType::text);
    EXPECT_EQ(*doc_type_for("blob", "application/pdf"), DocType::pdf);
    EXPECT_EQ(*doc_type_for("notes.md.gz"), DocType::markdown);
    // Any other name is text as far as the name goes: the bytes decide (extract_document).
    EXPECT_EQ(*doc_type_for("Makefile"), DocType::text);
    EXPECT_EQ(*doc_type_for("report.docx"), DocType::text);
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

std::string gzip(const std::string& data) {
    z_stream zs{};
    EXPECT_EQ(deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
    std::string out(deflateBound(&zs, data.size()) + 32, '\0');
    zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
    zs.avail_in = static_cast<uInt>(data.size());
    zs.next_out = reinterpret_cast<Bytef*>(out.data());
    zs.avail_out = static_cast<uInt>(out.size());
    EXPECT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
    out.resize(zs.total_out);
    deflateEnd(&zs);
    return out;
}

// What a file is comes from its bytes: text under any name, Windows-1252 with a warning,
// gzip looked through, binary refused with the byte and offset.
TEST(MemoryExtract, TextIsFoundByContentWhateverTheName) {
    for (const char* name : {"README", "AUTHORS", "changelog", "main.c", "tool.py", "run.sh", "server.log", "x.docx"}) {
        auto t = extract_document("int main(void) { return 0; }  /* caf\xC3\xA9 */\n", name);
        ASSERT_TRUE(t.ok()) << name << ": " << t.error().what();
        EXPECT_EQ(t->type, DocType::text) << name;
        EXPECT_TRUE(t->warnings.empty()) << name;
        EXPECT_NE(t->text.find("caf\xC3\xA9"), std::string::npos) << name;
    }
    // A UTF-8 byte-order mark is dropped; terminal colour codes (ESC) are text.
    EXPECT_EQ(extract_document("\xEF\xBB\xBFhello \x1b[1mbold\x1b[0m", "colour.log")->text, "hello \x1b[1mbold\x1b[0m");

    auto latin1 = extract_document("Caf\xE9 cr\xE8me \x80 10, na\xEFve\n", "menu");
    ASSERT_TRUE(latin1.ok()) << latin1.error().what();
    EXPECT_EQ(latin1->text, "Caf\xC3\xA9 cr\xC3\xA8me \xE2\x82\xAC 10, na\xC3\xAFve\n");
    ASSERT_EQ(latin1->warnings.size(), 1u);
    EXPECT_NE(latin1->warnings[0].find("'menu' is not valid UTF-8; read as Windows-1252"), std::string::npos) << latin1->warnings[0];

    auto gz = extract_document(gzip("# Changes\n\nVersion 2 fixed the *tide* tables.\n"), "NEWS.md.gz");
    ASSERT_TRUE(gz.ok()) << gz.error().what();
    EXPECT_EQ(gz->type, DocType::markdown);
    EXPECT_NE(gz->text.find("Version 2 fixed the tide tables."), std::string::npos) << gz->text;
    auto gz_plain = extract_document(gzip("plain changelog text\n"), "changelog.Debian.gz", "application/gzip");
    ASSERT_TRUE(gz_plain.ok()) << gz_plain.error().what();
    EXPECT_EQ(gz_plain->text, "plain changelog text\n");
    std::string cut = gzip(long_text_for_gzip());
    cut.resize(cut.size() / 2);
    auto broken = extract_document(cut, "cut.gz");
    ASSERT_FALSE(broken.ok());
    EXPECT_EQ(broken.error().code, Errc::memory_extract);
    EXPECT_NE(broken.error().message.find("'cut.gz' is a truncated gzip file"), std::string::npos) << broken.error().message;

    auto pdf = extract_document(testing::make_pdf("Found by its header."), "no-extension");
    ASSERT_TRUE(pdf.ok()) << pdf.error().what();
    EXPECT_EQ(pdf->type, DocType::pdf);

    auto png = extract_document(std::string("\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 16), "logo.txt");
    ASSERT_FALSE(png.ok());
    EXPECT_EQ(png.error().code, Errc::memory_unsupported_type);
    EXPECT_NE(png.error().message.find("'logo.txt' is binary (byte 0x00 at offset 8)"), std::string::npos) << png.error().message;
    std::string controls(400, 'a');
    for (size_t i = 0; i < controls.size(); i += 20) controls[i] = '\x02';
    auto ctl = extract_document(controls, "data.bin");
    ASSERT_FALSE(ctl.ok());
    EXPECT_NE(ctl.error().message.find("'data.bin' is binary (20 control bytes in the first 400, the first 0x02 at offset 0)"),
              std::string::npos)
        << ctl.error().message;
    EXPECT_EQ(extract_document(gzip(std::string("\0\1\2\3", 4)), "blob.gz").error().code, Errc::memory_unsupported_type);
}

}  // namespace
}  // namespace kvrag::memory
