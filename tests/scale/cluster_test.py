#!/usr/bin/env python3
"""Three kvrag replicas behind HAProxy (scripts/cluster-up, deploy/haproxy.cfg; docs/scale.md).

Checks, through the proxy:
  1. each replica names itself (serve --replica-name -> X-Kvrag-Replica); a bad name is refused;
  2. a 20-turn conversation carrying X-Conversation-Id lands on one replica every turn, and that
     replica's prefix-cache hit counter (/metrics) rises by one a turn while the others' stay put;
     the OpenAI `user` field and the memory API's `conversationId` pin a conversation the same way;
  3. requests without an id spread over all replicas (leastconn);
  4. SIGKILL of one replica under 16 concurrent clients: every client sees only 200, 4xx, or 503
     with Retry-After (never a refused connection, a 502 or a cut response), and the two other
     replicas carry on, the killed replica's conversations included;
  5. cluster-up refuses a taken port; cluster-down stops everything and is idempotent;
  6. one shared memory (cluster-up's default --store postgres): a document uploaded through the
     proxy is ingested once, then /upload-status, /search and /ask find it on every replica
     asked directly;
  7. a replica SIGKILLed while it runs an ingestion it claimed: after its lease (15 s) another
     replica takes the job over and the document is written exactly once (one row, its chunk
     count equal to its chunks, no job left).
Exits 77 (ctest skip) when haproxy is not installed, unless KVRAG_REQUIRE_SHARED=1 (CI, which runs
scripts/setup.sh and so has it), and likewise when PostgreSQL 15 is not installed. Only the
standard library.

usage: tests/scale/cluster_test.py [--kvrag build/kvrag]
"""
import collections, json, os, random, re, signal, socket, sys, threading, time

import cluster_harness as harness
from cluster_harness import alive, run

a = harness.parse_kvrag_arg(__doc__)

harness.require_cluster_tools("cluster_test", commands=("curl", "psql"))

N_REPLICAS = 3
tmp = harness.make_temp_dir("kvrag-cluster-test-")
cluster_dir = os.path.join(tmp, "cluster")
checks = harness.Checks("cluster_test")
check = checks.check
port = harness.free_port_run(N_REPLICAS + 2, "cluster_test")  # the proxy, the replicas, PostgreSQL


def request(method, path, body=None, headers=None, port_=None, timeout=60):
    """harness.request to the proxy, or to replica port_ when given."""
    return harness.request(port_ or port, method, path, body, headers, timeout)


def recv_all(s):
    """What the socket s receives until the other side closes it."""
    raw = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return raw
        raw += chunk


