#!/usr/bin/env python3
"""PostgreSQL restarted under load, through the proxy (issue 18 point 4; docs/scale.md).

Two kvrag replicas share cluster-up's throwaway PostgreSQL behind HAProxy. Clients send, all
the time: chat completions without memory (they never touch the store), /search and /ask for
documents uploaded before, and uploads of new documents. After 2 s the test stops PostgreSQL
(pg_ctl stop -m fast), keeps it down 3 s, starts it again, and runs the clients 4 s more.
It checks:
  1. no client ever sees a refused, cut or hung request (each has a 30 s limit), a 5xx other
     than 503, or a 200 whose results are wrong or empty;
  2. chat completions answer 200 throughout, several while PostgreSQL is down;
  3. store requests answer 503 with Retry-After and the store's E6007 message only while
     PostgreSQL is down (or being stopped/started); every one sent from 1 s after it is back
     answers 200 with the right document, without any kvrag restarting;
  4. nothing is lost: the documents uploaded before, and every upload acknowledged with 202
     (before, during or after the outage), end up ready, exactly once (one row, its chunk count
     equal to its chunk rows), found by /search, with no job left and no document failed or
     stuck; both replicas still run.
Exits 77 (ctest skip) without haproxy or PostgreSQL 15, unless KVRAG_REQUIRE_SHARED=1. About
40 s: a job cut by the stop is given up by its replica and taken over when its 15 s lease ends.

usage: tests/scale/pg_restart_test.py [--kvrag build/kvrag]
"""
import collections, json, os, random, shlex, sys, threading, time

import cluster_harness as harness
from cluster_harness import PG_BIN, alive, run, sql

a = harness.parse_kvrag_arg(__doc__)

harness.require_cluster_tools("pg_restart_test", commands=("curl", "psql"))

N_REPLICAS = 2
tmp = harness.make_temp_dir("kvrag-pg-restart-test-")
cluster_dir = os.path.join(tmp, "cluster")
checks = harness.Checks("pg_restart_test")
check = checks.check
port = harness.free_port_run(N_REPLICAS + 2, "pg_restart_test", seed=os.getpid() * 7)  # the proxy, the replicas, PostgreSQL
data_dir = os.path.join(cluster_dir, "pg", "data")


def request(method, path, body=None, timeout=30):
    """harness.request to the proxy: (status, Retry-After, body)."""
    st, _, retry_after, b = harness.request(port, method, path, body, timeout=timeout)
    return st, retry_after, b


def upload(doc_id, text, timeout=30):
    """/upload of `text` as document doc_id, through the proxy: (status, Retry-After, body)."""
    st, _, retry_after, b = harness.upload(port, {"index": "default", "documentId": doc_id}, f"{doc_id}.txt", text, timeout)
    return st, retry_after, b


def marker(doc_id):
    """The one word only this document holds (lexical search finds it first)."""
    return "zq" + doc_id.replace("-", "") + "mark"


def doc_text(doc_id):
    return f"The harbour log entry {marker(doc_id)} records the tide and the wind for {doc_id}."


def pg_ctl(*args):
    as_user = []
    if os.geteuid() == 0:  # as cluster-up: initdb refused root, the server runs as postgres (or nobody)
        as_user = ["runuser", "-u", "postgres" if run(["id", "postgres"]).returncode == 0 else "nobody", "--"]
    return run(as_user + [PG_BIN + "/pg_ctl", "-D", data_dir, "-w", "-s"] + list(args))


def pids():
    return harness.pids(cluster_dir)


def wait_ready(doc_ids, limit_s):
    """Polls /upload-status through the proxy until every document is completed; the ones not."""
    left, end = set(doc_ids), time.time() + limit_s
    while left and time.time() < end:
        for d in sorted(left):
            try:
                st, _, b = request("GET", f"/upload-status?index=default&documentId={d}")
            except Exception:
                continue
            if st == 200 and json.loads(b).get("completed"):
                left.discard(d)
        time.sleep(0.2)
    return left


