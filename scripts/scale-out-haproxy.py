#!/usr/bin/env python3
"""Three smelt replicas behind HAProxy on loopback; one is killed in the middle of a load
run. Checks that every request still succeeds (HAProxy retries a request whose replica
died under it on a live one), that HAProxy marks the dead replica down from its /health
checks within about a second, and that no request reaches it afterwards.

Usage: python3 scripts/scale-out-haproxy.py SMELT_BINARY MODEL.gguf [SECONDS]
Needs haproxy (Debian package `haproxy`) on PATH; Python's standard library only.
Prints a summary and exits non-zero if a check fails.
"""
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

smelt, model = sys.argv[1], sys.argv[2]
duration = float(sys.argv[3]) if len(sys.argv) > 3 else 12.0
CLIENTS = 6
KILL_AT = duration / 3


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port, path, timeout=2.0):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request("GET", path)
    r = c.getresponse()
    return r.status, r.read()


def wait_healthy(port, proc, limit=120):
    start = time.time()
    while time.time() - start < limit:
        if proc.poll() is not None:
            raise SystemExit(f"replica on {port} exited with {proc.returncode}")
        try:
            if get(port, "/health")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"replica on {port} never became healthy")


def haproxy_stats(sock):
    """Per-server (status, total sessions) from HAProxy's admin socket."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    s.sendall(b"show stat\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    lines = data.decode().splitlines()
    head = lines[0].lstrip("# ").split(",")
    out = {}
    for line in lines[1:]:
        row = dict(zip(head, line.split(",")))
        if row.get("pxname") == "smelt" and row.get("svname", "").startswith("r"):
            out[row["svname"]] = (row["status"], int(row["stot"] or 0))
    return out


def main():
    if shutil.which("haproxy") is None:
        raise SystemExit("haproxy is not installed (apt-get install haproxy)")
    work = tempfile.mkdtemp(prefix="smelt-haproxy-")
    ports = [free_port() for _ in range(3)]
    front = free_port()
    replicas = []
    for p in ports:
        log = open(os.path.join(work, f"replica-{p}.log"), "w")
        replicas.append(subprocess.Popen(
            [smelt, "--port", str(p), "--threads", "1", "--log", "warn", "gguf", "-f", model],
            stdout=log, stderr=subprocess.STDOUT))
    sock = os.path.join(work, "admin.sock")
    cfg = f"""
global
    stats socket {sock} mode 600 level admin
    maxconn 256
defaults
    mode http
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    # A request whose replica refused the connection or died before answering goes to
    # another one (the body is buffered so it can be sent again).
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response
    option http-buffer-request
frontend fe
    bind 127.0.0.1:{front}
    default_backend smelt
backend smelt
    balance leastconn
    option httpchk GET /health
    http-check expect status 200
    default-server inter 200ms fall 2 rise 2
    http-response set-header X-Served-By %s
""" + "".join(f"    server r{i} 127.0.0.1:{p} check\n" for i, p in enumerate(ports))
    cfg_path = os.path.join(work, "haproxy.cfg")
    with open(cfg_path, "w") as f:
        f.write(cfg)
    proxy = None
    try:
        for p, r in zip(ports, replicas):
            wait_healthy(p, r)
        proxy = subprocess.Popen(["haproxy", "-f", cfg_path, "-db"], stdout=subprocess.DEVNULL,
                                 stderr=open(os.path.join(work, "haproxy.log"), "w"))
        start = time.time()
        while not (os.path.exists(sock) and all(
                s[0] == "UP" for s in haproxy_stats(sock).values()) and len(haproxy_stats(sock)) == 3):
            if time.time() - start > 20 or proxy.poll() is not None:
                raise SystemExit("haproxy did not see three healthy replicas")
            time.sleep(0.1)

        results = []  # (sent_at, done_at, status, served_by, error)
        lock = threading.Lock()
        stop = time.time() + duration
        body = json.dumps({"messages": [{"role": "user", "content": "Say something."}],
                           "max_tokens": 8, "temperature": 0})

        def client():
            while time.time() < stop:
                sent = time.time()
                try:
                    c = http.client.HTTPConnection("127.0.0.1", front, timeout=60)
                    c.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
                    r = c.getresponse()
                    data = r.read()
                    ok = r.status == 200 and json.loads(data)["choices"][0]["message"]["content"] is not None
                    rec = (sent, time.time(), r.status if ok else f"{r.status} {data[:200]!r}",
                           r.getheader("X-Served-By"), None)
                except Exception as e:  # noqa: BLE001 — every failure is reported
                    rec = (sent, time.time(), None, None, repr(e))
                with lock:
                    results.append(rec)

        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        for t in threads:
            t.start()
        time.sleep(KILL_AT)
        killed_at = time.time()
        replicas[0].send_signal(signal.SIGKILL)
        down_at = None
        sessions_at_down = None
        while time.time() < stop:
            st = haproxy_stats(sock)
            if down_at is None and st["r0"][0].startswith("DOWN"):
                down_at = time.time()
                sessions_at_down = st["r0"][1]
            time.sleep(0.05)
        for t in threads:
            t.join()
        final = haproxy_stats(sock)
    finally:
        if proxy is not None:
            proxy.terminate()
        for r in replicas:
            if r.poll() is None:
                r.terminate()
        for r in replicas:
            r.wait()

    failed = [r for r in results if r[2] != 200]
    by = {}
    for r in results:
        if r[2] == 200:
            by[r[3]] = by.get(r[3], 0) + 1
    before = [r for r in results if r[1] < killed_at and r[2] == 200]
    after_down = [r for r in results if down_at is not None and r[0] > down_at + 0.05]
    print(f"requests: {len(results)} ({len(failed)} failed); served by {dict(sorted(by.items()))}")
    print(f"r0 killed at {killed_at - start:.2f}s into the run; marked DOWN by haproxy "
          + (f"{down_at - killed_at:.2f}s later" if down_at else "never"))
    print(f"r0 sessions when marked down: {sessions_at_down}, at the end: {final['r0'][1]}")
    print(f"requests sent after r0 was down: {len(after_down)}, served by r0: "
          f"{sum(1 for r in after_down if r[3] == 'r0')}")
    problems = []
    if failed:
        problems.append(f"{len(failed)} requests failed, e.g. {failed[:3]}")
    if not any(r[3] == "r0" for r in before):
        problems.append("r0 served nothing before it was killed: the load never reached it")
    if down_at is None or down_at - killed_at > 2.0:
        problems.append("haproxy did not mark the killed replica down within 2 s")
    if any(r[3] == "r0" for r in after_down):
        problems.append("requests reached r0 after it was marked down")
    if sessions_at_down is not None and final["r0"][1] != sessions_at_down:
        problems.append(f"haproxy opened {final['r0'][1] - sessions_at_down} sessions to r0 after it was down")
    if len(after_down) < CLIENTS:
        problems.append("too few requests after the kill to tell")
    if problems:
        print("FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
        print(f"(logs in {work})", file=sys.stderr)
        sys.exit(1)
    shutil.rmtree(work, ignore_errors=True)
    print("scale-out check passed")


main()
