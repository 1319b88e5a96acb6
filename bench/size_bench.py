"""Section 2: bytes per node (hub and worker user-data, every encoding) and the hub's cost per peer.

The floor: what a peer adds that no encoding can remove is its WireGuard public key (32
random bytes, incompressible) and its VPN address (4 bytes): 36 bytes.
"""
from __future__ import annotations

from .specs import hub_and_spoke, worker_name

FLOOR_BYTES = 32 + 4
AWS_LIMIT = 16 * 1024


def _sizes(plan, bundle, member) -> dict:
    from generator.artifacts import cloudinit, providers
    from generator.pipeline import node_user_data

    _data, report = node_user_data(plan, bundle, member, "none")
    sizes = dict(report.sizes)
    missing = [e for e in cloudinit.ENCODINGS if e not in sizes]
    if missing:
        # The pipeline only makes the encodings it needs; make the others from the same files.
        files = cloudinit.node_files(plan, bundle, member)
        if len(cloudinit.user_data(plan, member, files, "plain")) != sizes["plain"]:
            raise RuntimeError(f"{member.name}: node_user_data delivers files that node_files does not list; "
                               "bench/size_bench.py must learn about them")
        sizes.update({e: len(cloudinit.user_data(plan, member, files, e)) for e in missing})
    best = min(sizes, key=lambda e: sizes[e])
    try:
        aws = providers.choose(providers.PROVIDERS["aws"], sizes)
    except providers.DoesNotFit:
        aws = None
    return {"bytes": sizes, "best_encoding": best, "best_bytes": sizes[best], "aws_encoding": aws}


def _plan(n: int, capacity: int):
    from generator.plan import build_plan
    from generator.spec import parse_spec
    import yaml

    return build_plan(parse_spec(yaml.safe_dump(hub_and_spoke(n, capacity=capacity)), f"bench-{n}.yaml").spec)


def run(sizes: list[int], k: int, log) -> dict:
    from generator.secrets import populate

    capacity = max(sizes) + k
    # One bundle for every size: member i has the same key and address in each spec, so the
    # difference between N and N + k members is the k peers and nothing else.
    big = _plan(capacity, capacity)
    bundle, _ = populate(None, big)
    rows, marginal = [], []
    for n in sizes:
        log(f"sizes: {n} and {n + k} members")
        plan, plan_k = _plan(n, capacity), _plan(n + k, capacity)
        hub = _sizes(plan, bundle, plan.hub_member)
        hub_k = _sizes(plan_k, bundle, plan_k.hub_member)
        # Workers do not grow with the cluster (one peer: the hub); measure one of each OS and a
        # public one, keep the largest.
        candidates = [worker_name(i) for i in (1, 2, 3, 10) if i < n]
        workers = {name: _sizes(plan, bundle, plan.member(name)) for name in candidates}
        largest = max(workers, key=lambda w: workers[w]["bytes"]["plain"])
        rows.append({"members": n, "hub": hub, "worker": workers[largest] | {"name": largest,
                                                                             "os": plan.member(largest).os}})
        per_peer = {enc: (hub_k["bytes"][enc] - hub["bytes"][enc]) / k for enc in hub["bytes"]}
        best = min(per_peer.values())
        marginal.append({"members": n, "k": k, "per_peer_bytes": per_peer, "best_per_peer_bytes": best,
                         "floor_bytes": FLOOR_BYTES, "ratio_to_floor": best / FLOOR_BYTES})
    return {"rows": rows, "marginal": marginal, "floor_bytes": FLOOR_BYTES, "aws_limit_bytes": AWS_LIMIT,
            "hub_capacity": hub_capacity(rows[-1], marginal[-1]), "control_planes": control_planes_cost(log),
            "note": "best = the smallest of plain, gz+b64 (per-file gzip inside write_files) and gzip (whole file)"}


def hub_capacity(row: dict, marginal: dict) -> list[dict]:
    """How many members a cluster can have before the hub's user-data outgrows each provider's
    limit (best encoding that provider accepts), extrapolated linearly from the largest size
    measured and its cost per extra peer."""
    from generator.artifacts import providers

    n, hub = row["members"], row["hub"]["bytes"]
    out = []
    for prov in providers.PROVIDERS.values():
        if prov.limit is None:
            continue
        allowed = [e for e in ("plain", "gz+b64", "gzip") if e != "gzip" or prov.gzip_ok]
        best = max(allowed, key=lambda e: n + (prov.limit - hub[e]) / marginal["per_peer_bytes"][e])
        members = int(n + (prov.limit - hub[best]) // marginal["per_peer_bytes"][best])
        out.append({"provider": prov.title, "limit_bytes": prov.limit, "encoding": best, "max_members": members})
    return out


def control_planes_cost(log) -> list[dict]:
    """Issue 14: what several control planes add to each node's user-data. tests/specs/ha3.yaml
    (three control planes) against the same spec with cp-ams and cp-home as workers, one bundle
    for both (same keys, same join tokens): the difference is the CAs, the join config and the
    local API endpoint, nothing else."""
    from pathlib import Path

    import yaml

    from generator.plan import build_plan
    from generator.secrets import populate
    from generator.spec import parse_spec

    log("sizes: three control planes against one")
    text = (Path(__file__).resolve().parent.parent / "tests" / "specs" / "ha3.yaml").read_text()
    doc = yaml.safe_load(text)
    three = build_plan(parse_spec(text, "ha3.yaml").spec)
    for node in doc["nodes"]:
        if node["name"] in ("cp-ams", "cp-home"):
            node["role"] = "worker"
    one = build_plan(parse_spec(yaml.safe_dump(doc, sort_keys=False), "ha1.yaml").spec)
    bundle, _ = populate(None, three)
    bundle, _ = populate(bundle, one)
    rows = []
    for m in three.nodes:
        a, b = _sizes(one, bundle, one.member(m.name)), _sizes(three, bundle, m)
        rows.append({"node": m.name, "role_with_three": m.role, "one": a["bytes"], "three": b["bytes"],
                     "aws_encoding": b["aws_encoding"]})
    return rows
