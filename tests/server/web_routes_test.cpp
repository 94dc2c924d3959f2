// The web page's server side: the assets built into the binary, their content types, and the
// page loading without the API key while the API still asks for it. The page's behaviour in a
// browser is tests/web/web.test.mjs (ctest web_page_chromium).
#include "server/web_routes.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <set>
#include <string>

#include "server/web_assets.h"
#include "server_process.h"
#include "test_paths.h"

namespace kvrag::server {
namespace {

namespace fs = std::filesystem;

std::string content_type(const testing::Reply& r) {
    auto it = r.headers.find("Content-Type");
    return it == r.headers.end() ? "" : it->second;
}

TEST(WebRoutes, EveryFileOfWebIsBuiltInByteForByte) {
    std::set<std::string> built;
    for (const WebAsset& a : web_assets()) {
        built.insert(std::string(a.name));
        const std::string on_disk = testing::read_file_text(testing::source_dir() + "/web/" + std::string(a.name));
        EXPECT_EQ(a.body, on_disk) << a.name << " differs from web/" << a.name << "; rebuild";
    }
    std::set<std::string> files;
    for (const auto& e : fs::directory_iterator(testing::source_dir() + "/web")) files.insert(e.path().filename().string());
    EXPECT_EQ(built, files);
    EXPECT_TRUE(built.count("index.html"));
}

TEST(WebRoutes, IndexReferencesOnlyBuiltInAssets) {
    std::string index;
    for (const WebAsset& a : web_assets()) {
        if (a.name == "index.html") index = std::string(a.body);
    }
    ASSERT_FALSE(index.empty());
    // Every src=/href= in the page is one of the built-in files: nothing comes from elsewhere.
    size_t n_refs = 0;
    for (const std::string attr : {"src=\"", "href=\""}) {
        for (size_t at = index.find(attr); at != std::string::npos; at = index.find(attr, at + 1)) {
            const size_t start = at + attr.size();
            const std::string url = index.substr(start, index.find('"', start) - start);
            ASSERT_TRUE(url.starts_with("/web/")) << url;
            bool found = false;
            for (const WebAsset& a : web_assets()) found = found || url == "/web/" + std::string(a.name);
            EXPECT_TRUE(found) << url << " is not a file of web/";
            ++n_refs;
        }
    }
    EXPECT_GE(n_refs, 3u);  // style.css, markdown.js, app.js
}

TEST(WebRoutes, ContentTypesAndPagePaths) {
    EXPECT_EQ(web_content_type("index.html"), "text/html; charset=utf-8");
    EXPECT_EQ(web_content_type("app.js"), "text/javascript; charset=utf-8");
    EXPECT_EQ(web_content_type("style.css"), "text/css; charset=utf-8");
    EXPECT_EQ(web_content_type("blob.bin"), "application/octet-stream");
    EXPECT_TRUE(is_web_page_request("GET", "/"));
    EXPECT_TRUE(is_web_page_request("HEAD", "/web/app.js"));
    EXPECT_TRUE(is_web_page_request("GET", "/index.html"));
    EXPECT_FALSE(is_web_page_request("POST", "/"));
    EXPECT_FALSE(is_web_page_request("GET", "/v1/models"));
    EXPECT_FALSE(is_web_page_request("GET", "/webhook"));
}

TEST(WebRoutes, PageLoadsWithoutTheKeyAndTheApiStillNeedsIt) {
    const fs::path dir = fs::temp_directory_path() / ("kvrag-web-routes-" + std::to_string(getpid()));
    fs::create_directories(dir);
    const std::string model = (dir / "tiny.gguf").string();
    ASSERT_EQ(testing::run_kvrag_sync({"make-model", "-o", model, "--type", "f32"}), 0);
    testing::ServerProcess srv;
    ASSERT_TRUE(srv.start({"-m", model, "--api-key", "web-key", "-t", "1"}, (dir / "serve.log").string())) << srv.log();

    const auto page = testing::get(srv.port(), "/");
    EXPECT_EQ(page.status, 200);
    EXPECT_NE(page.body.find("<title>kvrag</title>"), std::string::npos);
    EXPECT_EQ(content_type(page), "text/html; charset=utf-8");
    for (const WebAsset& a : web_assets()) {
        if (a.name == "index.html") continue;
        const auto r = testing::get(srv.port(), "/web/" + std::string(a.name));
        EXPECT_EQ(r.status, 200) << a.name;
        EXPECT_EQ(r.body, a.body) << a.name;
        EXPECT_EQ(content_type(r), web_content_type(a.name)) << a.name;
    }
    const auto missing = testing::get(srv.port(), "/web/nothing.js");
    EXPECT_EQ(missing.status, 404);
    EXPECT_NE(missing.body.find("E5008"), std::string::npos) << missing.body;
    EXPECT_EQ(testing::get(srv.port(), "/web/index.html").status, 404);  // the page is at /

    EXPECT_EQ(testing::get(srv.port(), "/v1/models").status, 401);
    EXPECT_EQ(testing::get(srv.port(), "/v1/kv").status, 401);
    EXPECT_EQ(testing::get(srv.port(), "/v1/models", {{"Authorization", "Bearer web-key"}}).status, 200);
    EXPECT_EQ(srv.stop(), 0) << srv.log();
    fs::remove_all(dir);
}

}  // namespace
}  // namespace kvrag::server
