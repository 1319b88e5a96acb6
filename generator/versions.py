"""Facts that drift with time live here and nowhere else. Bump them in one place."""

# Kubernetes minors wgkube knows how to install (pkgs.k8s.io has one repository per minor).
KUBERNETES_DEFAULT = "1.37"
KUBERNETES_SUPPORTED = ("1.35", "1.36", "1.37")

# kubeadm configuration API: v1beta3 is gone; v1beta4 uses {name, value} lists for extra args.
KUBEADM_API = "kubeadm.k8s.io/v1beta4"

# Flannel release line v0.28.x; image tags are pinned so a re-render is reproducible.
FLANNEL_VERSION = "v0.28.0"
FLANNEL_IMAGE = f"ghcr.io/flannel-io/flannel:{FLANNEL_VERSION}"
FLANNEL_CNI_PLUGIN_IMAGE = "ghcr.io/flannel-io/flannel-cni-plugin:v1.7.1-flannel1"

# Package repositories (one folder per minor; Release.key inside it).
PKGS_K8S_DEB = "https://pkgs.k8s.io/core:/stable:/v{minor}/deb/"
PKGS_K8S_RPM = "https://pkgs.k8s.io/core:/stable:/v{minor}/rpm/"
PKGS_CRIO_RPM = "https://pkgs.k8s.io/addons:/cri-o:/stable:/v{minor}/rpm/"
