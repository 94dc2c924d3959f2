// Shared fixtures for the memory tests: a PDF writer, temp directories, a synthetic engine
// wrapped in ModelHooks.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "engine/engine_test_util.h"
#include "memory/memory.h"

namespace kvrag::memory::testing {

// A minimal valid one-page PDF showing `text` (ASCII, no parentheses or backslashes) in
// Helvetica, one line per '\n', with a correct xref table.
inline std::string make_pdf(const std::string& text) {
    std::string content = "BT /F1 12 Tf 72 720 Td 14 TL\n";
    size_t start = 0;
    while (start <= text.size()) {
        size_t nl = text.find('\n', start);
        if (nl == std::string::npos) nl = text.size();
        content += "(" + text.substr(start, nl - start) + ") Tj T*\n";
        start = nl + 1;
    }
    content += "ET";
    const std::string objs[] = {
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        "<< /Length " + std::to_string(content.size()) + " >>\nstream\n" + content + "\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    };
    std::string pdf = "%PDF-1.4\n";
    std::vector<size_t> offsets;
    for (size_t i = 0; i < 5; ++i) {
        offsets.push_back(pdf.size());
        pdf += std::to_string(i + 1) + " 0 obj\n" + objs[i] + "\nendobj\n";
    }
    const size_t xref = pdf.size();
    pdf += "xref\n0 6\n0000000000 65535 f \n";
    for (size_t off : offsets) {
        char line[32];
        std::snprintf(line, sizeof(line), "%010zu 00000 n \n", off);
        pdf += line;
    }
    pdf += "trailer\n<< /Size 6 /Root 1 0 R >>\nstartxref\n" + std::to_string(xref) + "\n%%EOF\n";
    return pdf;
}

inline std::filesystem::path temp_dir(const std::string& tag) {
    static std::atomic<int> counter{0};
    auto d = std::filesystem::temp_directory_path() /
             ("kvrag-memory-" + tag + "-" + std::to_string(getpid()) + "-" + std::to_string(counter++));
    std::filesystem::remove_all(d);
    std::filesystem::create_directories(d);
    return d;
}

inline void write_file(const std::filesystem::path& p, const std::string& bytes) {
    std::ofstream(p, std::ios::binary) << bytes;
}

inline std::string data_dir() { return std::string(KVRAG_SOURCE_DIR) + "/tests/data/memory"; }

// The width of fake_embedding's vectors.
inline constexpr int32_t kFakeEmbeddingDim = 4;

// A deterministic unit vector per text: an embedding hook for tests that need no model.
inline std::vector<float> fake_embedding(std::string_view text) {
    std::vector<float> v(kFakeEmbeddingDim, 0.0f);
    for (size_t i = 0; i < text.size(); ++i) v[i % kFakeEmbeddingDim] += static_cast<float>(static_cast<unsigned char>(text[i]) % 17);
    double n = 0;
    for (float x : v) n += double(x) * x;
    for (float& x : v) x = static_cast<float>(x / std::sqrt(n));
    return v;
}

}  // namespace kvrag::memory::testing
