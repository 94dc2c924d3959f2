// The durable ingestion queue in one process, with a deterministic fake embedding over a
// synthetic tokenizer: jobs run to completion with progress, a document with several files,
// deleting or uploading again while a job runs (never resurrected, written once), and stop()
// within a second with the job resumed by the next worker on the store.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "engine/engine_test_util.h"
#include "memory/ingest_worker.h"
#include "memory/memory.h"
#include "memory/memory_test_util.h"
#include "memory/store_test_util.h"

namespace kvrag::memory {
namespace {

using Clock = std::chrono::steady_clock;

std::shared_ptr<const tokenizer::Tokenizer> shared_tokenizer() {
    static auto m = engine::testing::load_synthetic("ingest-queue");
    return m.tokenizer;
}

// Hooks whose batch embedding calls `before_batch` first (to block or slow it).
ModelHooks fake_hooks(std::function<void()> before_batch = nullptr) {
    ModelHooks h;
    h.tokenizer = shared_tokenizer();
    h.embed_model = EmbeddingModelInfo{"fake", "size:0 sha256:fake", testing::kFakeEmbeddingDim};
    h.embed = [](std::string_view t) -> Result<std::vector<float>> { return testing::fake_embedding(t); };
    h.embed_batch = [before_batch](std::span<const std::string> texts) -> Result<std::vector<std::vector<float>>> {
        if (before_batch) before_batch();
        std::vector<std::vector<float>> v;
        for (const auto& t : texts) v.push_back(testing::fake_embedding(t));
        return v;
    };
    return h;
}

std::string long_text(int n, const std::string& word) {
    std::string t;
    for (int i = 0; i < n; ++i) t += "The " + word + " keeper wrote entry number " + std::to_string(i) + " in the log. ";
    return t;
}

IngestRequest request(const std::string& id, const std::string& text) {
    IngestRequest r;
    r.doc_id = id;
    r.name = id + ".txt";
    r.source = "upload";
    r.bytes = text;
    return r;
}

TEST(MemoryQueue, JobsRunToCompletionWithProgressAndKeepTheirFiles) {
    auto st = Store::open(":memory:");
    ASSERT_TRUE(st.ok());
    Memory mem(std::shared_ptr<Store>(std::move(*st)), fake_hooks(), ChunkOptions{16, 0});
    IngestRequest two = request("two", "");
    two.files = {SourceFile{"a.md", "text/markdown", "# Alpha\n\nThe alpha file speaks of tides."},
                 SourceFile{"b.txt", "", long_text(20, "beta")}};
    std::vector<int64_t> ids;
    for (const auto& r : {request("one", long_text(40, "lighthouse")), two}) {
        auto q = mem.enqueue(r);
        ASSERT_TRUE(q.ok()) << q.error().what();
        EXPECT_GT(q->job_id, 0);
        ids.push_back(q->job_id);
    }
    auto queued = mem.store().get_document("default", "one");
    ASSERT_TRUE(queued.ok() && *queued);
    EXPECT_EQ((*queued)->state, "ingesting");

    std::mutex mu;
    std::vector<JobProgress> seen;
    std::vector<JobReport> reports;
    IngestWorker w(
        mem, 1,
        [&](const JobReport& r) {
            std::lock_guard lk(mu);
            reports.push_back(r);
        },
        [&](const JobProgress& p) {
            std::lock_guard lk(mu);
            seen.push_back(p);
        });
    w.start();
    ASSERT_TRUE(w.wait_idle(std::chrono::seconds(30)));
    w.stop();
    ASSERT_EQ(reports.size(), 2u);
    for (const auto& r : reports) EXPECT_EQ(r.end, JobEnd::done) << r.error.what();
    // Progress: steps 1..4 in order, chunks counted up to the total for each job.
    int32_t last_steps = 0, last_chunks = 0;
    for (const auto& p : seen) {
        if (p.job_id != ids[0]) continue;
        EXPECT_GE(p.n_steps_done, last_steps);
        EXPECT_GE(p.n_chunks_done, last_chunks);
        EXPECT_LE(p.n_chunks_done, p.n_chunks_total);
        last_steps = p.n_steps_done;
        last_chunks = p.n_chunks_done;
    }
    EXPECT_EQ(last_steps, kNumIngestSteps);
    EXPECT_GT(last_chunks, static_cast<int32_t>(kEmbedBatchChunks)) << "the document spans several embedding groups";
    auto one = mem.store().get_document("default", "one");
    EXPECT_EQ((*one)->state, "ready");
    EXPECT_EQ((*one)->n_chunks, last_chunks);
    // The two-file document: chunks of both files, positions running on, each file kept.
    auto d2 = mem.store().get_document("default", "two");
    EXPECT_EQ((*d2)->state, "ready");
    SearchOptions so;
    so.mode = SearchMode::lexical;
    so.filter.doc_id = "two";
    auto hits = mem.search("alpha tides", so);
    ASSERT_TRUE(hits.ok());
    ASSERT_FALSE(hits->hits.empty());
    EXPECT_EQ(hits->hits[0].chunk.position, 0);
    auto b = mem.read_source_file("default", "two", "b.txt");
    ASSERT_TRUE(b.has_value());
    EXPECT_EQ(b->bytes, long_text(20, "beta"));
    EXPECT_EQ(mem.read_source_file("default", "two", "a.md")->content_type, "text/markdown");
    EXPECT_FALSE(mem.read_source_file("default", "two", "c.txt").has_value());
    EXPECT_TRUE(mem.store().list_jobs()->empty());
    EXPECT_EQ(*mem.store().check_consistency(), "");
    // Unchanged content queues nothing.
    EXPECT_EQ(mem.enqueue(request("one", long_text(40, "lighthouse")))->job_id, 0);
}

// A gate the embedding hook waits at until the test opens it.
struct Gate {
    std::mutex mu;
    std::condition_variable cv;
    bool entered = false, open = false;
    void wait() {
        std::unique_lock lk(mu);
        entered = true;
        cv.notify_all();
        cv.wait(lk, [&] { return open; });
    }
    void wait_entered() {
        std::unique_lock lk(mu);
        cv.wait(lk, [&] { return entered; });
    }
    void release() {
        std::lock_guard lk(mu);
        open = true;
        cv.notify_all();
    }
};

// The queue rules every Store must keep, run on each backend ("sqlite", "postgres").
class MemoryQueueBackends : public testing::StoreBackendTest {};

INSTANTIATE_TEST_SUITE_P(Backends, MemoryQueueBackends, ::testing::Values("sqlite", "postgres"),
                         [](const auto& info) { return info.param; });

TEST_P(MemoryQueueBackends, DeleteWhileIngestingNeverResurrects) {
    auto st = Store::open(spec_);
    ASSERT_TRUE(st.ok());
    Gate gate;
    Memory mem(std::shared_ptr<Store>(std::move(*st)), fake_hooks([&] { gate.wait(); }), ChunkOptions{16, 0});
    ASSERT_TRUE(mem.enqueue(request("doomed", long_text(10, "doomed"))).ok());
    std::vector<JobReport> reports;
    IngestWorker w(mem, 1, [&](const JobReport& r) { reports.push_back(r); });
    w.start();
    gate.wait_entered();  // the job is embedding
    auto n = mem.store().delete_document("default", "doomed");
    ASSERT_TRUE(n.ok());
    EXPECT_EQ(*n, 1);
    gate.release();
    ASSERT_TRUE(w.wait_idle(std::chrono::seconds(30)));
    w.stop();
    ASSERT_EQ(reports.size(), 1u);
    EXPECT_EQ(reports[0].end, JobEnd::cancelled);
    EXPECT_FALSE(*mem.store().get_document("default", "doomed"));
    EXPECT_TRUE(mem.store().list_jobs()->empty());
    EXPECT_FALSE(mem.read_source_file("default", "doomed", "doomed.txt").has_value());
    EXPECT_TRUE(mem.store().lexical("default", "doomed", 10)->empty());
    EXPECT_EQ(*mem.store().check_consistency(), "");
}

TEST_P(MemoryQueueBackends, UploadAgainWhileIngestingWritesTheNewVersionOnce) {
    auto st = Store::open(spec_);
    ASSERT_TRUE(st.ok());
    Gate gate;
    std::atomic<int> calls{0};
    Memory mem(std::shared_ptr<Store>(std::move(*st)), fake_hooks([&] {
                   if (calls++ == 0) gate.wait();
               }),
               ChunkOptions{16, 0});
    ASSERT_TRUE(mem.enqueue(request("doc", "The first version mentions walruses.")).ok());
    std::vector<JobReport> reports;
    IngestWorker w(mem, 1, [&](const JobReport& r) { reports.push_back(r); });
    w.start();
    gate.wait_entered();
    ASSERT_TRUE(mem.enqueue(request("doc", "The second version mentions narwhals.")).ok());
    w.notify();
    gate.release();
    ASSERT_TRUE(w.wait_idle(std::chrono::seconds(30)));
    w.stop();
    ASSERT_EQ(reports.size(), 2u);
    EXPECT_EQ(reports[0].end, JobEnd::cancelled);
    EXPECT_EQ(reports[1].end, JobEnd::done);
    EXPECT_TRUE(mem.store().lexical("default", "walruses", 10)->empty());
    EXPECT_EQ(mem.store().lexical("default", "narwhals", 10)->size(), 1u);
    EXPECT_EQ(mem.store().list_documents()->size(), 1u);
    EXPECT_EQ(*mem.store().check_consistency(), "");
}

TEST(MemoryQueue, StopWithinASecondThenTheNextWorkerFinishesTheJob) {
    const auto dir = testing::temp_dir("queue-stop");
    const std::string text = long_text(400, "slow");
    std::atomic<int32_t> n_chunks_total{0};
    {
        auto st = Store::open(dir.string());
        ASSERT_TRUE(st.ok());
        // 40 ms per group of chunks: the document takes seconds, a stop is seen within one group.
        Memory mem(std::shared_ptr<Store>(std::move(*st)), fake_hooks([] { std::this_thread::sleep_for(std::chrono::milliseconds(40)); }),
                   ChunkOptions{16, 0});
        ASSERT_TRUE(mem.enqueue(request("slow", text)).ok());
        std::atomic<int32_t> done{0};
        std::vector<JobReport> reports;
        IngestWorker w(mem, 1, [&](const JobReport& r) { reports.push_back(r); },
                       [&](const JobProgress& p) {
                           done = p.n_chunks_done;
                           n_chunks_total = p.n_chunks_total;
                       });
        w.start();
        const auto t_wait = Clock::now();
        while (done.load() < 2 * static_cast<int32_t>(kEmbedBatchChunks) && Clock::now() - t_wait < std::chrono::seconds(30)) {
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        ASSERT_GE(done.load(), 2 * static_cast<int32_t>(kEmbedBatchChunks));
        ASSERT_LT(done.load(), n_chunks_total) << "the job must still be running when stopped";
        const auto t0 = Clock::now();
        w.stop();
        EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 1.0);
        ASSERT_EQ(reports.size(), 1u);
        EXPECT_EQ(reports[0].end, JobEnd::interrupted);
        auto jobs = mem.store().list_jobs();
        ASSERT_EQ(jobs->size(), 1u);
        EXPECT_EQ((*jobs)[0].state, "queued");
        EXPECT_EQ((*mem.store().get_document("default", "slow"))->state, "ingesting");
    }
    auto st = Store::open(dir.string());
    ASSERT_TRUE(st.ok());
    Memory mem(std::shared_ptr<Store>(std::move(*st)), fake_hooks(), ChunkOptions{16, 0});
    IngestWorker w(mem);
    w.start();
    ASSERT_TRUE(w.wait_idle(std::chrono::seconds(30)));
    w.stop();
    auto d = mem.store().get_document("default", "slow");
    ASSERT_TRUE(*d);
    EXPECT_EQ((*d)->state, "ready");
    EXPECT_EQ((*d)->n_chunks, n_chunks_total.load());
    EXPECT_EQ(*mem.store().check_consistency(), "");
    std::filesystem::remove_all(dir);
}

TEST(MemoryQueue, BinaryFilesAreRefusedBeforeQueueing) {
    auto st = Store::open(":memory:");
    ASSERT_TRUE(st.ok());
    Memory mem(std::shared_ptr<Store>(std::move(*st)), fake_hooks(), ChunkOptions{16, 0});
    auto r = mem.enqueue(request("img", std::string("\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 16)));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, Errc::memory_unsupported_type);
    EXPECT_NE(r.error().message.find("'img.txt' is binary (byte 0x00 at offset 8)"), std::string::npos) << r.error().message;
    EXPECT_TRUE(mem.store().list_jobs()->empty());
    EXPECT_TRUE(mem.store().list_documents()->empty());
}

TEST(MemoryStoreOpen, ExistingModeNamesAMissingStore) {
    const auto dir = testing::temp_dir("missing");
    const std::string typo = (dir / "no-such-store").string();
    auto st = Store::open(typo, OpenMode::existing);
    ASSERT_FALSE(st.ok());
    EXPECT_EQ(st.error().code, Errc::memory_not_found);
    EXPECT_NE(st.error().message.find("no memory store at '" + typo + "'"), std::string::npos) << st.error().message;
    EXPECT_FALSE(std::filesystem::exists(typo)) << "looking must not create it";
    ASSERT_TRUE(Store::open(typo).ok());
    EXPECT_TRUE(Store::open(typo, OpenMode::existing).ok());
    std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace kvrag::memory
