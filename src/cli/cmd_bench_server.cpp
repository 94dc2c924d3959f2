// `kvrag bench-server`: C concurrent streaming clients against a running `kvrag serve`, for each
// C in --clients: aggregate and per-client tokens/s, time to first token (median, p95) and the
// KV cache usage seen on /metrics while they ran.
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "cli/commands.h"

namespace kvrag::cli {
namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

struct BenchServerArgs {
    std::string host = "127.0.0.1";
    int port = 8080;
    std::string clients = "1,4,8";
    int32_t n_predict = 64;
    int32_t requests = 2;       // per client, back to back
    std::string prompt = "Once upon a time, in a small village by the sea, there lived";
    std::string api_key;
};

struct ClientStats {
    int64_t tokens = 0;
    double seconds = 0.0;
    std::vector<double> ttft_ms;
    int errors = 0;
    std::string first_error;
};

double percentile(std::vector<double> v, double p) {
    if (v.empty()) return 0.0;
    std::sort(v.begin(), v.end());
    const double at = p * static_cast<double>(v.size() - 1);
    const size_t lo = static_cast<size_t>(at);
    const size_t hi = std::min(lo + 1, v.size() - 1);
    return v[lo] + (v[hi] - v[lo]) * (at - static_cast<double>(lo));
}

httplib::Headers auth_headers(const BenchServerArgs& a) {
    httplib::Headers h;
    if (!a.api_key.empty()) h.emplace("Authorization", "Bearer " + a.api_key);
    return h;
}

// One streamed completion; adds its tokens and TTFT to `st`.
void one_request(const BenchServerArgs& a, int client, int k, ClientStats& st) {
    httplib::Client cli(a.host, a.port);
    cli.set_read_timeout(120);
    json body{{"prompt", a.prompt + " (" + std::to_string(client) + "." + std::to_string(k) + ")"},
              {"max_tokens", a.n_predict},
              {"temperature", 0},
              {"ignore_eos", true},
              {"stream", true}};
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.headers = auth_headers(a);
    req.headers.emplace("Content-Type", "application/json");
    req.body = body.dump();
    const auto t0 = Clock::now();
    bool first = false;
    int64_t tokens = 0;
    std::string buf;
    req.content_receiver = [&](const char* data, size_t len, uint64_t, uint64_t) {
        buf.append(data, len);
        size_t end;
        while ((end = buf.find("\n\n")) != std::string::npos) {
            const std::string event = buf.substr(0, end);
            buf.erase(0, end + 2);
            if (event.rfind("data: ", 0) != 0 || event == "data: [DONE]") continue;
            auto j = json::parse(event.substr(6), nullptr, false);
            if (j.is_discarded()) continue;
            if (j.contains("error")) {
                ++st.errors;
                if (st.first_error.empty()) st.first_error = j["error"].value("message", "error");
                continue;
            }
            if (!first && j.contains("choices") && !j["choices"].empty() && !j["choices"][0].value("text", "").empty()) {
                first = true;
                st.ttft_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
            }
            if (j.contains("usage") && j["usage"].is_object()) tokens = j["usage"].value("completion_tokens", 0);
        }
        return true;
    };
    auto res = cli.send(req);
    st.seconds += std::chrono::duration<double>(Clock::now() - t0).count();
    if (!res || res->status != 200) {
        ++st.errors;
        if (st.first_error.empty()) st.first_error = res ? "HTTP " + std::to_string(res->status) : "connection: " + httplib::to_string(res.error());
        return;
    }
    st.tokens += tokens;
}

// Reads one gauge from /metrics; -1 when absent.
double read_gauge(const std::string& text, const std::string& name) {
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind(name + " ", 0) == 0) return std::stod(line.substr(name.size() + 1));
    }
    return -1.0;
}

