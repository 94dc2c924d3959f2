// The /upload body on its way in: streamed to an unlinked temporary file (UploadBody), parsed
// from there a window at a time (parse_multipart over a BodyReader), the limit, a stopping
// server and a client that goes away; and the memory an upload costs, measured on 64 MiB.
#include "memory_service/upload_body.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "memory_service/upload_form.h"

namespace kvrag::memory_service {
namespace {

namespace fs = std::filesystem;

fs::path fresh_dir(const std::string& tag) {
    const fs::path d = fs::temp_directory_path() / ("kvrag-upload-body-" + tag + "-" + std::to_string(getpid()));
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
}

size_t n_entries(const fs::path& dir) {
    size_t n = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++n;
    return n;
}

// A feed that hands `body` over in pieces of `piece` bytes; counts the pieces it gave.
BodyFeed pieces_of(const std::string& body, size_t piece, int* n_given = nullptr) {
    return [&body, piece, n_given](const ChunkSink& sink) {
        for (size_t at = 0; at < body.size(); at += piece) {
            if (n_given) ++*n_given;
            if (!sink(body.data() + at, std::min(piece, body.size() - at))) return false;
        }
        return true;
    };
}

const char* kForm =
    "--B\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Disposition: form-data; name=index\r\n"
    "\r\n"
    "kb\r\n"
    "--B\r\n"
    "Content-Disposition: form-data; name=tags\r\n"
    "\r\n"
    "team:red\r\n"
    "--B\r\n"
    "Content-Disposition: form-data; name=file0; filename=a.txt; filename*=utf-8''a.txt\r\n"
    "\r\n"
    "alpha\r\nwith a line, and -- B\r\n"
    "--B--\r\n";

TEST(UploadBody, StreamsToAnUnlinkedFileAndIsParsedFromIt) {
    const fs::path dir = fresh_dir("parse");
    auto body = UploadBody::create(dir.string());
    ASSERT_TRUE(body.ok()) << body.error().what();
    EXPECT_EQ(n_entries(dir), 0u) << "the temporary file is unlinked as soon as it is made";
    const std::string bytes = kForm;
    ASSERT_TRUE(body->receive(pieces_of(bytes, 3), 1 << 20, "test", nullptr).ok());
    EXPECT_EQ(body->size(), bytes.size());
    EXPECT_EQ(n_entries(dir), 0u);

    auto parts = parse_multipart(*body, "B");
    ASSERT_TRUE(parts.ok()) << parts.error().what();
    ASSERT_EQ(parts->size(), 3u);
    const FormPart& file = (*parts)[2];
    EXPECT_EQ(file.filename, "a.txt");
    EXPECT_TRUE(file.content.empty()) << "a part parsed from a file is its place in the file, not a copy";
    auto content = body->read_string(file.offset, static_cast<size_t>(file.size));
    ASSERT_TRUE(content.ok());
    EXPECT_EQ(*content, "alpha\r\nwith a line, and -- B");
    EXPECT_EQ(bytes.substr(file.offset, file.size), *content);

    auto form = parse_upload_form(*parts, *body);
    ASSERT_TRUE(form.ok()) << form.error().what();
    EXPECT_EQ(form->index, "kb");  // the fields are read from the file
    EXPECT_EQ(form->tags, (memory::Tags{{"team", "red"}}));
    ASSERT_EQ(form->files.size(), 1u);

    // The file parse agrees with the in-memory one, part for part.
    auto mem_parts = parse_multipart(bytes, "B");
    ASSERT_TRUE(mem_parts.ok());
    ASSERT_EQ(mem_parts->size(), parts->size());
    for (size_t i = 0; i < parts->size(); ++i) {
        EXPECT_EQ((*mem_parts)[i].offset, (*parts)[i].offset);
        EXPECT_EQ((*mem_parts)[i].size, (*parts)[i].size);
        EXPECT_EQ((*mem_parts)[i].name, (*parts)[i].name);
    }
    fs::remove_all(dir);
}

// The scanner reads kScanWindowBytes at a time: a delimiter cut by a window's end, at every
// cut position, is still found, and content holding the delimiter's prefix is not cut short.
TEST(UploadBody, DelimitersAcrossScanWindowsAreFound) {
    const std::string delim = "\r\n--Bnd";
    for (size_t cut = 0; cut <= delim.size(); ++cut) {
        const std::string head = "--Bnd\r\nContent-Disposition: form-data; name=f; filename=x.txt\r\n\r\n";
        // The search for the closing delimiter starts at the content; its first window holds
        // kScanWindowBytes + delim.size() - 1 bytes, so the delimiter starts `cut` bytes
        // before that window's end (0: wholly in the next window; delim.size(): wholly in it).
        const size_t n_content = kScanWindowBytes + delim.size() - 1 - cut;
        std::string content(n_content, 'x');
        for (size_t i = 1000; i + delim.size() < n_content; i += 50000) content.replace(i, delim.size() - 1, delim.substr(0, delim.size() - 1));
        const std::string body = head + content + delim + "--\r\n";
        auto parts = parse_multipart(MemoryBody(body), "Bnd");
        ASSERT_TRUE(parts.ok()) << "cut " << cut << ": " << parts.error().what();
        ASSERT_EQ(parts->size(), 1u) << "cut " << cut;
        EXPECT_EQ((*parts)[0].offset, head.size()) << "cut " << cut;
        EXPECT_EQ((*parts)[0].size, n_content) << "cut " << cut;
    }
}

TEST(UploadBody, TheLimitAppliesWhileStreaming) {
    const fs::path dir = fresh_dir("limit");
    auto body = UploadBody::create(dir.string());
    ASSERT_TRUE(body.ok());
    const std::string big(1 << 20, 'z');
    int n_given = 0;
    auto r = body->receive(pieces_of(big, 4096, &n_given), 10000, "4 times the per-file limit of 2500 bytes", nullptr);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, Errc::request_too_large);
    EXPECT_NE(r.error().message.find("limit of 10000 bytes"), std::string::npos) << r.error().message;
    EXPECT_NE(r.error().message.find("per-file limit of 2500"), std::string::npos) << r.error().message;
    EXPECT_NE(r.error().message.find("12288 bytes had arrived"), std::string::npos) << r.error().message;
    EXPECT_EQ(n_given, 3) << "reading stops at the piece that crosses the limit, not at the body's end";
    EXPECT_EQ(body->size(), 8192u);
    EXPECT_EQ(n_entries(dir), 0u);
    fs::remove_all(dir);
}

TEST(UploadBody, AStoppingServerOrAClientThatGoesAwayEndsTheUpload) {
    const fs::path dir = fresh_dir("stop");
    const std::string big(1 << 20, 'z');
    {
        auto body = UploadBody::create(dir.string());
        ASSERT_TRUE(body.ok());
        std::atomic<bool> stopping{false};
        int n_given = 0;
        auto r = body->receive(
            [&](const ChunkSink& sink) {
                for (size_t at = 0; at < big.size(); at += 1000) {
                    if (++n_given == 5) stopping = true;  // SIGINT arrives during the upload
                    if (!sink(big.data() + at, 1000)) return false;
                }
                return true;
            },
            1 << 30, "test", &stopping);
        ASSERT_FALSE(r.ok());
        EXPECT_EQ(r.error().code, Errc::server_shutting_down);
        EXPECT_NE(r.error().message.find("after 4000 bytes"), std::string::npos) << r.error().message;
        EXPECT_EQ(n_given, 5);
    }
    {
        auto body = UploadBody::create(dir.string());
        ASSERT_TRUE(body.ok());
        auto r = body->receive(
            [&](const ChunkSink& sink) {
                sink(big.data(), 100);
                return false;  // the connection broke
            },
            1 << 30, "test", nullptr);
        ASSERT_FALSE(r.ok());
        EXPECT_EQ(r.error().code, Errc::memory_bad_input);
        EXPECT_NE(r.error().message.find("ended early after 100 bytes"), std::string::npos) << r.error().message;
    }
    EXPECT_EQ(n_entries(dir), 0u);
    auto missing = UploadBody::create((dir / "no-such-dir").string());
    ASSERT_FALSE(missing.ok());
    EXPECT_EQ(missing.error().code, Errc::memory_store);
    EXPECT_NE(missing.error().message.find("no-such-dir"), std::string::npos) << missing.error().message;
    fs::remove_all(dir);
}

// ---- memory ----

// Peak and current resident set of this process, in KiB (/proc/self/status).
long status_kib(const char* field) {
    std::ifstream in("/proc/self/status");
    std::string line;
    const std::string key = std::string(field) + ":";
    while (std::getline(in, line)) {
        if (line.rfind(key, 0) == 0) return std::stol(line.substr(key.size()));
    }
    return -1;
}

constexpr size_t kBigFileBytes = 64u << 20;
constexpr size_t kPiece = 64u << 10;

// A 64 MiB upload as httplib hands it over: the form's head, the file in 64 KiB pieces, the end.
BodyFeed big_upload() {
    return [](const ChunkSink& sink) {
        static const std::string head =
            "--B\r\nContent-Disposition: form-data; name=index\r\n\r\nkb\r\n"
            "--B\r\nContent-Disposition: form-data; name=file; filename=big.txt\r\nContent-Type: text/plain\r\n\r\n";
        std::string piece;
        while (piece.size() < kPiece) piece += "The lighthouse keeper wrote another line in the log.\n";
        piece.resize(kPiece);
        if (!sink(head.data(), head.size())) return false;
        for (size_t at = 0; at < kBigFileBytes; at += kPiece) {
            if (!sink(piece.data(), kPiece)) return false;
        }
        const std::string tail = "\r\n--B--\r\n";
        return sink(tail.data(), tail.size());
    };
}

struct ChildReport {
    long grew_kib = -1;     // peak resident set over the resident set at the start
    long file_bytes = -1;   // the file part's size as parsed
    int ok = 0;
};

// Runs `work` in a forked child (its peak resident set starts at the fork, apart from
// whatever this test process did before) and returns what it measured.
template <class F>
ChildReport in_child(F work) {
    int fds[2];
    if (pipe(fds) != 0) return {};
    const pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        ChildReport rep;
        const long base = status_kib("VmRSS");
        rep.file_bytes = work();
        rep.grew_kib = status_kib("VmHWM") - base;
        rep.ok = base > 0 && rep.file_bytes >= 0;
        const ssize_t w = write(fds[1], &rep, sizeof rep);
        _exit(w == static_cast<ssize_t>(sizeof rep) ? 0 : 1);
    }
    close(fds[1]);
    ChildReport rep;
    const ssize_t r = read(fds[0], &rep, sizeof rep);
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    if (r != static_cast<ssize_t>(sizeof rep) || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return {};
    return rep;
}

TEST(UploadBody, A64MiBUploadCostsAFewBuffersOfMemory) {
    const fs::path dir = fresh_dir("rss");
    // Streamed to the file and parsed there, as the /upload route does.
    const ChildReport streamed = in_child([&]() -> long {
        auto body = UploadBody::create(dir.string());
        if (!body || !body->receive(big_upload(), 300u << 20, "test", nullptr)) return -1;
        auto parts = parse_multipart(*body, "B");
        if (!parts) return -1;
        auto form = parse_upload_form(*parts, *body);
        if (!form || form->files.size() != 1 || form->index != "kb") return -1;
        return static_cast<long>(form->files[0]->size);
    });
    ASSERT_TRUE(streamed.ok);
    EXPECT_EQ(streamed.file_bytes, static_cast<long>(kBigFileBytes));
    // The control: the same body gathered in a string, as /upload did before, shows the
    // measurement sees a body's worth of memory.
    const ChildReport in_memory = in_child([&]() -> long {
        std::string all;
        big_upload()([&](const char* d, size_t n) {
            all.append(d, n);
            return true;
        });
        auto parts = parse_multipart(all, "B");
        if (!parts || parts->size() != 2) return -1;
        return static_cast<long>((*parts)[1].size);
    });
    ASSERT_TRUE(in_memory.ok);
    EXPECT_EQ(in_memory.file_bytes, static_cast<long>(kBigFileBytes));
    const long body_kib = static_cast<long>(kBigFileBytes >> 10);
    EXPECT_GE(in_memory.grew_kib, body_kib) << "the control did not register a body in memory";
    EXPECT_LT(streamed.grew_kib, 4096) << "a 64 MiB upload raised the peak resident set by " << streamed.grew_kib << " KiB";
    std::printf("peak resident set growth for a 64 MiB upload: streamed %ld KiB, in memory (control) %ld KiB\n", streamed.grew_kib,
                in_memory.grew_kib);
    EXPECT_EQ(n_entries(dir), 0u);
    fs::remove_all(dir);
}

}  // namespace
}  // namespace kvrag::memory_service
