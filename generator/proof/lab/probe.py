"""Probes and listeners the lab runs inside its namespaces. Standard library only, run as a script.

    python probe.py listen 22 6443 ...    TCP listeners (accept, close); prints "ready"
    python probe.py probe < targets.json  probes in parallel; prints one JSON result list
    python probe.py api-standin NAME HOST PORT   issue 14: stand-in API server (see api_standin)
    python probe.py dial HOST PORT               issue 14: connect again and again, one JSON line per attempt

A target is {"kind": "ping"|"tcp"|"udp", "host": ..., "port": ..., "timeout": seconds}.
Results: ping -> reply|timeout; tcp -> connected|refused|timeout|unreachable;
udp -> refused (an ICMP port-unreachable came back: the firewall let it in) | silent.
"""
from __future__ import annotations

import json
import os
import select
import socket
import struct
import sys
import threading
import time


def listen(ports: list[int]) -> None:
    socks = []
    for port in ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        s.listen(64)
        socks.append(s)
    print("ready", flush=True)
    while True:
        readable, _, _ = select.select(socks, [], [])
        for s in readable:
            try:
                conn, _ = s.accept()
                conn.close()
            except OSError:
                pass


def api_standin(name: str, host: str, port: int) -> None:
    """STAND-IN for a control plane's kube-apiserver (issue 14), NOT the API server.

    It stands for the one thing the local API endpoint (haproxy on 127.0.0.1:7445) depends on:
    a TCP listener on the control plane's VPN address and API port that accepts while the API
    server runs and is gone when it stops. Each connection is answered with this node's name and
    closed, so a client can tell which control plane haproxy picked. It copies nothing else: no
    TLS, no HTTP, no /readyz or /livez (haproxy's rendered check is a plain TCP connect, so the
    API server's health is not what is checked here either), no long-lived watches, no etcd behind it.
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(64)
    print("ready", flush=True)
    answer = f"{name}\n".encode()
    while True:
        conn, _ = s.accept()
        try:
            conn.sendall(answer)   # haproxy's health checks close at once: a reset here is fine
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            conn.close()


def dial(host: str, port: int, timeout: float = 5.0, pace: float = 0.05) -> None:
    """Issue 14: connect to host:port again and again, one attempt after the other (pace between
    them), and print one JSON line per attempt: {"start", "end" (time.monotonic(), the same clock
    as the lab's), "got": the answer's first line, or "closed" (accepted, closed without an
    answer), "refused", "timeout", "error ..."}. Runs until stopped."""
    while True:
        start = time.monotonic()
        got = ""
        try:
            with socket.create_connection((host, port), timeout=timeout) as c:
                c.settimeout(max(0.1, timeout - (time.monotonic() - start)))
                data = b""
                while b"\n" not in data:
                    chunk = c.recv(256)
                    if not chunk:
                        break
                    data += chunk
                got = data.split(b"\n")[0].decode(errors="replace").strip() or "closed"
        except ConnectionRefusedError:
            got = "refused"
        except (socket.timeout, TimeoutError):
            got = "timeout"
        except OSError as exc:
            got = f"error {exc.strerror or exc}"
        print(json.dumps({"start": start, "end": time.monotonic(), "got": got}), flush=True)
        time.sleep(pace)   # pacing between attempts, not a wait for anything


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def ping(host: str, timeout: float, ident: int) -> str:
    """ICMP echo over a raw socket, one request every 0.3 s until a reply or the deadline."""
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    try:
        deadline = time.monotonic() + timeout
        seq = 0
        while time.monotonic() < deadline:
            seq += 1
            header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
            payload = b"wgkube-lab"
            packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, seq) + payload
            try:
                s.sendto(packet, (host, 0))
            except OSError:
                pass  # no route yet, or the tunnel refuses: retry until the deadline
            until = min(deadline, time.monotonic() + 0.3)
            while True:
                left = until - time.monotonic()
                if left <= 0:
                    break
                r, _, _ = select.select([s], [], [], left)
                if not r:
                    break
                data, addr = s.recvfrom(2048)
                ihl = (data[0] & 0x0F) * 4
                icmp_type, _, _, rid, _ = struct.unpack("!BBHHH", data[ihl:ihl + 8])
                if icmp_type == 0 and rid == ident and addr[0] == host:
                    return "reply"
        return "timeout"
    finally:
        s.close()


def tcp(host: str, port: int, timeout: float) -> str:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return "connected"
    except ConnectionRefusedError:
        return "refused"
    except (socket.timeout, TimeoutError):
        return "timeout"
    except OSError as exc:
        return f"unreachable ({exc.strerror})"


def udp(host: str, port: int, timeout: float) -> str:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.connect((host, port))
        s.send(b"wgkube-lab-probe")
        s.recv(512)
        return "answered"
    except ConnectionRefusedError:
        return "refused"
    except (socket.timeout, TimeoutError):
        return "silent"
    except OSError as exc:
        return f"unreachable ({exc.strerror})"
    finally:
        s.close()


def probe(targets: list[dict]) -> list[str]:
    results = [""] * len(targets)
    base = os.getpid() & 0x7FFF

    def run(i: int, t: dict) -> None:
        kind, timeout = t["kind"], float(t.get("timeout", 2))
        if kind == "ping":
            results[i] = ping(t["host"], timeout, (base + i) & 0xFFFF)
        elif kind == "tcp":
            results[i] = tcp(t["host"], int(t["port"]), timeout)
        else:
            results[i] = udp(t["host"], int(t["port"]), timeout)

    threads = [threading.Thread(target=run, args=(i, t)) for i, t in enumerate(targets)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return results


if __name__ == "__main__":
    if sys.argv[1] == "listen":
        listen([int(p) for p in sys.argv[2:]])
    elif sys.argv[1] == "api-standin":
        api_standin(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif sys.argv[1] == "dial":
        dial(sys.argv[2], int(sys.argv[3]))
    else:
        print(json.dumps(probe(json.load(sys.stdin))), flush=True)
