"""Small hand-built WARC (and ARC) files for reader and pipeline tests."""
from __future__ import annotations

import gzip
import hashlib
import io
import sys
from pathlib import Path

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

ROOT = Path(__file__).resolve().parents[2]
BEAM = str(Path(sys.executable).with_name("beam"))


def response(writer: WARCWriter, url: str, body: bytes, content_type: str = "text/html; charset=utf-8",
             status: str = "200 OK"):
    headers = [("Content-Type", content_type)] if content_type else []
    http = StatusAndHeaders(status, headers, protocol="HTTP/1.1")
    return writer.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=http,
                                     warc_headers_dict={"WARC-Date": "2026-01-01T00:00:00Z",
                                                        "WARC-Record-ID": record_id(url)})


def record_id(url: str) -> str:
    """A record id fixed by the URL alone (hash() would change with PYTHONHASHSEED, and the files' bytes with it)."""
    return f"<urn:uuid:{int(hashlib.sha256(url.encode()).hexdigest(), 16) % 10**12:012d}>"


def page(i: int, words: int = 40) -> bytes:
    body = " ".join(f"word{(i * 7 + j) % 97}" for j in range(words))
    return f"<html><head><title>p{i}</title></head><body><p>Page {i}. {body}.</p></body></html>".encode()


def raw_record(warc_type: bytes, block: bytes, headers: bytes = b"",
               target_uri: bytes | None = b"http://example.com/") -> bytes:
    """One plain WARC record written byte by byte, for header values warcio's writer would not write (damaged
    bytes, a missing WARC-Target-URI). `headers` are further header lines, each ending in CRLF."""
    head = b"WARC/1.0\r\nWARC-Type: " + warc_type + b"\r\nWARC-Record-ID: <urn:uuid:1>\r\n"
    head += b"WARC-Date: 2026-01-01T00:00:00Z\r\n"
    if target_uri is not None:
        head += b"WARC-Target-URI: " + target_uri + b"\r\n"
    return head + headers + b"Content-Length: %d\r\n\r\n" % len(block) + block + b"\r\n\r\n"


def raw_response(content_type: bytes = b"text/html", status: bytes = b"200 OK", **kwargs) -> bytes:
    """A plain WARC response record, raw_record's way, of a small HTML page."""
    http = b"HTTP/1.1 " + status + b"\r\nContent-Type: " + content_type + b"\r\n\r\n<p>a page</p>"
    return raw_record(b"response", http, b"Content-Type: application/http; msgtype=response\r\n", **kwargs)


def write_warc(path: Path, n: int = 20, gz: bool = True, start: int = 0) -> list[bytes]:
    """n HTML pages plus one request and one 404; returns the raw bytes of each record in order."""
    chunks = []
    for i in range(start, start + n):
        buf = io.BytesIO()
        w = WARCWriter(buf, gzip=gz)
        w.write_record(response(w, f"http://example.com/{i}", page(i)))
        chunks.append(buf.getvalue())
    buf = io.BytesIO()
    w = WARCWriter(buf, gzip=gz)
    w.write_record(w.create_warc_record("http://example.com/req", "request",
                                        payload=io.BytesIO(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"),
                                        warc_headers_dict={"WARC-Date": "2026-01-01T00:00:00Z"}))
    w.write_record(response(w, "http://example.com/missing", b"not found", "text/html", "404 Not Found"))
    chunks.append(buf.getvalue())
    path.write_bytes(b"".join(chunks))
    return chunks




def arc_record(url: str, date: str, block: bytes, content_type: str = "text/html", ip: str = "192.0.2.1") -> bytes:
    """One ARC v1 record written by hand, as the Internet Archive's ARC spec lays it out: the header line
    `URL IP-address Archive-date Content-type Archive-length`, Archive-length bytes (the HTTP response), a newline."""
    return f"{url} {ip} {date} {content_type} {len(block)}\n".encode() + block + b"\n"


def arc_filedesc(name: str, date: str = "20080101000000") -> bytes:
    """An ARC v1 file's first record: its version line and the field names of the records' header lines."""
    block = b"1 0 gristmill-test\nURL IP-address Archive-date Content-type Archive-length\n"
    return arc_record(f"filedesc://{name}", date, block, "text/plain", "0.0.0.0")


def http_response(body: bytes, content_type: str = "text/html; charset=utf-8", status: str = "200 OK") -> bytes:
    return (f"HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body)


def write_arc(path: Path, n: int = 6, gz: bool = True, host: str = "example.com") -> list[bytes]:
    """An ARC v1 file of n HTML pages plus one image and one 404, gzipped one member per record (`.arc.gz`, as the
    Internet Archive and Common Crawl wrote them) or plain; returns each record's bytes in order (uncompressed)."""
    records = [arc_filedesc(path.name)]
    for i in range(n):
        records.append(arc_record(f"http://{host}/{i}", f"2008010112{i // 60:02d}{i % 60:02d}",
                                  http_response(page(i))))
    records.append(arc_record(f"http://{host}/logo.png", "20080101130000",
                              http_response(b"\x89PNG\r\n\x1a\n", "image/png"), "image/png"))
    records.append(arc_record(f"http://{host}/missing", "20080101130001",
                              http_response(b"not found", "text/html", "404 Not Found")))
    if gz:
        path.write_bytes(b"".join(gzip.compress(r, mtime=0) for r in records))
    else:
        path.write_bytes(b"".join(records))
    return records
