"""Stage 3, secrets: the bundle beside the spec (keys, token, PKI), made once and never regenerated.

bundle.py  load / populate missing / rekey / save atomically (0600); never rotates behind the user's back
pki.py     CAs, client certificates, the discovery CA hash, WireGuard key pairs
age.py     optional age encryption of the bundle

The names below are the stage's public face; later stages import them from here.
"""
from .age import AGE_SUFFIX, Age, is_encrypted
from .bundle import (JOIN_GROUP, SLOT_RE, Bundle, bundle_path_for, is_token_join, join_expires, legacy_join_warning,
                     legacy_join_workers, load, check_registry_passwords, registry_secret_ok, REGISTRY_PREFIX, locate, loose_permissions, populate, rekey, renew_admin, save, token_id, verify)

__all__ = ["AGE_SUFFIX", "Age", "is_encrypted", "JOIN_GROUP", "SLOT_RE", "Bundle", "bundle_path_for", "load", "locate",
           "loose_permissions", "populate", "rekey", "renew_admin", "save", "verify", "is_token_join", "join_expires", "legacy_join_warning",
           "legacy_join_workers", "token_id", "check_registry_passwords", "registry_secret_ok", "REGISTRY_PREFIX"]
