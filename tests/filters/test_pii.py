"""PII masking against datatrove's PIIFormatter (FineWeb's), and deterministic replacements."""
from __future__ import annotations

import random

import pytest

from gristmill.errors import UserError
from gristmill.filters.pii import EMAIL_REPLACEMENTS, IP_REPLACEMENTS, PIIFormatter, ip_kind


def _texts() -> list[str]:
    """Sentences around addresses, valid and not: dotted and quoted local parts, subdomains, bracketed literals,
    public, private, reserved and malformed IPs, addresses glued to punctuation and to longer numbers."""
    rng = random.Random(0)
    words = ["contact", "write to", "mail", "see", "server", "host", "(", ")", ",", ";", "<", ">", "\n"]
    atoms = ["john", "j.doe", "a_b", "x+tag", "o'neil", "first.last", "UPPER", "1234", "a", "q!#$%&*"]
    hosts = ["example.com", "mail.uni-bonn.de", "sub.domain.co.uk", "x.io", "a-b.c-d.org", "localhost",
             "[192.168.1.1]", "[8.8.8.8]", "[IPv6:abcd]", "bad-.com", "-bad.com", "dot..com"]
    ips = ["8.8.8.8", "1.1.1.1", "127.0.0.1", "10.0.0.7", "192.168.0.1", "172.16.5.4", "0.0.0.0",
           "255.255.255.255", "256.1.1.1", "01.02.03.04", "100.64.0.1", "203.0.113.5", "93.184.216.34",
           "1.2.3.4.5", "999.999.999.999", "12.34.56"]
    out = []
    for _ in range(400):
        parts = []
        for _ in range(rng.randint(1, 6)):
            r = rng.random()
            if r < 0.35:
                parts.append(f"{rng.choice(atoms)}@{rng.choice(hosts)}")
            elif r < 0.7:
                parts.append(rng.choice(ips))
            else:
                parts.append(rng.choice(words))
        out.append(rng.choice(["", " ", "x"]).join(parts))
    return out


def test_matches_datatrove(as_docs):
    from datatrove.pipeline.formatters.pii import PIIFormatter as DatatrovePII

    texts = _texts()
    # One replacement each, so datatrove's cycling through its list cannot differ from our hashed choice.
    for public_only in (True, False):
        theirs = DatatrovePII(only_remove_public_ips=public_only, email_replacement="<EMAIL>", ip_replacement="<IP>")
        ours = PIIFormatter(public_ips_only=public_only, email_replacements="<EMAIL>", ip_replacements="<IP>")
        got = [ours.mask(t)[0] for t in texts]
        assert got == [theirs.format(t) for t in texts]
    assert sum("<EMAIL>" in t for t in got) > 100 and sum("<IP>" in t for t in got) > 100
    public = PIIFormatter(email_replacements="<EMAIL>", ip_replacements="<IP>")
    assert public.mask("dns 8.8.8.8, home 127.0.0.1, lan 192.168.0.1, bad 01.2.3.4")[0] == \
        "dns <IP>, home 127.0.0.1, lan 192.168.0.1, bad 01.2.3.4"
    assert ours.mask("dns 8.8.8.8, home 127.0.0.1, bad 01.2.3.4")[0] == "dns <IP>, home <IP>, bad 01.2.3.4"


def test_replacements_are_deterministic_and_reserved():
    flt = PIIFormatter()
    text = "mail a@b.com or c@d.org, hosts 8.8.8.8 and 1.1.1.1, again a@b.com and 8.8.8.8"
    masked, n_email, n_ip = flt.mask(text)
    assert (n_email, n_ip) == (3, 3)
    assert masked == flt.mask(text)[0] == PIIFormatter().mask(text)[0]  # no state carried between calls
    first, second = masked.split(", again ")
    assert first.split(" or ")[0].removeprefix("mail ") == second.split(" and ")[0]  # same address, same stand-in
    for r in IP_REPLACEMENTS:
        assert ip_kind(r) == "private"  # documentation networks: never masked again, never routed
    assert all(r.endswith(("@example.com", "@example.org")) for r in EMAIL_REPLACEMENTS)
    with pytest.raises(UserError, match="at least one replacement"):
        PIIFormatter(ip_replacements=())


def test_verdicts(as_docs):
    a, b = as_docs(["write to ceo@corp.com or cfo@corp.com from 8.8.4.4", "nothing here, only 10.0.0.1"])
    va, vb = PIIFormatter().check_batch([a, b])
    assert va.keep and va.scores == {"pii.emails": 2.0, "pii.ips": 1.0} and "ceo@corp.com" not in va.text
    assert va.counts == {"masked_emails": 2, "masked_ips": 1, "masked_documents": 1}
    assert vb.keep and vb.text is None and vb.scores == {} and vb.counts == {}


def test_stage_rewrites_and_counts(tmp_path, as_docs):
    from gristmill.pipeline.docio import CreateDocuments, WriteDocuments, read_documents
    from gristmill.pipeline.runner import run_stages
    from gristmill.pipeline.stages import FilterStage, RunContext

    docs = as_docs(["mail ceo@corp.com now", "plain text", "two 8.8.8.8 and 1.1.1.1"])
    flt = PIIFormatter(email_replacements="<EMAIL>", ip_replacements="<IP>")
    stats = run_stages([CreateDocuments("Create", docs), FilterStage("PII", flt), WriteDocuments("Write", shards=1)],
                       RunContext(output=str(tmp_path)), ["--direct_running_mode=in_memory", "--direct_num_workers=1"])
    node = stats["stages"]["PII"]
    assert (node["in"], node["kept"]) == (3, 3) and stats["balanced"]
    assert (node["masked_documents"], node["masked_emails"], node["masked_ips"]) == (2, 1, 2)
    assert sorted(d.text for d in read_documents(str(tmp_path / "documents"))) == \
        ["mail <EMAIL> now", "plain text", "two <IP> and <IP>"]
