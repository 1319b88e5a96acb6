"""wgkube benchmarks: render speed and memory, bytes per node, a peer tool side by side, verify/lab.

Run ``python -m bench`` (full, several minutes) or ``python -m bench --smoke`` (N=10, seconds).
Results go to bench/results.json (git-ignored); the figures worth keeping go to docs/benchmarks.md.
"""
