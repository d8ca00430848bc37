"""Small hand-built WARC files for reader and pipeline tests."""
from __future__ import annotations

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
                                                        "WARC-Record-ID": f"<urn:uuid:{abs(hash(url)) % 10**12:012d}>"})


def page(i: int, words: int = 40) -> bytes:
    body = " ".join(f"word{(i * 7 + j) % 97}" for j in range(words))
    return f"<html><head><title>p{i}</title></head><body><p>Page {i}. {body}.</p></body></html>".encode()


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


