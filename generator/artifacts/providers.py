"""Where user-data goes, how big it may be there, and which encoding fits.

Limits are on the user-data as the provider receives it (before its own base64). Whole-file
gzip is only offered where the provider takes binary user-data; per-file gz+b64 inside
write_files is plain YAML text and works everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Provider:
    name: str
    title: str
    limit: int | None  # bytes; None = no limit
    gzip_ok: bool


PROVIDERS = {
    "aws": Provider("aws", "AWS EC2", 16 * 1024, True),
    "hetzner": Provider("hetzner", "Hetzner Cloud", 32 * 1024, False),
    "digitalocean": Provider("digitalocean", "DigitalOcean", 64 * 1024, False),
    "linode": Provider("linode", "Linode/Akamai", 64 * 1024, False),
    "azure": Provider("azure", "Azure custom data", 64 * 1024, False),
    "openstack": Provider("openstack", "OpenStack/OVH", 64 * 1024, True),
    "gcp": Provider("gcp", "GCP metadata", 256 * 1024, False),
    "none": Provider("none", "seed ISO / Packer image", None, True),
}


class DoesNotFit(Exception):
    def __init__(self, provider: Provider, sizes: dict[str, int]):
        self.provider = provider
        self.sizes = sizes
        best = min(sizes.values())
        super().__init__(f"{best} bytes even with the best encoding; {provider.title} takes {provider.limit}")


def choose(provider: Provider, sizes: dict[str, int]) -> str:
    """Plain when it fits (readable in the panel); else the smallest allowed encoding that fits."""
    allowed = [e for e in ("plain", "gz+b64", "gzip") if e in sizes and (e != "gzip" or provider.gzip_ok)]
    if provider.limit is None or sizes["plain"] <= provider.limit:
        return "plain"
    fitting = [e for e in allowed if sizes[e] <= provider.limit]
    if not fitting:
        raise DoesNotFit(provider, {e: sizes[e] for e in allowed})
    return min(fitting, key=lambda e: sizes[e])
