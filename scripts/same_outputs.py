"""Are the rendered trees byte-identical to a recorded run? (issue 19: speed work must not change a byte)

  python scripts/same_outputs.py record DIR   make fixed bundles, render, store every file's sha256 in DIR
  python scripts/same_outputs.py check DIR    render again with the same bundles, compare file by file

Cases: the embedded example (all artifacts), the example with --provider aws (whole-file gzip),
and a generated 1,000-member hub-and-spoke spec (all artifacts). The bundles are made once by
`record` (keys and certificates are random) and copied in for every render, so the same spec and
bundle must give the same bytes.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CASES = {"example": ("example", []), "example-aws": ("example", ["--provider", "aws"]), "n1000": ("n1000", [])}


def specs(base: Path) -> dict[str, Path]:
    from bench.specs import hub_and_spoke, write_spec
    base.mkdir(parents=True, exist_ok=True)
    example = base / "example.yaml"
    shutil.copy(REPO / "generator" / "example-cluster.yaml", example)
    return {"example": example, "n1000": write_spec(base, hub_and_spoke(1000, name="big"), "n1000.yaml")}


def render(spec: Path, bundle: Path, work: Path, extra: list[str]) -> dict[str, str]:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    shutil.copy(spec, work / "cluster.yaml")
    if bundle.exists():
        shutil.copy(bundle, work / "cluster.secrets.yaml")
    subprocess.run([sys.executable, "-m", "generator", "render", str(work / "cluster.yaml"), "-o", str(work / "out"), "-q", *extra],
                   check=True, cwd=work, env={**os.environ, "PYTHONPATH": str(REPO)})
    if not bundle.exists():
        shutil.copy(work / "cluster.secrets.yaml", bundle)
    out = next(p for p in (work / "out").iterdir() if not p.name.startswith("."))  # out/<cluster>
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() + f" {oct(p.stat().st_mode & 0o777)}"
            for p in sorted(out.rglob("*")) if p.is_file()}


def main() -> int:
    mode, base = sys.argv[1], Path(sys.argv[2]).resolve()
    paths = specs(base / "specs")
    results = {}
    for case, (spec, extra) in CASES.items():
        results[case] = render(paths[spec], base / f"{spec}.secrets.yaml", base / "work" / case, extra)
    record = base / "hashes.json"
    if mode == "record":
        record.write_text(json.dumps(results, indent=1, sort_keys=True))
        print(f"recorded {sum(map(len, results.values()))} files in {record}")
        return 0
    want = json.loads(record.read_text())
    bad = 0
    for case in CASES:
        a, b = want[case], results[case]
        for rel in sorted(set(a) | set(b)):
            if a.get(rel) != b.get(rel):
                bad += 1
                if bad <= 20:
                    print(f"{case}: {rel}: {a.get(rel)} != {b.get(rel)}")
        print(f"{case}: {len(b)} files, {'identical' if all(a.get(r) == b.get(r) for r in set(a) | set(b)) else 'DIFFERENT'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
