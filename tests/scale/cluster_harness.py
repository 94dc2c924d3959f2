"""Start-up, HTTP and clean-up helpers shared by the scale scripts in tests/scale.

A script here runs as `python3 tests/scale/NAME.py` (ctest does so, see CMakeLists.txt), so
this folder is sys.path[0] and `import cluster_harness` finds this file with no PYTHONPATH.
The clusters are scripts/cluster-up's: a proxy on PORT, replica i on PORT+i, and (with
PostgreSQL) the store on PORT+replicas+1; docs/scale.md. Only the standard library.
"""
import argparse, http.client, json, os, random, shutil, socket, subprocess, sys, tempfile

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
PG_BIN = "/usr/lib/postgresql/15/bin"
# The serve flags of the test clusters' replicas: one thread each and a bounded queue, so a
# replica under load answers 503 with Retry-After rather than queueing without end.
SERVE_ARGS = ["--ctx", "2048", "-t", "1", "--parallel", "4", "--max-queue", "64", "--queue-timeout", "10", "--timeout", "60"]


def default_kvrag():
    """The kvrag binary when --kvrag is not given: $KVRAG_BINARY, else build/kvrag."""
    return os.environ.get("KVRAG_BINARY", os.path.join(REPO, "build", "kvrag"))


def parse_kvrag_arg(doc):
    """The test scripts' one option, --kvrag (the binary the replicas run); `doc` is the usage."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    p.add_argument("--kvrag", default=default_kvrag())
    return p.parse_args()


def make_temp_dir(prefix):
    """A new temporary folder for clusters, entered by any user: as root, cluster-up runs
    PostgreSQL as the `postgres` user (initdb refuses root), which must reach its data there."""
    tmp = tempfile.mkdtemp(prefix=prefix)
    os.chmod(tmp, 0o755)
    return tmp


def require_cluster_tools(prog, commands=()):
    """Exits 77 (a ctest skip) when haproxy or the PostgreSQL 15 server is not installed, or 1
    under KVRAG_REQUIRE_SHARED=1 (CI runs scripts/setup.sh, so there it is a broken setup).
    Then exits 1 naming whichever of `commands` (e.g. curl, psql) is not on PATH."""
    pg_present = os.path.exists(PG_BIN + "/initdb") and os.path.exists(PG_BIN + "/pg_ctl")
    for what, present, how in (("haproxy", shutil.which("haproxy"), "apt-get install haproxy"),
                               ("PostgreSQL 15", pg_present, "apt-get install postgresql-15")):
        if not present:
            if os.environ.get("KVRAG_REQUIRE_SHARED") == "1":
                sys.exit(f"{prog}: {what} is not installed but KVRAG_REQUIRE_SHARED=1 (run scripts/setup.sh)")
            print(f"{prog}: SKIP: {what} is not installed ({how}; scripts/setup.sh does it)")
            sys.exit(77)
    missing = [c for c in commands if shutil.which(c) is None]
    if missing:
        sys.exit(f"{prog}: {' and '.join(missing)} not installed (needed by scripts/cluster-up or the checks; scripts/setup.sh installs them)")


class Checks:
    """Collects failed checks: each is printed when it fails, and finish() ends the script."""

    def __init__(self, prog):
        self.prog = prog
        self.failures = []

    def check(self, cond, what):
        """Records `what` as failed unless cond holds; returns cond (to guard what follows)."""
        if not cond:
            self.failures.append(what)
            print("FAIL:", what)
        return cond

    def finish(self, seconds):
        """Exits 1 when any check failed, else prints that all passed (in `seconds`)."""
        if self.failures:
            print(f"{self.prog}: {len(self.failures)} checks failed")
            sys.exit(1)
        print(f"{self.prog}: all checks passed in {seconds:.1f} s")


def ephemeral_port_range():
    """The kernel's range for outgoing connections' local ports (Linux default 32768-60999)."""
    try:
        lo, hi = (int(x) for x in open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def free_port_run(n, prog, seed=None):
    """A port P with P..P+n-1 all free on loopback (the proxy, the replicas, PostgreSQL).
    The run is taken outside the kernel's ephemeral range: a port free when probed there can be
    taken a moment later as the local end of any outgoing connection of a test running in
    parallel (CI saw a replica fail to listen that way). The seed (default: the pid) keeps
    parallel scripts off each other's first picks."""
    rng = random.Random(os.getpid() if seed is None else seed)
    eph_lo, eph_hi = ephemeral_port_range()
    lo, hi = 20000, 60000 - n  # below the range when it starts high enough, else above it
    if eph_lo - n > 10000:
        lo, hi = 10000, eph_lo - n
    elif eph_hi + 1 + n <= 65535:
        lo, hi = eph_hi + 1, 65535 - n
    for _ in range(200):
        base = rng.randint(lo, hi)
        socks = []
        try:
            for i in range(n):
                s = socket.socket()
                s.bind(("127.0.0.1", base + i))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    sys.exit(f"{prog}: no run of free ports found")


