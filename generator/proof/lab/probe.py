"""Probes and listeners the lab runs inside its namespaces. Standard library only, run as a script.

    python probe.py listen 22 6443 ...    TCP listeners (accept, close); prints "ready"
    python probe.py probe < targets.json  probes in parallel; prints one JSON result list

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
    else:
        print(json.dumps(probe(json.load(sys.stdin))), flush=True)
