#!/usr/bin/env python3
"""The memory store's figures through HTTP for docs/scale.md: SQLite against PostgreSQL.

For each store setup (cluster-up --store sqlite | postgres, with R replicas), on one synthetic
model and the same generated corpus:
  - ingestion: D documents uploaded to replica 1, the time until all are ready (documents and
    chunks per second; with PostgreSQL every replica's worker drains the shared queue);
  - search latency on replica 1: Q sequential /search requests (p50, p95), then the same Q
    split over C concurrent clients (p50, p95 and searches per second);
  - with PostgreSQL and 2+ replicas: the time from a 202 on replica 1 until /search on replica 2
    finds the document, against the time until replica 1 reports it ready (polling every 5 ms),
    over T trials (median and max).
Prints one line per figure. Timings: the machine's load changes them; say it with them.
Not a test: it checks only that the answers are right. Only the standard library.

usage: tests/scale/store_bench.py [--kvrag build/kvrag] [--setups sqlite:1,postgres:1,postgres:2]
                                  [--docs 200] [--queries 200] [--concurrency 4] [--trials 10]
  a setup is STORE:REPLICAS, STORE as cluster-up's --store: e.g. 'postgres?kvrag_pool=1:1' is
  one replica whose store has a single connection (the store before its pool).
"""
import argparse, json, os, random, shutil, statistics, sys, threading, time

import cluster_harness as harness

p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
p.add_argument("--kvrag", default=harness.default_kvrag())
p.add_argument("--setups", default="sqlite:1,postgres:1,postgres:2")
p.add_argument("--docs", type=int, default=200)
p.add_argument("--queries", type=int, default=200)
p.add_argument("--concurrency", type=int, default=4)
p.add_argument("--trials", type=int, default=10)
a = p.parse_args()

words = ("harbour tide wind ship keeper light storm reef north south log entry winter night lamp oil rope "
         "anchor gull rock wave sail mast deck cargo chart compass fog bell signal").split()


def doc_text(k):
    rng = random.Random(k)
    body = " ".join(rng.choice(words) for _ in range(120))
    return f"Record zq{k}mark of the station. {body}."


def request(port, method, path, body=None):
    """harness.request: (status, body)."""
    st, _, _, b = harness.request(port, method, path, body)
    return st, b


def upload(port, doc_id, text):
    st, _, _, b = harness.upload(port, {"documentId": doc_id}, f"{doc_id}.txt", text)
    return st, b


def ready(port, doc_id):
    st, b = request(port, "GET", f"/upload-status?index=default&documentId={doc_id}")
    return st == 200 and json.loads(b).get("completed")


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def search(port, k):
    t = time.perf_counter()
    st, b = request(port, "POST", "/search", {"query": f"zq{k}mark harbour tide", "limit": 5})
    dt = (time.perf_counter() - t) * 1000
    res = json.loads(b).get("results", []) if st == 200 else []
    if not res or res[0].get("documentId") != f"doc-{k}":
        sys.exit(f"store_bench: /search for doc-{k} answered {st} {b[:200]!r}")
    return dt


tmp = harness.make_temp_dir("kvrag-store-bench-")
try:
    print(f"# load average at start: {open('/proc/loadavg').read().split()[:3]}, {os.cpu_count()} cores")
    for setup in a.setups.split(","):
        store_arg, n_rep = setup.rsplit(":", 1)
        store = store_arg.split("?")[0]
        n_rep = int(n_rep)
        d = os.path.join(tmp, "setup-%d" % len(os.listdir(tmp)))
        port = harness.free_port_run(n_rep + 2, "store_bench")
        up = harness.cluster_up(d, port, n_rep, a.kvrag, store=store_arg, serve_args=["--ctx", "2048", "-t", "1", "--parallel", "4"])
        if up.returncode != 0:
            sys.exit("store_bench: cluster-up failed:\n" + up.stderr)
        try:
            r1, r2 = port + 1, port + 2
            t0 = time.perf_counter()
            for k in range(a.docs):
                st, b = upload(r1, f"doc-{k}", doc_text(k))
                if st != 202:
                    sys.exit(f"store_bench: upload answered {st}: {b[:200]!r}")
            t_acked = time.perf_counter() - t0
            k = 0
            while k < a.docs:
                if ready(r1, f"doc-{k}"):
                    k += 1
                else:
                    time.sleep(0.05)
            t_ing = time.perf_counter() - t0
            _, b = request(r1, "GET", f"/upload-status?index=default&documentId=doc-0")
            n_chunks_one = json.loads(b).get("chunks")
            print(f"{setup}: ingestion of {a.docs} documents: uploads acknowledged in {t_acked:.2f} s, all ready in {t_ing:.2f} s"
                  f" = {a.docs / t_ing:.1f} documents/s (one document's status: {n_chunks_one})")
            rng = random.Random(5)
            ks = [rng.randrange(a.docs) for _ in range(a.queries)]
            search(r1, ks[0])  # warm: the vector matrix is loaded
            seq = [search(r1, k) for k in ks]
            print(f"{setup}: /search sequential on r1: p50 {pct(seq, 0.5):.1f} ms, p95 {pct(seq, 0.95):.1f} ms ({len(seq)} searches)")
            lat, lock = [], threading.Lock()

            def client(part):
                mine = [search(r1, k) for k in part]
                with lock:
                    lat.extend(mine)

            parts = [ks[i::a.concurrency] for i in range(a.concurrency)]
            t = time.perf_counter()
            ths = [threading.Thread(target=client, args=(part,)) for part in parts]
            for th in ths:
                th.start()
            for th in ths:
                th.join()
            wall = time.perf_counter() - t
            print(f"{setup}: /search {a.concurrency} concurrent clients on r1: p50 {pct(lat, 0.5):.1f} ms, p95 {pct(lat, 0.95):.1f} ms,"
                  f" {len(lat) / wall:.1f} searches/s (sequential: {len(seq) / (sum(seq) / 1000):.1f}/s)")
            if store == "postgres" and n_rep >= 2:
                found_after, ready_after = [], []
                for trial in range(a.trials):
                    k = 100000 + trial
                    t = time.perf_counter()
                    st, b = upload(r1, f"doc-{k}", doc_text(k))
                    if st != 202:
                        sys.exit(f"store_bench: upload answered {st}")
                    t_ready = t_found = None
                    while t_found is None or t_ready is None:
                        now = time.perf_counter()
                        if t_ready is None and ready(r1, f"doc-{k}"):
                            t_ready = time.perf_counter() - t
                        if t_found is None:
                            st, b = request(r2, "POST", "/search", {"query": f"zq{k}mark", "limit": 1})
                            res = json.loads(b).get("results", []) if st == 200 else []
                            if res and res[0].get("documentId") == f"doc-{k}":
                                t_found = time.perf_counter() - t
                        if now - t > 30:
                            sys.exit("store_bench: a document was not found on r2 within 30 s")
                        time.sleep(0.005)
                    found_after.append(t_found * 1000)
                    ready_after.append(t_ready * 1000)
                print(f"{setup}: upload on r1 -> ready on r1: median {statistics.median(ready_after):.0f} ms;"
                      f" -> found by /search on r2: median {statistics.median(found_after):.0f} ms, max {max(found_after):.0f} ms"
                      f" ({a.trials} trials; polling r1 and r2 alternately every ~5 ms)")
        finally:
            harness.cluster_down(d)
    print(f"# load average at end: {open('/proc/loadavg').read().split()[:3]}")
finally:
    shutil.rmtree(tmp, ignore_errors=True)
