"""`wgkube lab`: the test bed (bed.py), its network (net.py), the probe run inside namespaces
(probe.py), the checks (checks.py) and the whole run (run.py)."""
