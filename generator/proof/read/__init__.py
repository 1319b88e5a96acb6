"""Readers of rendered files, shared by verify and lab: the cluster as rendered (cluster.py), wg-quick
configs (wgconf.py), nftables rulesets (nftables.py)."""