int run_bench_server(const BenchServerArgs& a) {
    std::vector<int> counts;
    {
        std::stringstream ss(a.clients);
        std::string item;
        while (std::getline(ss, item, ',')) {
            try {
                const int c = std::stoi(item);
                if (c < 1 || c > 256) throw std::out_of_range("clients");
                counts.push_back(c);
            } catch (const std::exception&) {
                return fail(Error{Errc::cli_usage, "--clients '" + a.clients + "' must be a comma-separated list of counts in 1..256"});
            }
        }
    }
    httplib::Client probe(a.host, a.port);
    probe.set_read_timeout(10);
    auto health = probe.Get("/health");
    if (!health || health->status != 200) {
        return fail(Error{Errc::cli_usage, "no ready kvrag server at http://" + a.host + ":" + std::to_string(a.port) + " (" +
                                               (health ? "/health answered " + std::to_string(health->status) : httplib::to_string(health.error())) + ")"});
    }
    std::printf("bench-server http://%s:%d: %d tokens per request, %d requests per client, greedy, streaming\n", a.host.c_str(), a.port,
                a.n_predict, a.requests);
    for (int c : counts) {
        std::vector<ClientStats> stats(static_cast<size_t>(c));
        std::atomic<bool> running{true};
        double peak_used = 0, total_cells = 0, peak_ratio = 0;
        std::thread sampler([&] {
            httplib::Client m(a.host, a.port);
            m.set_read_timeout(5);
            while (running.load()) {
                if (auto r = m.Get("/metrics", auth_headers(a)); r && r->status == 200) {
                    peak_used = std::max(peak_used, read_gauge(r->body, "kvrag_kv_cells_used"));
                    peak_ratio = std::max(peak_ratio, read_gauge(r->body, "kvrag_kv_usage_ratio"));
                    total_cells = read_gauge(r->body, "kvrag_kv_cells_total");
                }
                std::this_thread::sleep_for(std::chrono::milliseconds(50));
            }
        });
        const auto t0 = Clock::now();
        std::vector<std::thread> threads;
        for (int i = 0; i < c; ++i) {
            threads.emplace_back([&, i] {
                for (int k = 0; k < a.requests; ++k) one_request(a, i, k, stats[static_cast<size_t>(i)]);
            });
        }
        for (auto& t : threads) t.join();
        const double wall = std::chrono::duration<double>(Clock::now() - t0).count();
        running.store(false);
        sampler.join();

        int64_t tokens = 0;
        int errors = 0;
        std::vector<double> ttft;
        std::string per_client;
        std::string first_error;
        for (const auto& s : stats) {
            tokens += s.tokens;
            errors += s.errors;
            ttft.insert(ttft.end(), s.ttft_ms.begin(), s.ttft_ms.end());
            char buf[32];
            std::snprintf(buf, sizeof(buf), "%s%.1f", per_client.empty() ? "" : " ", s.seconds > 0 ? s.tokens / s.seconds : 0.0);
            per_client += buf;
            if (first_error.empty()) first_error = s.first_error;
        }
        std::printf("C=%d: aggregate %.1f tok/s (%lld tokens in %.2f s); per-client tok/s: %s\n", c, wall > 0 ? tokens / wall : 0.0,
                    static_cast<long long>(tokens), wall, per_client.c_str());
        std::printf("     TTFT median %.1f ms, p95 %.1f ms; KV peak %.0f of %.0f cells used by requests, peak usage ratio %.3f; errors %d%s%s\n",
                    percentile(ttft, 0.5), percentile(ttft, 0.95), peak_used, total_cells, peak_ratio, errors,
                    first_error.empty() ? "" : " (first: ", first_error.empty() ? "" : (first_error + ")").c_str());
        std::fflush(stdout);
        if (errors > 0 && tokens == 0) return 1;
    }
    return 0;
}

}  // namespace

Runner add_bench_server(CLI::App& app) {
    auto a = std::make_shared<BenchServerArgs>();
    app.add_option("--host", a->host, "server address");
    app.add_option("--port", a->port, "server port")->check(CLI::Range(1, 65535));
    app.add_option("--clients", a->clients, "comma-separated concurrent client counts to run, in order");
    app.add_option("-n,--n-predict", a->n_predict, "tokens per request")->check(CLI::Range(1, 1 << 16));
    app.add_option("-r,--requests", a->requests, "requests per client, back to back")->check(CLI::Range(1, 1000));
    app.add_option("-p,--prompt", a->prompt, "prompt text (each request appends its client and request number)");
    app.add_option("--api-key", a->api_key, "API key, when the server was started with --api-key");
    return [a] { return run_bench_server(*a); };
}

}  // namespace kvrag::cli
