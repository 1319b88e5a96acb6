"""Issue 17 item 2, day two: what `wgkube plan` and `wgkube status` say about admin certificates.

An admin certificate that expires within facts.ADMIN_CERT_WARN_DAYS (or has expired) is named
with its date and the fix (`wgkube admin renew NAME SPEC`); admins still on the old, unrevocable
form (group kubeadm:cluster-admins) are named once, with the same fix. The clock is read by the
callers (plan, status), never by a render."""
from __future__ import annotations

import datetime as dt

from .. import facts
from ..artifacts import admin_rbac
from ..plan import Plan
from ..secrets import Bundle
from ..secrets import pki


def expiry_warning(name: str, not_after: dt.datetime, now: dt.datetime, spec: str = "SPEC") -> str | None:
    """One line when the certificate expires within the warning window, or has expired; else None."""
    left = not_after - now
    fix = f"renew it: wgkube admin renew {name} {spec}, then install the new admins/{name}/kubeconfig"
    if left <= dt.timedelta(0):
        return f"admin {name}'s certificate expired on {not_after:%Y-%m-%d %H:%M} UTC: its kubeconfig no longer works; {fix}"
    if left <= dt.timedelta(days=facts.ADMIN_CERT_WARN_DAYS):
        days = round(left.total_seconds() / 86400)  # to the nearest day: 9 days 23 h reads as 10
        when = "in less than a day" if days == 0 else f"in {days} day{'s' if days != 1 else ''}"
        return f"admin {name}'s certificate expires {when}, on {not_after:%Y-%m-%d %H:%M} UTC; {fix}"
    return None


def legacy_warning(names: list[str], spec: str = "SPEC") -> str | None:
    if not names:
        return None
    many = len(names) > 1
    return (f"admin{'s' if many else ''} {', '.join(names)} still hold{'' if many else 's'} a certificate of the old form "
            f"(group kubeadm:cluster-admins): removing {'them' if many else 'it'} from the spec does not revoke "
            f"{'their' if many else 'its'} API access until the certificate expires. Move each to a revocable certificate: "
            f"wgkube admin renew {names[0]} {spec} (docs/day-two.md, \"Admin access: renew and revoke\")")


def warnings(plan: Plan, bundle: Bundle, now: dt.datetime, spec: str = "SPEC") -> list[str]:
    """`wgkube plan`: expiring or expired admin certificates, then the old-form ones."""
    out = []
    for m in plan.admins:
        pair = bundle.admins.get(m.name)
        if pair is None:
            continue  # made by the next render: a year to go
        w = expiry_warning(m.name, pki.cert_facts(pair["cert"])[2], now, spec)
        if w:
            out.append(w)
    out += comeback_warnings(plan, bundle, now)
    legacy = legacy_warning(admin_rbac.legacy(plan, bundle), spec)
    return out + ([legacy] if legacy else [])


def comeback_warnings(plan: Plan, bundle: Bundle, now: dt.datetime) -> list[str]:
    """Revocation is per admin name: an admin removed with a revocable certificate and added back
    under the same name gets its binding again, and the removed certificate (a lost laptop's?)
    works again until it expires. Said once per name while such a certificate is unexpired."""
    out = []
    current = {m.name for m in plan.admins}
    for key, entry in sorted(bundle.retired.items()):
        name = key.partition("@")[0]
        pair = entry.get("admin_cert") if isinstance(entry, dict) else None
        if name not in current or entry.get("reason") != "removed from the spec" or not isinstance(pair, dict):
            continue
        try:
            _, groups, end = pki.cert_facts(pair["cert"])
        except (KeyError, TypeError, ValueError):
            continue
        if pki.LEGACY_ADMIN_GROUP in groups or end <= now:
            continue
        out.append(f"admin {name} was removed on {str(entry.get('retired', '?'))[:10]} and is back under the same name: "
                   f"its binding gives the certificate it had then access again until {end:%Y-%m-%d} (revocation is per name). "
                   f"If that certificate may be in the wrong hands, use another name for {name}")
    return out


def kubeconfig_not_after(text: str) -> dt.datetime | None:
    """The client certificate's notAfter in a kubeconfig wgkube rendered (client-certificate-data);
    None when it holds none or cannot be read."""
    import base64

    import yaml
    try:
        doc = yaml.safe_load(text)
        users = doc.get("users") or []
        data = users[0]["user"]["client-certificate-data"]
        return pki.cert_facts(base64.b64decode(data).decode())[2]
    except (yaml.YAMLError, AttributeError, LookupError, TypeError, ValueError):
        return None
