#!/usr/bin/env bash
# Build (or reuse) the Debian 12 base image for the wgkube VM boot test.
#
# Output, cached outside the repository:
#   ${WGKUBE_VM_CACHE:-/var/cache/wgkube-vm}/<sha256 of the recipe>/
#       rootfs.img   raw ext4 file system, no partition table (root=/dev/vda)
#       vmlinuz      kernel for direct boot (-kernel)
#       initrd.img   initramfs with virtio_blk + ext4 (-initrd)
#       packages.txt dpkg -l of the image
#       DONE         written last; a directory without it is rebuilt
# The recipe is this script plus every file under standins/ and guest/.
# Nothing is rebuilt while that directory is complete.
#
# The last line on stdout is the image directory; progress goes to stderr.
# Needs root, debootstrap and mke2fs (e2fsprogs >= 1.43 for -d).
#
# kubeadm, kubelet, kubectl, crictl and crio (CRI-O) in the image are stand-ins
# (standins/): Kubernetes packages cannot be downloaded on the build host.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache_root=${WGKUBE_VM_CACHE:-/var/cache/wgkube-vm}
suite=bookworm
image_size=3G

# Debian's genericcloud images of bookworm use netplan.io + systemd-networkd
# (+ systemd-resolved) rather than ifupdown; cloud-init then renders the
# NoCloud network-config v2 through netplan, which honours match globs.
packages=(
    linux-image-amd64 initramfs-tools kmod udev
    systemd systemd-sysv systemd-resolved dbus
    cloud-init python3 python3-cffi-backend python3-yaml
    netplan.io iproute2 iputils-ping ethtool
    wireguard-tools nftables
    curl ca-certificates openssl procps locales
    openssh-server sudo qemu-guest-agent
    haproxy
)

log() { printf 'build_image: [%3ds] %s\n' "$SECONDS" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

recipe_hash() {
    (
        cd "$here"
        sha256sum build_image.sh
        find standins guest -type f ! -path '*/__pycache__/*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
    ) | sha256sum | cut -d' ' -f1
}

# First "deb" source for the plain suite from the machine's apt configuration
# (deb822 *.sources and one-line *.list); empty means debootstrap's default.
find_mirror() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] || continue
        awk -v suite="$suite" '
            function flush() {
                if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") &&
                    enabled != "no" && uri ~ /^(https?|file):/ && !found) {
                    print uri; found = 1
                }
                types = ""; suites = ""; uri = ""; enabled = ""
            }
            /^[[:space:]]*#/ { next }
            /^[[:space:]]*$/ { flush(); next }
            {
                key = tolower($1); sub(/:$/, "", key)
                $1 = ""; sub(/^[[:space:]]+/, "")
                if (key == "types") types = $0
                else if (key == "suites") suites = $0
                else if (key == "uris") { split($0, u, /[[:space:]]+/); uri = u[1] }
                else if (key == "enabled") enabled = tolower($0)
            }
            END { flush() }
        ' "$f" | head -n1
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f $f ]] || continue
        sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" |
            awk -v suite="$suite" '$1 == "deb" && $3 == suite && $2 ~ /^(https?|file):/ { print $2 }'
    done
}

# debootstrap downloads with wget: hand it apt's proxy, if apt has one.
apt_proxy() {
    local http_proxy=''
    eval "$(apt-config shell http_proxy Acquire::http::Proxy 2>/dev/null || true)"
    printf '%s' "$http_proxy"
}

hash=$(recipe_hash)
out="$cache_root/$hash"
if [[ -f $out/DONE ]]; then
    log "cached image $out"
    printf '%s\n' "$out"
    exit 0
fi

[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap)"
command -v debootstrap >/dev/null || die "debootstrap is not installed"
command -v mke2fs >/dev/null || die "mke2fs (e2fsprogs) is not installed"

mkdir -p "$cache_root/debs"
exec 9>"$cache_root/.lock"
flock 9
if [[ -f $out/DONE ]]; then # built by a concurrent run while we waited
    printf '%s\n' "$out"
    exit 0
fi