def proxy_sessions():
    """Current sessions per replica in the affinity backend, from the proxy's stats socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(os.path.join(cluster_dir, "haproxy.sock"))
        s.sendall(b"show stat\n")
        raw = recv_all(s)
    lines = raw.decode().splitlines()
    cols = lines[0].lstrip("# ").split(",")
    out = {}
    for line in lines[1:]:
        row = dict(zip(cols, line.split(",")))
        if row.get("pxname") == "kvrag_affinity" and row.get("svname", "").startswith("r"):
            out[row["svname"]] = int(row["scur"] or 0)
    return out


def request_to_close(method, path, body=None, headers=None, timeout=60):
    """One request on its own connection with `Connection: close`, sent once the proxy holds no
    session on any replica. Bounded-load hashing (docs/scale.md) counts open sessions, and at
    this low load a key moves off a replica that still holds one: back-to-back requests would
    otherwise meet the previous request's session in its last instants (the proxy closes the
    client side before it lets go of the server side)."""
    deadline = time.time() + 5
    while any(proxy_sessions().values()) and time.time() < deadline:
        time.sleep(0.005)
    data = json.dumps(body).encode() if body is not None else b""
    h = {"Host": f"127.0.0.1:{port}", "Connection": "close", "Content-Length": str(len(data))}
    if body is not None:
        h["Content-Type"] = "application/json"
    h.update(headers or {})
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head.encode() + data)
        raw = recv_all(s)
    head_bytes, _, payload = raw.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    fields = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
    if "chunked" in fields.get("transfer-encoding", ""):
        out, rest = b"", payload
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            out, rest = out + rest[:size], rest[size + 2:]
        payload = out
    return status, fields.get("x-kvrag-replica"), fields.get("retry-after"), payload


def metric(replica_index, name):
    status, _, _, body = request("GET", "/metrics", port_=port + replica_index)
    m = re.search(r"^" + re.escape(name) + r" (\S+)$", body.decode(), re.M)
    return float(m.group(1)) if status == 200 and m else -1.0


def hits():
    return {f"r{i}": metric(i, "kvrag_prefix_cache_hits_total") for i in range(1, N_REPLICAS + 1)}


def hit_tokens():
    return {f"r{i}": metric(i, "kvrag_prefix_cache_hit_tokens_total") for i in range(1, N_REPLICAS + 1)}


def pids():
    return harness.pids(cluster_dir)


started_pids = {}
try:
    t0 = time.time()
    up = harness.cluster_up(cluster_dir, port, N_REPLICAS, a.kvrag)
    if up.returncode != 0:
        sys.exit("cluster_test: cluster-up failed:\n" + up.stdout + up.stderr)
    check(up.stdout.strip() == f"http://127.0.0.1:{port}", f"cluster-up prints the proxy URL (got {up.stdout.strip()!r})")
    started_pids = pids()
    check(sorted(started_pids) == ["haproxy", "postgres", "r1", "r2", "r3"],
          f"pid files for haproxy, PostgreSQL and 3 replicas (got {sorted(started_pids)})")
    print(f"cluster up in {time.time() - t0:.1f} s on port {port}")

    # Idempotent: a second cluster-up on the same folder finds it up and prints the same URL.
    again = harness.cluster_up(cluster_dir, port, N_REPLICAS, a.kvrag, serve_args=())
    check(again.returncode == 0 and again.stdout.strip() == f"http://127.0.0.1:{port}" and pids() == started_pids,
          f"a second cluster-up on a running cluster changes nothing (rc {again.returncode}, {again.stderr.strip()!r})")
    # A taken port is refused by name, and the other cluster's processes are untouched.
    taken = harness.cluster_up(os.path.join(tmp, "other"), port, 1, a.kvrag, serve_args=())
    check(taken.returncode != 0 and f"port {port}" in taken.stderr and "taken" in taken.stderr,
          f"cluster-up on a taken port fails naming it (rc {taken.returncode}, {taken.stderr.strip()!r})")

    # 1. Each replica names itself; a bad name is refused before the model loads.
    for i in range(1, N_REPLICAS + 1):
        status, name, _, _ = request("GET", "/health", port_=port + i)
        check(status == 200 and name == f"r{i}", f"replica {i} answers /health naming itself r{i} (got {status}, {name!r})")
    bad = run([a.kvrag, "serve", "-m", os.path.join(cluster_dir, "model.gguf"), "--port", "0", "--replica-name", "r 1\r\nX-Evil: 1"])
    check(bad.returncode != 0 and "--replica-name" in bad.stderr, f"a replica name with spaces/CRLF is refused (rc {bad.returncode}, {bad.stderr.strip()!r})")

    # 6. One shared memory: upload through the proxy, then every replica, asked directly, has it.
    store_uri = open(os.path.join(cluster_dir, "store-uri")).read().strip()
    check(store_uri == f"postgresql://kvrag@127.0.0.1:{port + N_REPLICAS + 1}/kvrag", f"the replicas share one PostgreSQL store (got {store_uri!r})")
    text = ("The lighthouse on Skerryvore was kept by Zephyrine Okonkwo-Lindqvist for forty winters. "
            "She logged every storm and every ship that passed the reef.")
    status, via, _, body = harness.upload(port, {"index": "default", "documentId": "skerryvore"}, "skerryvore.txt", text)
    check(status == 202, f"/upload through the proxy answered 202 (got {status}: {body[:200]!r})")
    t_up = time.time()
    ready = {}
    while time.time() - t_up < 30 and len(ready) < N_REPLICAS:
        for i in range(1, N_REPLICAS + 1):
            st, _, _, b = request("GET", "/upload-status?index=default&documentId=skerryvore", port_=port + i)
            if st == 200 and json.loads(b).get("completed"):
                ready[i] = json.loads(b)
        time.sleep(0.1)
    check(len(ready) == N_REPLICAS, f"every replica reports the upload completed within 30 s (got {sorted(ready)})")
    check(len({r.get("chunks") for r in ready.values()}) == 1, f"every replica reports the same chunks (got {[r.get('chunks') for r in ready.values()]})")
    print(f"shared store: uploaded through {via}, ready on all replicas in {time.time() - t_up:.1f} s")
    for i in range(1, N_REPLICAS + 1):
        st, name, _, b = request("POST", "/search", {"query": "Zephyrine Okonkwo-Lindqvist", "limit": 3}, port_=port + i)
        results = json.loads(b).get("results", []) if st == 200 else []
        check(st == 200 and results and results[0]["documentId"] == "skerryvore",
              f"/search on r{i} directly finds the document uploaded through {via} (got {st}: {b[:200]!r})")
        st, name, _, b = request("POST", "/ask", {"question": "Who kept the Skerryvore lighthouse?", "maxTokens": 2}, port_=port + i)
        sources = [c.get("documentId") for c in json.loads(b).get("relevantSources", [])] if st == 200 else []
        check(st == 200 and "skerryvore" in sources, f"/ask on r{i} directly cites the shared document (got {st}: {b[:200]!r})")

    # 2. Affinity: 20 turns with X-Conversation-Id, all on one replica; from the third turn on
    # each turn reuses the conversation's prefix there (one hit, more tokens each turn), and no
    # other replica sees it. (The second turn does not reuse the first: the prefix cache keeps a
    # block once two prompts have held it, docs/kv-cache.md "Prefix reuse".)
    history, seen, per_turn = [], [], []
    rng = random.Random(7)
    words = "the keeper wrote in the log about storms ships lights tides and the long winter nights".split()
    first = hits()
    for turn in range(20):
        history.append({"role": "user", "content": " ".join(rng.choice(words) for _ in range(6))})
        b_hits, b_tokens = hits(), hit_tokens()
        status, name, _, body = request_to_close("POST", "/v1/chat/completions", {"messages": history, "max_tokens": 4, "temperature": 0},
                                        headers={"X-Conversation-Id": "conversation-one"})
        a_hits, a_tokens = hits(), hit_tokens()
        check(status == 200, f"turn {turn + 1} answered 200 (got {status}: {body[:200]!r})")
        if status == 200:
            history.append({"role": "assistant", "content": json.loads(body)["choices"][0]["message"]["content"]})
        seen.append(name)
        per_turn.append((a_hits.get(name, 0) - b_hits.get(name, 0), a_tokens.get(name, 0) - b_tokens.get(name, 0)))
    last = hits()
    sticky = seen[0]
    check(len(set(seen)) == 1, f"all 20 turns on one replica (got {collections.Counter(seen)})")
    print("affinity: replica", sticky, "(prefix-cache hits, hit tokens) per turn:", per_turn)
    check(all(h == 1 for h, _ in per_turn[2:]), f"turns 3..20 each hit the prefix cache of {sticky} (got {per_turn})")
    check(all(per_turn[i][1] > per_turn[i - 1][1] for i in range(3, 20)), f"each turn reuses more tokens than the one before (got {per_turn})")
    check(all(last[r] == first[r] for r in last if r != sticky), f"no other replica's prefix cache moved (before {first}, after {last})")

    # The `user` field and the memory API's conversationId pin a conversation too; different ids
    # reach more than one replica (so the pinning is by id, not to one replica for everything).
    by_user = collections.defaultdict(set)
    for conv in range(8):
        for _ in range(3):
            status, name, _, _ = request_to_close("POST", "/v1/chat/completions",
                                         {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 1, "user": f"user-{conv}"})
            check(status == 200, f"user-{conv} answered 200 (got {status})")
            by_user[conv].add(name)
    check(all(len(s) == 1 for s in by_user.values()), f"each `user` stays on one replica (got {dict(by_user)})")
    check(len(set().union(*by_user.values())) >= 2, f"8 users spread over more than one replica (got {dict(by_user)})")
    by_conv = collections.defaultdict(set)
    for conv in range(4):
        for _ in range(2):
            status, name, _, body = request_to_close("POST", "/ask", {"question": "what did the keeper write?", "conversationId": f"mem-{conv}",
                                                             "maxTokens": 2})
            check(status == 200, f"/ask mem-{conv} answered 200 (got {status}: {body[:200]!r})")
            by_conv[conv].add(name)
    check(all(len(s) == 1 for s in by_conv.values()), f"each conversationId stays on one replica (got {dict(by_conv)})")

    # 3. Without an id: least connections spreads requests over every replica.
    spread = collections.Counter()
    for _ in range(9):
        status, name, _, _ = request("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1})
        check(status == 200, f"a request without an id answered 200 (got {status})")
        spread[name] += 1
    check(sorted(spread) == ["r1", "r2", "r3"], f"9 requests without an id reach all 3 replicas (got {dict(spread)})")

    # 4. SIGKILL one replica under 16 concurrent clients. Half of them carry a conversation id.
    victim = "r2"
    outcomes = collections.Counter()
    bad = []
    after_kill = collections.Counter()
    lock = threading.Lock()
    stop = threading.Event()
    killed_at = [None]

    def client(k):
        crng = random.Random(100 + k)
        headers = {"X-Conversation-Id": f"load-{k}"} if k % 2 == 0 else {}
        while not stop.is_set():
            t_start = time.time()
            try:
                status, name, retry_after, body = request("POST", "/v1/chat/completions",
                                                          {"messages": [{"role": "user", "content": " ".join(crng.choice(words) for _ in range(8))}],
                                                           "max_tokens": crng.randint(1, 8)}, headers=headers, timeout=60)
            except Exception as e:  # a refused or cut connection reached the client: a failure
                with lock:
                    bad.append(("exception", repr(e)))
                continue
            ok = status == 200 or (400 <= status < 500 and status != 429) or (status in (429, 503) and retry_after)
            with lock:
                outcomes[status] += 1
                if not ok:
                    bad.append((status, body[:200]))
                if killed_at[0] is not None and t_start > killed_at[0] and status == 200:
                    after_kill[(name, k % 2 == 0)] += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    time.sleep(4)
    with lock:
        before_kill = sum(outcomes.values())
        killed_at[0] = time.time()
    os.kill(started_pids[victim], signal.SIGKILL)
    time.sleep(7)
    stop.set()
    for t in threads:
        t.join(timeout=90)
    print("load: outcomes", dict(outcomes), "before the kill", before_kill, "; 200s started after the kill by (replica, has id):", dict(after_kill))
    check(not bad, f"every client saw 200, 4xx or 503/429 with Retry-After (bad: {bad[:5]}, {len(bad)} in all)")
    check(before_kill > 0, "requests completed before the kill")
    survivors = [f"r{i}" for i in range(1, N_REPLICAS + 1) if f"r{i}" != victim]
    for r in survivors:
        check(sum(n for (name, _), n in after_kill.items() if name == r) > 0, f"replica {r} carried on after the kill (got {dict(after_kill)})")
    check(sum(n for (name, _), n in after_kill.items() if name == victim) == 0, f"nothing started after the kill was answered by {victim}")
    check(sum(n for (_, pinned), n in after_kill.items() if pinned) > 0, "conversations with an id were answered after the kill")
    for r in survivors:
        check(alive(started_pids[r]), f"replica {r} still runs")

    # 7. SIGKILL the replica running an ingestion: another takes the job over when the lease
    # runs out, and the document is written once. The claim (claimed_by = host:pid:nonce) is
    # read from PostgreSQL, so the replica killed is the one holding the job.
    def sql(q):
        return harness.sql(store_uri, q)

    live = [r for r in survivors if alive(started_pids[r])]
    big = " ".join(f"Entry {i}: the keeper of the northern light counted {i % 97} ships and {i % 13} storms." for i in range(1200))
    status, via, _, body = harness.upload(port, {"index": "default", "documentId": "logbook"}, "logbook.txt", big)
    check(status == 202, f"the large /upload answered 202 (got {status}: {body[:200]!r})")
    claim, t_claim = None, time.time()
    while claim is None and time.time() - t_claim < 30:
        row = sql("SELECT claimed_by, n_chunks_done, n_chunks_total FROM ingest_jobs WHERE doc_id = 'logbook' AND state = 'running'")
        if row:
            claim = row.split("|")
        else:
            time.sleep(0.02)
    holder = None
    if check(claim is not None, "a replica claimed the large upload within 30 s"):
        holder_pid = int(claim[0].split(":")[-2])
        holder = next((r for r in live if started_pids[r] == holder_pid), None)
        check(holder is not None, f"the claimer {claim[0]} is one of the live replicas {live}")
    if holder:
        os.kill(started_pids[holder], signal.SIGKILL)
        t_kill = time.time()
        check(sql("SELECT count(*) FROM ingest_jobs WHERE doc_id = 'logbook'") == "1",
              "the job was still unfinished when its replica was killed (make the document bigger if this fails)")
        other = next(r for r in live if r != holder)
        done = None
        while time.time() - t_kill < 90 and done is None:
            st, _, _, b = request("GET", "/upload-status?index=default&documentId=logbook", port_=port + int(other[1:]))
            if st == 200 and json.loads(b).get("completed"):
                done = json.loads(b)
            time.sleep(0.2)
        print(f"takeover: {holder} killed at chunk {claim[1]} of {claim[2]}; {other} finished the job {time.time() - t_kill:.1f} s later")
        check(done is not None and not done.get("failed"), f"{other} finished the killed replica's ingestion within 90 s (got {done})")
        row = sql("SELECT count(*), min(d.n_chunks), min((SELECT count(*) FROM chunks c WHERE c.doc = d.id)), min(d.state)"
                  " FROM documents d WHERE d.doc_id = 'logbook'")
        n_docs, n_chunks, n_rows, state = (row or "|||").split("|")
        check(n_docs == "1" and state == "ready" and n_chunks == n_rows and int(n_rows or 0) > 0,
              f"the document is written exactly once (documents, n_chunks, chunk rows, state: {row!r})")
        check(sql("SELECT count(*) FROM ingest_jobs") == "0", "no job is left in the queue")
        st, _, _, b = request("POST", "/search", {"query": "northern light", "limit": 1}, port_=port + int(other[1:]))
        check(st == 200 and json.loads(b).get("results") and json.loads(b)["results"][0]["documentId"] == "logbook",
              f"{other} finds the taken-over document (got {st}: {b[:200]!r})")

    # 5. cluster-down stops exactly the cluster's processes; again, it has nothing to stop.
    down = harness.cluster_down(cluster_dir)
    check(down.returncode == 0, f"cluster-down exits 0 ({down.stderr.strip()!r})")
    time.sleep(0.2)
    check(not any(alive(pid) for pid in started_pids.values()), "cluster-down stopped every process")
    down2 = harness.cluster_down(cluster_dir)
    check(down2.returncode == 0 and "stopped 0" in down2.stdout, f"a second cluster-down stops nothing and exits 0 ({down2.stdout.strip()!r})")
finally:
    harness.tear_down(cluster_dir, tmp, checks.failures, ("haproxy.log", "r1/server.log", "r2/server.log", "r3/server.log", "pg/server.log"))

checks.finish(time.time() - t0)
