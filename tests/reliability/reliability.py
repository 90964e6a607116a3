"""Reliability checks against the real runway binary (see run.sh)."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

WORK = sys.argv[1]
SOAK_SECONDS = int(sys.argv[2])
RUNWAY = os.path.join(WORK, "runway")
TOKEN = "rwy_reliability-bootstrap-admin-token-0123456789"
EXAMPLES = os.path.join(os.getcwd(), "examples")


class Node:
    """`runway serve` on free loopback ports with its own data folder."""

    def __init__(self, name, wrapper=(), extra=()):
        self.data = os.path.join(WORK, name)
        self.log = open(os.path.join(WORK, name + ".log"), "wb")
        env = dict(os.environ, RUNWAY_ADMIN_TOKEN=TOKEN, RUNWAY_LOG="info")
        self.proc = subprocess.Popen(
            [*wrapper, RUNWAY, "serve", "--listen", "127.0.0.1:0", "--admin-listen",
             "127.0.0.1:0", "--data-dir", self.data, *extra],
            stdout=subprocess.PIPE, stderr=self.log, env=env)
        self.gateway = self.admin = None
        while self.gateway is None or self.admin is None:
            line = self.proc.stdout.readline().decode()
            if not line:
                raise SystemExit(f"node {name} did not start; see {self.log.name}")
            if m := re.match(r"runway: gateway listening on (\S+)", line):
                self.gateway = m.group(1)
            if m := re.match(r"runway: admin API listening on (\S+)", line):
                self.admin = m.group(1)
        threading.Thread(target=lambda: self.proc.stdout.read(), daemon=True).start()

    def cli(self, *args):
        env = dict(os.environ, RUNWAY_SERVER=self.admin, RUNWAY_TOKEN=TOKEN)
        out = subprocess.run([RUNWAY, *args], env=env, capture_output=True, check=True)
        return out.stdout.decode()

    def deploy(self, example):
        self.cli("deploy", "--no-build", os.path.join(EXAMPLES, example))

    def recorded(self):
        return json.loads(self.cli("cost", "--since", "24h", "--json"))["total"]["invocations"]

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def descriptors(self):
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def cpu_seconds(self):
        with open(f"/proc/{self.proc.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)


def wrk(url, seconds, connections=16):
    return subprocess.Popen(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", url],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wrk_requests(proc):
    out = proc.communicate()[0].decode()
    m = re.search(r"(\d+) requests in", out)
    return int(m.group(1)) if m else 0, out


def sigkill_under_load():
    print("== 1. SIGKILL under load")
    node = Node("kill")
    node.deploy("hello")
    load = wrk(node.gateway + "/hello", 6)
    time.sleep(3)
    killed_at = time.monotonic()
    node.proc.send_signal(signal.SIGKILL)
    node.proc.wait()
    answered, out = wrk_requests(load)
    # wrk counts only complete responses; after the kill every request fails.
    elapsed = 3.0
    rate = answered / elapsed
    again = Node("kill")
    recorded = again.recorded()
    again.stop()
    lost = max(answered - recorded, 0)
    print(f"answered {answered} ({rate:.0f}/s before the kill), recorded {recorded}, "
          f"lost {lost} = {lost / rate * 1000 if rate else 0:.0f} ms of traffic")
    return lost / rate * 1000 if rate else 0


def slow_client_flood():
    print("== 2. 1,100 idle and 100 slow clients under a 1,024-descriptor limit")
    node = Node("flood", wrapper=("prlimit", "--nofile=1024:1024"), extra=("--idle-timeout", "10s"))
    node.deploy("hello")
    log_before = os.path.getsize(node.log.name)
    cpu_before = node.cpu_seconds()
    started = time.monotonic()
    held = []
    host, port = node.gateway.removeprefix("http://").rsplit(":", 1)
    for i in range(1200):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect((host, int(port)))
        except BlockingIOError:
            pass
        if i >= 1100:
            time.sleep(0.001)
            try:
                s.send(b"GET /hello HTTP/1.1\r\nhost: x\r\n")
            except OSError:
                pass
        held.append(s)
    time.sleep(5)
    health = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{time_total}",
         "-m", "30", node.admin + "/v1/health"], capture_output=True).stdout.decode()
    hello = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{time_total}",
         "-m", "60", node.gateway + "/hello"], capture_output=True).stdout.decode()
    busy = node.cpu_seconds() - cpu_before
    window = time.monotonic() - started
    log_growth = os.path.getsize(node.log.name) - log_before
    print(f"node CPU {busy:.2f} s over {window:.1f} s ({100 * busy / window:.0f}% of a core), "
          f"log grew {log_growth} bytes, descriptors open {node.descriptors()}")
    print(f"admin /v1/health during the flood: {health} s; gateway /hello: {hello} s")
    for s in held:
        s.close()
    node.stop()


def soak():
    print(f"== 3. soak: {SOAK_SECONDS} s of hello and echo at 16 connections, sampled every 15 s")
    node = Node("soak")
    node.deploy("hello")
    node.deploy("echo")
    loads = [wrk(node.gateway + "/hello", SOAK_SECONDS), wrk(node.gateway + "/echo/x", SOAK_SECONDS, 4)]
    print(f"{'t (s)':>6} {'RSS (MiB)':>10} {'fds':>6} {'store (MiB)':>12}")
    samples = []
    started = time.monotonic()
    while any(p.poll() is None for p in loads):
        elapsed = time.monotonic() - started
        store = sum(os.path.getsize(os.path.join(node.data, f))
                    for f in os.listdir(node.data) if f.startswith("runway.db"))
        samples.append((elapsed, node.rss_kib(), node.descriptors()))
        print(f"{elapsed:6.0f} {node.rss_kib() / 1024:10.1f} {node.descriptors():6d} {store / 2**20:12.1f}",
              flush=True)
        time.sleep(15)
    served = sum(wrk_requests(p)[0] for p in loads)
    node.stop()
    first, last = samples[min(2, len(samples) - 1)], samples[-1]
    print(f"served {served} requests; RSS {first[1] / 1024:.1f} -> {last[1] / 1024:.1f} MiB "
          f"from the 30th second to the end; descriptors {first[2]} -> {last[2]}")


if __name__ == "__main__":
    sigkill_under_load()
    slow_client_flood()
    if SOAK_SECONDS > 0:
        soak()
