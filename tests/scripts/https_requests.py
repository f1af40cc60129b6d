#!/usr/bin/env python3
"""Sends exact HTTP/1.1 requests over TLS and prints what came back, one JSON line per request.

    https_requests.py PLAN

PLAN is a JSON file:

    {"host": "198.18.0.2", "port": 443, "sni": "server.test", "cafile": "ca.crt",
     "bind": "198.18.0.1", "first_port": 20000, "parallel": 4,
     "connections": [{"one_shot": false, "split": 0, "requests": [{"id": "...", "bytes": "..."}, ...]}, ...]}

A request's bytes are a string with one character per byte (U+0000-U+00FF), sent as they are,
with no normalisation. The requests of a connection go one after the other on one keep-alive TLS
connection (the next is sent once the previous response is complete); when the peer closes it,
the rest go on a new one. After each response of a `one_shot` connection the client waits up to
2 s for the peer to close it (a blocked flow is closed). With `split` N, a request goes in TLS
records of N bytes (each its own write, Nagle off), so that it reaches the peer in pieces. Every TCP connection has a source port of its own, counted up from
`first_port`, so that the caller can find its flow in the appliance's log. Connections run
`parallel` at a time.

Each line: {"id", "port", "status" (null when no response came), "headers" (lower-case names),
"body" (the first 200 bytes), "closed" (the peer closed the connection after this request),
"after" (one_shot only: the first 200 bytes the peer sent after the response, before closing),
"error" (null, or what went wrong: the connection reset, a timeout, a TLS error)}.
"""
import json
import socket
import ssl
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

TIMEOUT = 10


class Closed(Exception):
    """The peer ended the connection (EOF, reset, or a TLS close)."""


class Conn:
    def __init__(self, plan, ctx, port):
        raw = socket.socket()
        raw.settimeout(TIMEOUT)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        raw.bind((plan["bind"], port))
        raw.connect((plan["host"], plan["port"]))
        self.s = ctx.wrap_socket(raw, server_hostname=plan["sni"])
        self.port = port
        self.buf = b""

    def more(self):
        try:
            chunk = self.s.recv(65536)
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError) as e:
            raise Closed(type(e).__name__) from e
        if not chunk:
            raise Closed("eof")
        self.buf += chunk

    def take(self, n):
        while len(self.buf) < n:
            self.more()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def line(self):
        while b"\r\n" not in self.buf:
            self.more()
        out, self.buf = self.buf.split(b"\r\n", 1)
        return out

    def response(self):
        """(status, headers, body) of the next final response (1xx responses are skipped)."""
        while True:
            status_line = self.line().decode("latin-1")
            headers = {}
            while True:
                h = self.line().decode("latin-1")
                if not h:
                    break
                name, _, value = h.partition(":")
                headers[name.strip().lower()] = value.strip()
            status = int(status_line.split()[1])
            if 100 <= status < 200:
                continue
            if "chunked" in headers.get("transfer-encoding", "").lower():
                body = b""
                while True:
                    size = int(self.line().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.line():
                            pass
                        break
                    body += self.take(size)
                    self.take(2)
            elif "content-length" in headers:
                body = self.take(int(headers["content-length"]))
            else:
                body = b""
                try:
                    while True:
                        self.more()
                except Closed:
                    body, self.buf = self.buf, b""
            return status, headers, body

    def closed(self):
        """(Whether the peer closes the connection within 2 s, what it sent before closing)."""
        self.s.settimeout(2)
        try:
            while True:
                self.more()
        except Closed:
            return True, self.buf
        except (socket.timeout, TimeoutError):
            return False, self.buf
        finally:
            self.s.settimeout(TIMEOUT)

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def main():
    plan = json.load(open(sys.argv[1]))
    ctx = ssl.create_default_context(cafile=plan["cafile"])
    ctx.set_alpn_protocols(["http/1.1"])
    lock = threading.Lock()
    next_port = [plan["first_port"]]

    def port():
        with lock:
            next_port[0] += 1
            return next_port[0] - 1

    def emit(record):
        with lock:
            print(json.dumps(record), flush=True)

    def exchange(conn, req, record, split):
        record["port"] = conn.port
        data = req["bytes"].encode("latin-1")
        step = split or len(data) or 1
        for at in range(0, len(data), step):
            conn.s.sendall(data[at:at + step])
        status, headers, body = conn.response()
        record.update(status=status, headers=headers, body=body[:200].decode("latin-1"))

    def run(connection):
        conn, used = None, False
        for req in connection["requests"]:
            record = {"id": req["id"], "port": None, "status": None, "headers": {}, "body": "", "closed": False, "error": None}
            try:
                if conn is None:
                    conn, used = Conn(plan, ctx, port()), False
                try:
                    exchange(conn, req, record, connection.get("split", 0))
                except Closed:
                    if not used or conn.buf:
                        raise
                    # The peer closed the kept-alive connection before this request: once more
                    # on a new one.
                    conn.close()
                    conn, used = Conn(plan, ctx, port()), False
                    exchange(conn, req, record, connection.get("split", 0))
                used = True
                if connection.get("one_shot"):
                    record["closed"], after = conn.closed()
                    record["after"] = after[:200].decode("latin-1")
                else:
                    record["closed"] = record["headers"].get("connection", "").lower() == "close"
            except Closed as e:
                record.update(closed=True, error=str(e))
            except (OSError, ValueError, IndexError) as e:
                record.update(closed=True, error="%s: %s" % (type(e).__name__, e))
            if record["closed"] and conn is not None:
                conn.close()
                conn = None
            emit(record)
        if conn is not None:
            conn.close()

    with ThreadPoolExecutor(max_workers=plan["parallel"]) as pool:
        for f in [pool.submit(run, c) for c in plan["connections"]]:
            f.result()


if __name__ == "__main__":
    main()
