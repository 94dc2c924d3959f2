#!/usr/bin/env python3
"""Prefix-cache hit rate through the proxy with and without conversation affinity (docs/scale.md).

Runs C conversations of T turns each against a running cluster (scripts/cluster-up), interleaved
turn by turn in a shuffled order, once sending X-Conversation-Id and once not (leastconn alone), and prints the share
of prompt tokens whose prefill the replicas' prefix caches skipped. Counts, not timings: the figure
does not depend on how busy the machine is. Only the standard library.

usage: tests/scale/affinity_hit_rate.py --proxy http://127.0.0.1:8080 --replica-ports 8081,8082,8083
                                        [--conversations 12] [--turns 10]
"""
import argparse, http.client, json, random, re, urllib.parse

p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
p.add_argument("--proxy", required=True)
p.add_argument("--replica-ports", required=True)
p.add_argument("--conversations", type=int, default=12)
p.add_argument("--turns", type=int, default=10)
a = p.parse_args()
proxy = urllib.parse.urlparse(a.proxy)
ports = [int(x) for x in a.replica_ports.split(",")]
words = "the keeper wrote in the log about storms ships lights tides and the long winter nights".split()


def request(host, port, method, path, body=None, headers=None):
    c = http.client.HTTPConnection(host, port, timeout=120)
    h = dict(headers or {})
    if body is not None:
        h["Content-Type"] = "application/json"
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def hit_tokens():
    total = 0.0
    for port in ports:
        _, body = request("127.0.0.1", port, "GET", "/metrics")
        total += float(re.search(r"^kvrag_prefix_cache_hit_tokens_total (\S+)$", body.decode(), re.M).group(1))
    return total


for affinity in (False, True):
    # Each mode has its own texts (no reuse across the two runs) and a new order every turn (so
    # leastconn's rotation cannot pin a conversation to a replica by accident).
    rng = random.Random(11 + affinity)
    histories = [[] for _ in range(a.conversations)]
    prompt_tokens = 0
    start = hit_tokens()
    for turn in range(a.turns):
        order = list(range(a.conversations))
        rng.shuffle(order)
        for k in order:
            h = histories[k]
            h.append({"role": "user", "content": " ".join(rng.choice(words) for _ in range(rng.randint(4, 12)))})
            headers = {"X-Conversation-Id": f"rate-{affinity}-{k}"} if affinity else {}
            status, body = request(proxy.hostname, proxy.port, "POST", "/v1/chat/completions",
                                   {"messages": h, "max_tokens": 8, "temperature": 0, "seed": k}, headers)
            if status != 200:
                raise SystemExit(f"affinity_hit_rate: HTTP {status}: {body[:200]!r}")
            d = json.loads(body)
            prompt_tokens += d["usage"]["prompt_tokens"]
            h.append({"role": "assistant", "content": d["choices"][0]["message"]["content"]})
    hits = hit_tokens() - start
    print(f"affinity={'on' if affinity else 'off'} conversations={a.conversations} turns={a.turns} replicas={len(ports)} "
          f"prompt_tokens={prompt_tokens} prefix_hit_tokens={int(hits)} hit_rate={hits / prompt_tokens:.3f}")
