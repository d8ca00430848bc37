"""PII masking (FineWeb's last step before writing): email addresses and public IP addresses are replaced.

The patterns are the ones FineWeb uses through datatrove's PIIFormatter: the RFC 5322 email pattern of
emailregex.com, and dotted-quad IPv4 addresses, replaced only when `ipaddress` calls them global (public), so
0.0.0.0, 127.0.0.1, 10.x and 192.168.x stay. Unlike datatrove, which cycles through its replacements in the
order documents happen to arrive, the replacement for a match is chosen by a hash of the matched text: the same
input gives the same output on any runner and worker count. The default replacements are reserved names and
addresses: example.com/example.org (RFC 2606) and the documentation networks of RFC 5737, never routed.

It never drops a document. In drop mode (the only mode that rewrites text) the masked text replaces the old;
annotate mode leaves the text. A document with something masked gets the scores `pii.emails` and `pii.ips`,
and the stage counts `masked_documents`, `masked_emails` and `masked_ips`.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

import xxhash

from gristmill.errors import UserError
from gristmill.filters.base import Filter, Verdict
from gristmill.pipeline.document import Document

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)"
_IPV4 = rf"(?:{_OCTET}\.){{3}}{_OCTET}"
# local part: dot-separated atoms; domain: dot-separated labels, or a bracketed address literal
_EMAIL = (rf"\b{_ATOM}(?:\.{_ATOM})*@(?:(?:{_LABEL}\.)+{_LABEL}"
          rf"|\[(?:{_OCTET}\.){{3}}(?:{_OCTET}|[A-Za-z0-9-]*[A-Za-z0-9]:)\])")
EMAIL_RE = re.compile(_EMAIL)
IPV4_RE = re.compile(_IPV4)

EMAIL_REPLACEMENTS = ("email@example.com", "firstname.lastname@example.org")
IP_REPLACEMENTS = ("192.0.2.1", "198.51.100.23", "203.0.113.45", "192.0.2.200", "198.51.100.177", "203.0.113.9")


def ip_kind(text: str) -> str | None:
    """"public" or "private" for an address `ipaddress` accepts (no leading zeros), else None."""
    try:
        return "public" if ipaddress.ip_address(text).is_global else "private"
    except ValueError:
        return None


@dataclass
class PIIFormatter(Filter):
    """Replaces email addresses and (public) IPv4 addresses in the text; keeps every document."""

    emails: bool = True
    ips: bool = True
    public_ips_only: bool = True
    email_replacements: tuple[str, ...] = EMAIL_REPLACEMENTS
    ip_replacements: tuple[str, ...] = IP_REPLACEMENTS
    name: str = "pii"

    def __post_init__(self):
        for attr in ("email_replacements", "ip_replacements"):
            value = getattr(self, attr)
            value = (value,) if isinstance(value, str) else tuple(value)
            if not value:
                raise UserError(f"pii: {attr} must name at least one replacement")
            setattr(self, attr, value)

    @staticmethod
    def _pick(options: tuple[str, ...], matched: str) -> str:
        return options[xxhash.xxh64_intdigest(matched.encode("utf-8", "surrogatepass")) % len(options)]

    def mask(self, text: str) -> tuple[str, int, int]:
        """(masked text, emails replaced, IPs replaced)."""
        n_email = n_ip = 0
        if self.emails:
            def email(m):
                nonlocal n_email
                n_email += 1
                return self._pick(self.email_replacements, m.group(0))
            text = EMAIL_RE.sub(email, text)
        if self.ips:
            def ip(m):
                nonlocal n_ip
                found = m.group(0)
                kind = ip_kind(found)
                if kind is None or (self.public_ips_only and kind != "public"):
                    return found
                n_ip += 1
                return self._pick(self.ip_replacements, found)
            text = IPV4_RE.sub(ip, text)
        return text, n_email, n_ip

    def check(self, doc: Document) -> Verdict:
        text, n_email, n_ip = self.mask(doc.text)
        if not (n_email or n_ip):
            return Verdict(True)
        scores = {f"{self.name}.emails": float(n_email), f"{self.name}.ips": float(n_ip)}
        counts = {k: n for k, n in (("masked_emails", n_email), ("masked_ips", n_ip), ("masked_documents", 1)) if n}
        return Verdict(True, None, scores, text=text, counts=counts)
