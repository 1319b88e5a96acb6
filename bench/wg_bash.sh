#!/usr/bin/env bash
# The hand-rolled way, as blog write-ups do it: one hub and a client per address of a /24,
# keys from `wg genkey | wg pubkey`, one wg-quick config per member, every client as a
# [Peer] in the hub's config. Hub-and-spoke like wgkube; no firewall, no Kubernetes, no PKI.
# Quoted by the benchmark (python -m bench --only cli) as the /24 baseline; the original
# write-up's script is not in this repository, this is its shape, written for the comparison.
#   bash wg_bash.sh OUTDIR [PREFIX] [HUB_ENDPOINT]
set -euo pipefail
out=${1:?usage: wg_bash.sh OUTDIR [PREFIX] [HUB_ENDPOINT]}
prefix=${2:-10.88.0}
endpoint=${3:-203.0.113.10:51820}
umask 077
mkdir -p "$out"
hub_key=$(wg genkey)
hub_pub=$(printf '%s' "$hub_key" | wg pubkey)
{
  printf '[Interface]\nAddress = %s.1/24\nListenPort = 51820\nPrivateKey = %s\n' "$prefix" "$hub_key"
} > "$out/hub.conf"
for i in $(seq 2 254); do
  key=$(wg genkey)
  pub=$(printf '%s' "$key" | wg pubkey)
  printf '\n[Peer]\n# client-%s\nPublicKey = %s\nAllowedIPs = %s.%s/32\n' "$i" "$pub" "$prefix" "$i" >> "$out/hub.conf"
  printf '[Interface]\nAddress = %s.%s/24\nPrivateKey = %s\n\n[Peer]\nPublicKey = %s\nEndpoint = %s\nAllowedIPs = %s.0/24\nPersistentKeepalive = 25\n' \
    "$prefix" "$i" "$key" "$hub_pub" "$endpoint" "$prefix" > "$out/client-$i.conf"
done
