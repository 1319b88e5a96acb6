"""Stage 8, proof: everything that checks what was rendered. Never imported by the stages before it.

read/    the rendered cluster as a model: WireGuard configs, nftables rulesets, user-data
verify/  static simulation of every member pair (routing, firewall, reachability)
lab/     the rendered files for real in network namespaces: test bed, probes, checks, run
"""