work=$(mktemp -d "$cache_root/build.XXXXXX")
rootfs="$work/rootfs"
cleanup() {
    local m
    # debootstrap unmounts its own mounts; catch whatever a failure left.
    for m in dev/pts dev sys proc; do
        if mountpoint -q "$rootfs/$m" 2>/dev/null; then umount -l "$rootfs/$m" || true; fi
    done
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT

start=$(date +%s)
mirror=$(find_mirror | head -n1 || true)
proxy=$(apt_proxy)
log "recipe $hash"
log "mirror ${mirror:-<debootstrap default>}${proxy:+ via proxy $proxy}"
[[ -n $proxy ]] && export http_proxy=$proxy

include=$(IFS=,; printf '%s' "${packages[*]}")
args=(--variant=minbase --arch=amd64 --components=main "--include=$include"
      "--cache-dir=$cache_root/debs" "$suite" "$rootfs")
[[ -n $mirror ]] && args+=("$mirror")
LANG=C.UTF-8 LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
    debootstrap "${args[@]}" >"$work/debootstrap.log" 2>&1 ||
    { tail -n 40 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
log "debootstrap done after $(($(date +%s) - start)) s"

# --- configure the root file system -------------------------------------
install -d "$rootfs/etc/cloud/cloud.cfg.d"
cat >"$rootfs/etc/cloud/cloud.cfg.d/90-datasource.cfg" <<'EOF'
datasource_list: [ NoCloud, None ]
EOF

printf '/dev/vda / ext4 defaults,errors=remount-ro 0 1\n' >"$rootfs/etc/fstab"
printf 'wgkube-base\n' >"$rootfs/etc/hostname"
printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n' >"$rootfs/etc/hosts"
# Each VM must get its own machine-id (systemd creates it on first boot).
: >"$rootfs/etc/machine-id"
rm -f "$rootfs/var/lib/dbus/machine-id"
# Test image only: root may log in on the serial console without a password.
chroot "$rootfs" passwd -d root >/dev/null

# Stand-ins for the Kubernetes packages (see standins/*: each says NOT the real one).
for b in kubeadm kubelet kubectl crictl crio; do
    install -m 0755 "$here/standins/$b" "$rootfs/usr/bin/$b"
done
install -d "$rootfs/usr/lib/wgkube-test"
install -m 0755 "$here/standins/standin-apiserver.py" "$rootfs/usr/lib/wgkube-test/standin-apiserver.py"
install -m 0644 "$here/standins/standin_record.py" "$rootfs/usr/lib/wgkube-test/standin_record.py"
# Issue 17: the package repositories the upgrade scripts use, as stand-ins on their PATH only.
install -d "$rootfs/usr/lib/wgkube-test/repo-bin"
for b in apt-get apt-mark curl gpg; do
    install -m 0755 "$here/standins/$b" "$rootfs/usr/lib/wgkube-test/repo-bin/$b"
done
install -m 0644 "$here/standins/kubelet.service" "$rootfs/lib/systemd/system/kubelet.service"
install -m 0644 "$here/standins/crio.service" "$rootfs/lib/systemd/system/crio.service"
# Test image only: the reporter writes /run/wgkube-test/firstboot.env on the first boot from
# wgkube.firstboot_env= on the kernel command line (e.g. a shortened WGKUBE_API_TIMEOUT).
install -d "$rootfs/etc/systemd/system/wgkube-firstboot.service.d"
printf '# wgkube VM-test image only: NOT rendered by wgkube.\n[Service]\nEnvironmentFile=-/run/wgkube-test/firstboot.env\n' \
    >"$rootfs/etc/systemd/system/wgkube-firstboot.service.d/50-wgkube-test.conf"

# The test reporter: writes a status block to the second serial port.
install -m 0755 "$here/guest/wgkube-test-reporter" "$rootfs/usr/lib/wgkube-test/reporter"
install -m 0644 "$here/guest/wgkube-test-reporter.service" \
    "$rootfs/lib/systemd/system/wgkube-test-reporter.service"

wants="$rootfs/etc/systemd/system/multi-user.target.wants"
install -d "$wants"
# Like the real package: kubelet is enabled on install (crio: by the first boot).
for unit in kubelet.service wgkube-test-reporter.service \
            systemd-networkd.service systemd-resolved.service; do
    ln -sf "/lib/systemd/system/$unit" "$wants/$unit"
done
# Timers that only cost CPU time in a short-lived TCG guest.
rm -f "$rootfs"/etc/systemd/system/timers.target.wants/{apt-daily,apt-daily-upgrade,dpkg-db-backup,e2scrub_all,fstrim,man-db}.timer

# cloud-init's default locale (en_US.UTF-8) ready, as in Debian's cloud images:
# cc_locale then has nothing to generate.
sed -i 's/^# *\(en_US.UTF-8 UTF-8\)/\1/' "$rootfs/etc/locale.gen"
chroot "$rootfs" locale-gen >/dev/null
printf 'LANG=en_US.UTF-8\n' >"$rootfs/etc/default/locale"

# Small initrd (TCG boots pay for every module udev loads): direct kernel
# boot on virtio needs just these to mount the root file system.
printf 'MODULES=list\n' >"$rootfs/etc/initramfs-tools/conf.d/wgkube-test.conf"
printf '%s\n' virtio_pci virtio_blk virtio_net ext4 crc32c_generic >>"$rootfs/etc/initramfs-tools/modules"
mount -t proc proc "$rootfs/proc"
mount -t sysfs sysfs "$rootfs/sys"
chroot "$rootfs" update-initramfs -u -k all >"$work/initramfs.log" 2>&1 ||
    { cat "$work/initramfs.log" >&2; die "update-initramfs failed"; }
umount "$rootfs/sys" "$rootfs/proc"

# Hardware this TCG guest has no use for: every module udev loads costs seconds.
cat >"$rootfs/etc/modprobe.d/wgkube-test.conf" <<'EOF'
# wgkube VM-test image: skip modules for emulated hardware nothing here uses.
blacklist floppy
blacklist pcspkr
blacklist kvm
blacklist kvm_amd
blacklist kvm_intel
blacklist cfg80211
blacklist joydev
blacklist serio_raw
blacklist i2c_piix4
blacklist powernow_k8
blacklist acpi_cpufreq
blacklist sg
EOF

# Direct kernel boot: no boot loader. Check the initrd can mount the root.
kernel=$(find "$rootfs/boot" -maxdepth 1 -name 'vmlinuz-*' | sort | tail -n1)
initrd=$(find "$rootfs/boot" -maxdepth 1 -name 'initrd.img-*' | sort | tail -n1)
[[ -n $kernel && -n $initrd ]] || die "no kernel/initrd in $rootfs/boot"
chroot "$rootfs" lsinitramfs "/boot/${initrd##*/}" >"$work/initrd.list"
for mod in virtio_blk virtio_pci ext4; do
    grep -q "/$mod\.ko" "$work/initrd.list" || die "initrd $initrd lacks $mod"
done

chroot "$rootfs" dpkg -l >"$work/packages.txt"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/var/log/*.log "$rootfs"/tmp/*

# --- assemble ----------------------------------------------------------------
img="$work/rootfs.img"
truncate -s "$image_size" "$img"
mke2fs -q -t ext4 -L wgkube-root -d "$rootfs" "$img" ||
    die "mke2fs -d failed"
cp "$kernel" "$work/vmlinuz"
cp "$initrd" "$work/initrd.img"

rm -rf "$out"
mkdir -p "$out"
mv "$img" "$work/vmlinuz" "$work/initrd.img" "$work/packages.txt" "$work/debootstrap.log" "$out/"
cp "$here/build_image.sh" "$out/recipe-build_image.sh"
date -u +%FT%TZ >"$out/DONE"
# Keep the cache small: drop images of older recipes (all but the two newest).
find "$cache_root" -mindepth 2 -maxdepth 2 -name DONE -printf '%T@ %h\n' | sort -rn | tail -n +3 |
    while read -r _ dir; do
        [[ $dir == "$out" ]] || rm -rf --one-file-system "$dir"
    done
log "image ready in $(($(date +%s) - start)) s: $out"
printf '%s\n' "$out"
