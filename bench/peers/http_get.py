"""The W8 job body for the Python peers (huey, celery): one HTTP GET, status 200 required.

Each thread (each process of a prefork pool; each greenlet under gevent, whose monkey-patching
makes threading.local greenlet-local) keeps one keep-alive http.client connection to the bench's
server, as a pooled client (requests.Session, urllib3) would, and as worker's own HTTP client
and Node's default agent do. http.client is the standard library's and the lightest of them.
"""
import http.client
import threading
from urllib.parse import urlsplit

_local = threading.local()


def get(url):
    u = urlsplit(url)
    for attempt in (1, 2):
        conn = getattr(_local, "conn", None)
        if conn is None:
            conn = _local.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        try:
            conn.request("GET", u.path or "/")
            resp = conn.getresponse()
            resp.read()
            break
        except (http.client.HTTPException, OSError):
            # A kept-alive connection the server closed: reconnect once.
            conn.close()
            _local.conn = None
            if attempt == 2:
                raise
    if resp.status != 200:
        raise RuntimeError(f"GET {url}: HTTP {resp.status}")
