"""`wgkube qr NAME`: the admin's WireGuard config as a QR code (issue 15).

The PNG read back with zbarimg (zbar-tools) is the config byte for byte; the terminal drawing is
the same code module for module; a pipe gets nothing without --force; nodes are refused.
"""
from __future__ import annotations

import os
import stat
import subprocess

from conftest import need, wgkube


def terminal_matrix(text: str) -> list[list[int]]:
    """Half-block drawing back to modules: each character is two rows (upper, lower). segno draws
    the light modules as blocks (for dark terminals); the caller inverts."""
    upper = {"█": (1, 1), "▀": (1, 0), "▄": (0, 1), " ": (0, 0)}
    rows: list[list[int]] = []
    for line in text.splitlines():
        if not line or any(ch not in upper for ch in line):
            continue
        rows.append([upper[ch][0] for ch in line])
        rows.append([upper[ch][1] for ch in line])
    return rows


def test_png_reads_back_as_the_config(example_out, tmp_path):
    zbarimg = need("zbarimg", "reads the QR code back")
    png = tmp_path / "laptop.png"
    proc = wgkube("qr", "laptop", str(example_out), "--png", str(png), "--no-terminal")
    assert "PRIVATE KEY" in proc.stderr and proc.stdout == ""
    assert stat.S_IMODE(os.stat(png).st_mode) == 0o600
    decoded = subprocess.run([zbarimg, "--raw", "-q", str(png)], capture_output=True, text=True)
    assert decoded.returncode == 0, decoded.stderr
    conf = (example_out / "admins" / "laptop" / "wg-demo.conf").read_text()
    assert decoded.stdout == conf + "\n"   # zbarimg ends each symbol with a newline
    assert "PrivateKey = " in decoded.stdout


def test_terminal_drawing_is_the_same_code(example_out):
    from generator.commands.qr import qr_code
    proc = wgkube("qr", "laptop", str(example_out), "--force")
    conf = (example_out / "admins" / "laptop" / "wg-demo.conf").read_text()
    expected = [list(map(int, row)) for row in qr_code(conf).matrix]
    drawn = terminal_matrix(proc.stdout)
    n = len(expected)
    # Light modules are drawn as blocks: find the code inside its 2-module quiet zone.
    inverted = [[1 - v for v in row] for row in drawn]
    found = any(
        [r[x:x + n] for r in inverted[y:y + n]] == expected
        for y in range(0, 5) for x in range(0, 5))
    assert found, proc.stdout[:400]
    assert "PRIVATE KEY" in proc.stderr


def test_no_key_into_a_pipe_and_nodes_refused(example_out):
    proc = wgkube("qr", "laptop", str(example_out), check=False)
    assert proc.returncode == 2 and proc.stdout == "" and "--force" in proc.stderr
    proc = wgkube("qr", "hub", str(example_out), check=False)
    assert proc.returncode == 2 and "QR codes are for admins: laptop" in " ".join(proc.stderr.split())
    proc = wgkube("qr", "nobody", str(example_out), check=False)
    assert proc.returncode == 2 and "not a member" in proc.stderr
