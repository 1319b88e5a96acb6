"""Facts that drift with time live here and nowhere else. Bump them in one place.

Every URL and package name the first-boot script uses comes from this module (a test greps the
rendered scripts for any other), so a repository move is a one-line change.
"""

# Kubernetes minors wgkube knows how to install (pkgs.k8s.io has one repository per minor).
KUBERNETES_DEFAULT = "1.37"
KUBERNETES_SUPPORTED = ("1.35", "1.36", "1.37")

# kubeadm configuration API: v1beta3 is gone; v1beta4 uses {name, value} lists for extra args.
KUBEADM_API = "kubeadm.k8s.io/v1beta4"
# Key type of the leaf certificates kubeadm issues (v1beta4 ClusterConfiguration.encryptionAlgorithm;
# RSA-2048 is kubeadm's default). Same family as the pre-made ECDSA P-256 CAs (secrets/pki).
KUBEADM_ENCRYPTION_ALGORITHM = "ECDSA-P256"

# Flannel: one pinned upstream release. The manifest (cloudinit/flannel.yaml.j2) keeps that
# release's names, namespace, labels, selectors and images: Documentation/kube-flannel.yml of
# flannel-io/flannel at tag v0.28.9 (commit 5cd0d52648e891d73a6dcb9bb2c67d7c365cf7aa), so
# upstream's manifest of a later release applies over ours (DaemonSet selectors are immutable).
FLANNEL_VERSION = "v0.28.9"
FLANNEL_IMAGE = f"ghcr.io/flannel-io/flannel:{FLANNEL_VERSION}"
FLANNEL_CNI_PLUGIN_IMAGE = "ghcr.io/flannel-io/flannel-cni-plugin:v1.9.1-flannel3"

# Kubernetes packages (one folder per minor; Release.key / repodata/repomd.xml.key inside it).
# The same repository carries cri-tools (crictl), which kubeadm packages stopped depending on in
# 1.32 (kubernetes/release#3626): `wgkube-firstboot --bake` pulls images with crictl.
PKGS_K8S_DEB = "https://pkgs.k8s.io/core:/stable:/v{minor}/deb/"
PKGS_K8S_RPM = "https://pkgs.k8s.io/core:/stable:/v{minor}/rpm/"
K8S_PACKAGES = ("kubelet", "kubeadm", "kubectl", "cri-tools")
# Held against unattended upgrades (apt-mark hold; dnf exclude=), as kubeadm's install guide does.
K8S_HELD = ("kubelet", "kubeadm", "kubectl")

# Container runtime: CRI-O on every package family, one minor per Kubernetes minor. CRI-O's
# packages left pkgs.k8s.io/addons:/cri-o for the isv:cri-o project on the openSUSE build service
# (cri-o/packaging README, "We switched from https://pkgs.k8s.io/addons:/cri-o to ... isv:/cri-o").
# Signed repositories: deb Release.key, rpm repodata/repomd.xml.key, as for pkgs.k8s.io.
CRIO_DEB = "https://download.opensuse.org/repositories/isv:/cri-o:/stable:/v{minor}/deb/"
CRIO_RPM = "https://download.opensuse.org/repositories/isv:/cri-o:/stable:/v{minor}/rpm/"
CRIO_PACKAGE = "cri-o"
CRIO_SERVICE = "crio"
CRIO_SOCKET = "unix:///var/run/crio/crio.sock"
# Our drop-in: cgroup manager systemd (kubelet's default cgroupDriver since kubeadm 1.22) and the
# sandbox (pause) image the installed kubeadm lists, written by the first-boot script.
CRIO_DROPIN = "/etc/crio/crio.conf.d/20-wgkube.conf"

# Distribution packages the first boot installs besides the above. EL9 cloud images ship
# curl-minimal, which provides /usr/bin/curl and conflicts with `dnf install curl`
# (rocky-linux/sig-cloud-instance-images#41): curl is not asked for on dnf.
APT_PACKAGES = ("wireguard-tools", "nftables", "curl", "ca-certificates", "gpg", "ethtool", "conntrack")
DNF_PACKAGES = ("wireguard-tools", "nftables", "ethtool", "conntrack-tools", "container-selinux")
# apt: how long first boot waits for the dpkg lock (unattended-upgrades runs on first boot too).
APT_LOCK_TIMEOUT = 900

# Issue 18: Helm for `helm:` add-ons, a pinned release tarball whose sha256 the control plane
# checks before unpacking (docs/addons.md says why not a package repository). The checksums are
# those Helm publishes beside each tarball (https://get.helm.sh/helm-v3.18.4-linux-<arch>.tar.gz.sha256sum),
# as listed in Helm's own v3.18.4 release notes (github.com/helm/helm/releases/tag/v3.18.4, "Linux
# amd64 ... / f8180838...", "Linux arm64 ... / c0a45e67...") and mirrored in argoproj/argo-cd
# hack/installers/checksums/. Bump all three together.
HELM_VERSION = "v3.18.4"
HELM_URL = "https://get.helm.sh/helm-{version}-linux-{arch}.tar.gz"
HELM_SHA256 = {
    "amd64": "f8180838c23d7c7d797b208861fecb591d9ce1690d8704ed1e4cb8e2add966c1",
    "arm64": "c0a45e67eef0c7416a8a8c9e9d5d2d30d70e4f4d3f7bea5de28241fffa8f3b89",
}