def run(args, timeout=180, **kw):
    """subprocess.run with output captured as text and a time limit (a hung tool fails the script)."""
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)


def _reply(r):
    body = r.read()
    return r.status, r.getheader("X-Kvrag-Replica"), r.getheader("Retry-After"), body


def request(port, method, path, body=None, headers=None, timeout=60):
    """One HTTP request to 127.0.0.1:port, `body` sent as JSON when given.
    Returns (status, X-Kvrag-Replica, Retry-After, response body bytes)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        h = dict(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body)
            h["Content-Type"] = "application/json"
        c.request(method, path, body=data, headers=h)
        return _reply(c.getresponse())
    finally:
        c.close()


def upload(port, fields, file_name, text, timeout=60):
    """POST /upload as curl -F writes it: the form `fields`, then `text` as the file `file_name`.
    Returns what request() returns."""
    boundary = "kvrag-test-boundary-7d3f"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{file_name}"\r\n'
                 f'Content-Type: text/plain\r\n\r\n{text}\r\n')
    body = ("".join(parts) + f"--{boundary}--\r\n").encode()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("POST", "/upload", body=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        return _reply(c.getresponse())
    finally:
        c.close()


def sql(uri, q):
    """psql's unaligned output of query q on the store `uri`; None when psql fails."""
    r = run(["psql", uri, "-Atc", q])
    return r.stdout.strip() if r.returncode == 0 else None


def cluster_up(cluster_dir, port, n_replicas, kvrag, store=None, serve_args=SERVE_ARGS):
    """Runs scripts/cluster-up (proxy on `port`); `store` is its --store (default: PostgreSQL).
    Returns the finished process: stdout is the proxy URL on success."""
    args = [os.path.join(REPO, "scripts", "cluster-up"), "--replicas", str(n_replicas), "--port", str(port), "--dir", cluster_dir,
            "--kvrag", kvrag]
    if store is not None:
        args += ["--store", store]
    return run(args + (["--"] + list(serve_args) if serve_args else []))


def cluster_down(cluster_dir):
    """Runs scripts/cluster-down on the cluster in cluster_dir; returns the finished process."""
    return run([os.path.join(REPO, "scripts", "cluster-down"), "--dir", cluster_dir])


def pids(cluster_dir):
    """{name: pid} from cluster-up's pid files (haproxy, postgres, r1, ...); empty when none."""
    d = os.path.join(cluster_dir, "pids")
    return {f[:-4]: int(open(os.path.join(d, f)).read()) for f in os.listdir(d) if f.endswith(".pid")} if os.path.isdir(d) else {}


def alive(pid):
    """True while the process runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def tear_down(cluster_dir, tmp, failed, logs):
    """The scripts' `finally`: stops what still runs of the cluster, prints the last lines of
    each of `logs` (paths in cluster_dir) when a check failed, and removes tmp."""
    if any(alive(pid) for pid in pids(cluster_dir).values()):
        subprocess.run([os.path.join(REPO, "scripts", "cluster-down"), "--dir", cluster_dir], capture_output=True)
    if failed:
        for name in logs:
            path = os.path.join(cluster_dir, name)
            if os.path.exists(path):
                print(f"--- last lines of {name}:\n" + "".join(open(path, errors="replace").readlines()[-15:]))
    shutil.rmtree(tmp, ignore_errors=True)
