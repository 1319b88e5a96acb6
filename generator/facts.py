"""Cluster-wide facts that do not drift with releases (those live in versions.py).

One place for each: the firewall template, the planner, `verify` and `lab` all read them here.
"""
from __future__ import annotations

# The Kubernetes API server's port (kubeadm's default bindPort); reached over the VPN only.
API_PORT = 6443

# Issue 14, several control planes: every node's local API endpoint, a haproxy on loopback that
# forwards to every control plane's API over the VPN (Talos KubePrism uses 7445 the same way).
# An address, not a host name: nothing can resolve it wrongly (cloud-init's manage_etc_hosts
# rewrites /etc/hosts on every boot on Debian images), and it is added to the API server's SANs.
LOCAL_API_ADDRESS = "127.0.0.1"
LOCAL_API_PORT = 7445
# haproxy's health check of each control plane (a TCP dial over the VPN, as KubePrism does):
# every second; down after 2 misses, up again after 2 answers. Connections to a server marked down
# are closed at once, so clients reconnect to one that answers.
LOCAL_API_CHECK_INTERVAL_MS = 1000
LOCAL_API_CHECK_FALL = 2
LOCAL_API_CHECK_RISE = 2

# Ports that must never answer on the public side (unless the spec exposes them), and what they
# are (for messages). kubeadm's "ports and protocols" page lists the control plane and node ports.
FLANNEL_VXLAN_PORT = 8472
VPN_ONLY_PORTS = {
    ("tcp", 22): "SSH",
    ("tcp", API_PORT): "Kubernetes API",
    ("tcp", 2379): "etcd",
    ("tcp", 2380): "etcd peers",
    ("tcp", 10250): "kubelet",
    ("tcp", 10256): "kube-proxy health",
    ("tcp", 10257): "controller-manager",
    ("tcp", 10259): "scheduler",
    ("udp", FLANNEL_VXLAN_PORT): "flannel VXLAN",
    ("tcp", 10280): "wgkube status",   # STATUS_PORT
}
# `wgkube status` (issue 15): each node serves its state as read-only JSON on this TCP port of
# its VPN address (wgkube-status.socket); the firewall admits it from VPN members on wg0 only.
STATUS_PORT = 10280
# What an admin (a laptop with a VPN key) may reach over the VPN besides the API on the hub: SSH
# (the day-two rollouts run over it) and every node's status (`wgkube status` runs on the laptop).
# Nothing else: not etcd, not a kubelet, not NodePorts.
ADMIN_PORTS = (22, STATUS_PORT)
# NodePort traffic is DNAT'ed and passes the forward chain, not input.
NODEPORT_RANGE = (30000, 32767)

# Interfaces pod traffic arrives on (flannel's bridge and VXLAN device). Pod sources are only
# trusted there: a spoofed pod address from the public side must not reach VXLAN or the host.
POD_INTERFACES = ("cni0", "flannel.1")

# The cloud metadata service pods must never reach over HTTP (it serves user-data, which holds
# keys). On GCP the same address is the VM's DNS resolver ("Each instance has a metadata server
# that also acts as a DNS resolver", cloud.google.com/compute/docs/internal-dns): port 53 stays open.
METADATA_ADDRESS = "169.254.169.254"
METADATA_DNS_PORT = 53

# WireGuard framing: 60 B over IPv4, 80 B over IPv6; we assume the worst (IPv6) so one MTU
# works whatever the underlay (wg-quick also subtracts 80). VXLAN adds 50 B on top.
WIREGUARD_OVERHEAD = 80
VXLAN_OVERHEAD = 50

# A VPN address a member gave up (removed from the spec) is not handed to a new member or a new
# spare slot for this long: a stale Kubernetes Node or a peer still configured with that address
# would otherwise point at someone else. Used only when the range has other free addresses.
RETIRED_ADDRESS_QUARANTINE_DAYS = 30

# `wgkube plan` and `wgkube status` warn when an admin's client certificate expires within this
# many days (or has expired), naming the fix: wgkube admin renew NAME SPEC (issue 17 item 2).
ADMIN_CERT_WARN_DAYS = 30
