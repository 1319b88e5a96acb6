"""wgkube: one cluster spec in; self-assembling Kubernetes-over-WireGuard nodes out."""
__version__ = "0.1.0"