t0 = time.time()
try:
    up = harness.cluster_up(cluster_dir, port, N_REPLICAS, a.kvrag)
    if up.returncode != 0:
        sys.exit("pg_restart_test: cluster-up failed:\n" + up.stdout + up.stderr)
    started = pids()
    store_uri = open(os.path.join(cluster_dir, "store-uri")).read().strip()

    # Documents uploaded before the outage.
    before = [f"before-{k}" for k in range(3)]
    for d in before:
        st, _, b = upload(d, doc_text(d))
        check(st == 202, f"upload {d} before the outage answered 202 (got {st}: {b[:200]!r})")
    check(not wait_ready(before, 30), "the documents uploaded before the outage are ready within 30 s")

    lock = threading.Lock()
    stop = threading.Event()
    log = []          # (kind, t_start, t_end, status, ok, detail)
    acked = []        # documents whose upload answered 202
    window = {}       # the outage: "stop_begin", "stopped", "start_begin", "started"

    def record(kind, t_start, status, ok, detail=""):
        with lock:
            log.append((kind, t_start, time.time(), status, ok, detail))

    def store_refusal(status, retry_after, body):
        """A clean refusal: 503 with Retry-After, the store's E6007 message."""
        try:
            msg = json.loads(body)["error"]["message"]
        except Exception:
            return False
        return status == 503 and bool(retry_after) and "E6007" in msg and "PostgreSQL" in msg

    def chat_client(k):
        rng = random.Random(k)
        while not stop.is_set():
            t = time.time()
            try:
                st, ra, b = request("POST", "/v1/chat/completions",
                                    {"messages": [{"role": "user", "content": f"tell me about tide {rng.randint(0, 999)}"}], "max_tokens": 2})
                record("chat", t, st, st == 200, b[:160] if st != 200 else "")
            except Exception as e:
                record("chat", t, None, False, repr(e))

    def search_client(k):
        n = 0
        while not stop.is_set():
            d = before[(k + n) % len(before)]
            n += 1
            t = time.time()
            try:
                st, ra, b = request("POST", "/search", {"query": marker(d), "limit": 3})
                if st == 200:
                    res = json.loads(b).get("results", [])
                    record("store", t, st, bool(res) and res[0].get("documentId") == d, "" if res else "200 with no results")
                else:
                    record("store", t, st, store_refusal(st, ra, b), b[:200])
            except Exception as e:
                record("store", t, None, False, repr(e))

    def ask_client():
        n = 0
        while not stop.is_set():
            d = before[n % len(before)]
            n += 1
            t = time.time()
            try:
                st, ra, b = request("POST", "/ask", {"question": f"What does the entry {marker(d)} record?", "maxTokens": 2})
                if st == 200:
                    srcs = [s.get("documentId") for s in json.loads(b).get("relevantSources", [])]
                    record("store", t, st, d in srcs, f"sources {srcs}")
                else:
                    record("store", t, st, store_refusal(st, ra, b), b[:200])
            except Exception as e:
                record("store", t, None, False, repr(e))
            time.sleep(0.05)

    def upload_client():
        n = 0
        while not stop.is_set():
            d = f"during-{n}"
            n += 1
            t = time.time()
            try:
                st, ra, b = upload(d, doc_text(d))
                if st == 202:
                    with lock:
                        acked.append(d)
                    record("store", t, st, True)
                else:
                    record("store", t, st, store_refusal(st, ra, b), b[:200])
            except Exception as e:
                record("store", t, None, False, repr(e))
            time.sleep(0.2)

    threads = [threading.Thread(target=chat_client, args=(k,)) for k in range(3)]
    threads += [threading.Thread(target=search_client, args=(k,)) for k in range(2)]
    threads += [threading.Thread(target=ask_client), threading.Thread(target=upload_client)]
    for t in threads:
        t.start()
    time.sleep(2)
    window["stop_begin"] = time.time()
    r = pg_ctl("-m", "fast", "stop")
    window["stopped"] = time.time()
    check(r.returncode == 0, f"pg_ctl stop -m fast (rc {r.returncode}: {r.stderr.strip()})")
    time.sleep(3)
    # Started with the options cluster-up gave it (postmaster.opts keeps them): same port, loopback.
    argv = shlex.split(open(os.path.join(data_dir, "postmaster.opts")).read())[1:]
    opts = [x for i, x in enumerate(argv) if x != "-D" and (i == 0 or argv[i - 1] != "-D")]
    window["start_begin"] = time.time()
    r = pg_ctl("-l", os.path.join(cluster_dir, "pg", "server.log"), "-o", " ".join(shlex.quote(x) for x in opts), "start")
    window["started"] = time.time()
    check(r.returncode == 0, f"pg_ctl start (rc {r.returncode}: {r.stderr.strip()})")
    # cluster-down stops the server by its pid file.
    with open(os.path.join(data_dir, "postmaster.pid")) as f, open(os.path.join(cluster_dir, "pids", "postgres.pid"), "w") as out:
        out.write(f.readline().strip() + "\n")
    time.sleep(4)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    check(not any(t.is_alive() for t in threads), "every client finished (no request hung)")

    by = collections.Counter((kind, st) for kind, _, _, st, _, _ in log)
    print("outage: stopped in %.1f s, down %.1f s, started in %.1f s" % (window["stopped"] - window["stop_begin"],
          window["start_begin"] - window["stopped"], window["started"] - window["start_begin"]))
    print("responses (kind, status): count:", dict(by))
    bad = [e for e in log if not e[4]]
    check(not bad, f"every response was a right 200, or a clean refusal of a store request (bad: {bad[:5]}, {len(bad)} in all)")
    # 503s only while PostgreSQL was away: the request overlapped [stop_begin, started].
    late_503 = [e for e in log if e[0] == "store" and e[3] != 200 and e[3] != 202 and e[1] > window["started"] + 1.0]
    check(not late_503, f"every store request sent from 1 s after the restart succeeded (got {late_503[:5]})")
    early_503 = [e for e in log if e[0] == "store" and e[3] == 503 and e[2] < window["stop_begin"]]
    check(not early_503, f"no store request failed before the outage (got {early_503[:5]})")
    refused = [e for e in log if e[0] == "store" and e[3] == 503]
    check(refused, "store requests were refused while PostgreSQL was down (else the outage was not exercised)")
    chat_down = [e for e in log if e[0] == "chat" and e[3] == 200 and e[1] >= window["stopped"] and e[2] <= window["start_begin"]]
    check(len(chat_down) >= 3, f"chat completions kept answering 200 while PostgreSQL was down (got {len(chat_down)})")
    store_after = [e for e in log if e[0] == "store" and e[3] in (200, 202) and e[1] > window["started"]]
    check(len(store_after) >= 3, f"store requests answered after the restart (got {len(store_after)})")
    print(f"while down: {len(chat_down)} chat 200s; store refusals {len(refused)}; store successes after the restart {len(store_after)}")

    # Nothing lost: every acknowledged upload is ingested, exactly once, and found.
    expected = before + acked
    t_wait = time.time()
    left = wait_ready(expected, 60)
    print(f"{len(acked)} uploads acknowledged around the outage; all ready {time.time() - t_wait:.1f} s after the load stopped"
          if not left else f"not ready: {sorted(left)}")
    check(not left, f"every acknowledged document is ready within 60 s (not: {sorted(left)})")
    # An upload whose commit landed just as the server stopped may have answered 503 and still
    # be queued: it is ingested too (not acknowledged, not lost); wait for the queue to drain.
    end = time.time() + 30
    while time.time() < end and sql(store_uri, "SELECT count(*) FROM ingest_jobs") != "0":
        time.sleep(0.2)
    ids = ",".join("'" + d + "'" for d in expected)
    rows = sql(store_uri, "SELECT d.doc_id, d.state, d.n_chunks, (SELECT count(*) FROM chunks c WHERE c.doc = d.id)"
                          f" FROM documents d WHERE d.doc_id IN ({ids}) ORDER BY d.doc_id")
    got = collections.Counter(line.split("|")[0] for line in (rows or "").splitlines())
    check(all(got[d] == 1 for d in expected), f"each acknowledged document has exactly one row (got {dict(got)})")
    for line in (rows or "").splitlines():
        d, state, n_chunks, n_rows = line.split("|")
        check(state == "ready" and n_chunks == n_rows and int(n_rows) > 0, f"{d} is ready with its chunks once ({line})")
    check(sql(store_uri, "SELECT count(*) FROM ingest_jobs") == "0", "no job is left in the queue")
    check(sql(store_uri, "SELECT count(*) FROM documents WHERE state != 'ready'") == "0",
          f"no document failed or stuck ({sql(store_uri, 'SELECT doc_id, state, error FROM documents WHERE state != ' + chr(39) + 'ready' + chr(39))})")
    for d in expected:
        st, _, b = request("POST", "/search", {"query": marker(d), "limit": 1})
        res = json.loads(b).get("results", []) if st == 200 else []
        check(res and res[0].get("documentId") == d, f"/search finds {d} after the outage (got {st}: {b[:200]!r})")
    for name in ("r1", "r2"):
        check(alive(started[name]), f"replica {name} still runs (no restart needed)")
finally:
    harness.tear_down(cluster_dir, tmp, checks.failures, ("haproxy.log", "r1/server.log", "r2/server.log", "pg/server.log"))

checks.finish(time.time() - t0)
