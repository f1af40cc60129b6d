#!/usr/bin/env python3
"""Real TCP peers for the end-to-end tests: servers and clients with exact, checkable behaviour.

Every mode prints one result line that the Rust test asserts on. Data is pseudo-random from a
seed, so both ends can check a transfer without sharing a file.
"""
import argparse
import hashlib
import random
import socket
import struct
import sys
import threading
import time


def blob(size, seed):
    """`size` pseudo-random bytes from `seed` (built in 1 MiB chunks: randbytes is limited)."""
    chunk = 1 << 20
    parts = [random.Random(seed * 1000003 + i).randbytes(chunk) for i in range(size // chunk + 1)]
    return b"".join(parts)[:size]


def say(*words):
    print(*words, flush=True)


def serve(args):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((args.host, args.port))
    data = blob(args.size, args.seed) if args.mode == "source" else b""
    s.listen(1024)
    say("listening", args.port)

    def handle(c, peer):
        say("peer", "%s:%d" % peer)
        try:
            if args.mode == "sink":
                # Read to EOF (the client's FIN), then answer: a reply after a half-close.
                h, n = hashlib.sha256(), 0
                while True:
                    chunk = c.recv(1 << 16)
                    if not chunk:
                        break
                    h.update(chunk)
                    n += len(chunk)
                c.sendall(("%d %s\n" % (n, h.hexdigest())).encode())
                say("sink", n, h.hexdigest())
            elif args.mode == "source":
                c.sendall(data)
                c.shutdown(socket.SHUT_WR)
                # The client may still send after our FIN: a half-close the other way.
                n = 0
                while True:
                    chunk = c.recv(1 << 16)
                    if not chunk:
                        break
                    n += len(chunk)
                say("after-fin", n)
            elif args.mode == "echo":
                while True:
                    chunk = c.recv(1 << 16)
                    if not chunk:
                        break
                    c.sendall(chunk)
            elif args.mode == "rst":
                c.recv(100)
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif args.mode == "banner-tls":
                # One byte before the client speaks (a banner), then TLS as the server.
                import ssl
                c.sendall(b"+")
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                ctx.load_cert_chain(args.cert, args.key)
                t = ctx.wrap_socket(c, server_side=True)
                line = t.recv(100)
                t.sendall(b"tls after banner: " + line)
                t.close()
            elif args.mode == "silent":
                # Accept, then neither read nor write until the client goes.
                time.sleep(args.timeout)
            elif args.mode == "expect-rst":
                try:
                    while c.recv(100):
                        pass
                    say("eof")
                except ConnectionResetError:
                    say("reset")
        except OSError as e:
            say("error", e)
        finally:
            c.close()

    while True:
        c, peer = s.accept()
        threading.Thread(target=handle, args=(c, peer), daemon=True).start()


def client(args):
    addr = (args.host, args.port)
    if args.mode == "download":
        c = socket.create_connection(addr, timeout=60)
        h, n = hashlib.sha256(), 0
        while True:
            chunk = c.recv(1 << 16)
            if not chunk:
                break
            h.update(chunk)
            n += len(chunk)
        want = hashlib.sha256(blob(args.size, args.seed)).hexdigest()
        # Half-close the other way: send after the server's FIN.
        c.sendall(b"z" * 1000)
        c.close()
        say("download", "ok" if (n, h.hexdigest()) == (args.size, want) else "BAD", n)
    elif args.mode == "upload":
        data = blob(args.size, args.seed)
        c = socket.create_connection(addr, timeout=60)
        c.sendall(data)
        c.shutdown(socket.SHUT_WR)
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = c.recv(200)
            if not chunk:
                break
            reply += chunk
        want = "%d %s" % (len(data), hashlib.sha256(data).hexdigest())
        say("upload", "ok" if reply.decode().strip() == want else "BAD", reply.decode().strip())
    elif args.mode == "concurrent":
        results = []
        conns = []
        for i in range(args.count):
            c = socket.create_connection(addr, timeout=30)
            conns.append(c)
        # All are open at once; now each echoes its own message.
        for i, c in enumerate(conns):
            c.sendall(("hello %d\n" % i).encode())
        for i, c in enumerate(conns):
            want = ("hello %d\n" % i).encode()
            got = b""
            while len(got) < len(want):
                chunk = c.recv(100)
                if not chunk:
                    break
                got += chunk
            results.append(got == want)
            c.close()
        say("concurrent", sum(results), "of", args.count)
    elif args.mode == "churn":
        ok = 0
        for i in range(args.count):
            c = socket.create_connection(addr, timeout=10)
            c.sendall(b"x")
            if c.recv(1) == b"x":
                ok += 1
            c.close()
        say("churn", ok, "of", args.count)
    elif args.mode == "connect":
        t = time.monotonic()
        try:
            c = socket.create_connection(addr, timeout=args.timeout)
            c.close()
            say("connect", "ok")
        except ConnectionRefusedError:
            say("connect", "refused", "%.2f" % (time.monotonic() - t))
        except (socket.timeout, TimeoutError):
            say("connect", "timeout")
    elif args.mode == "expect-rst":
        c = socket.create_connection(addr, timeout=10)
        c.sendall(b"x")
        try:
            data = c.recv(100)
            say("eof" if not data else "data")
        except ConnectionResetError:
            say("reset")
    elif args.mode == "rst":
        c = socket.create_connection(addr, timeout=10)
        c.sendall(b"x")
        time.sleep(0.3)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
        say("sent-rst")
    elif args.mode == "hello":
        # A TLS 1.3 ClientHello for server.test, with an Encrypted Client Hello extension when
        # --count is 1, or the --variant asked for; prints the first bytes the other end answers
        # with, in hex.
        c = socket.create_connection(addr, timeout=5)
        if args.variant:
            c.sendall(crafted_hello(args.variant))
        else:
            c.sendall(client_hello("server.test", ech=args.count == 1))
        try:
            data = c.recv(64)
        except (ConnectionResetError, socket.timeout, TimeoutError):
            data = b""
        say("answer", data[:16].hex() or "none")
    elif args.mode == "banner-tls":
        # Reads the server's banner byte, then speaks TLS (trusting --ca) and says hello.
        import ssl
        c = socket.create_connection(addr, timeout=10)
        banner = c.recv(1)
        ctx = ssl.create_default_context(cafile=args.ca)
        t = ctx.wrap_socket(c, server_hostname="server.test")
        issuer = dict(x[0] for x in t.getpeercert()["issuer"]).get("commonName", "?")
        t.sendall(b"ping")
        reply = t.recv(100).decode()
        say("banner-tls", banner.decode(), "issuer=" + issuer.replace(" ", "_"), reply.replace(" ", "_"))
    elif args.mode == "flood":
        # A ClientHello, then as many bytes as the other end takes in --timeout seconds, never
        # reading; prints how many it sent.
        c = socket.create_connection(addr, timeout=5)
        c.sendall(client_hello("server.test", ech=False))
        c.setblocking(False)
        junk = bytes(1 << 16)
        sent, end = 0, time.time() + args.timeout
        while time.time() < end:
            try:
                sent += c.send(junk)
            except BlockingIOError:
                time.sleep(0.01)
            except OSError:
                break
        say("flood", sent)
    else:
        sys.exit("unknown client mode " + args.mode)


def client_hello(sni, ech):
    """A well-formed TLS 1.3 ClientHello (x25519 key share, real-looking extensions)."""
    def ext(ty, body):
        return struct.pack("!HH", ty, len(body)) + body
    name = sni.encode()
    exts = ext(0, struct.pack("!HBH", len(name) + 3, 0, len(name)) + name)
    exts += ext(10, struct.pack("!HH", 2, 29))                      # supported_groups: x25519
    exts += ext(13, struct.pack("!HHH", 4, 0x0403, 0x0804))         # signature_algorithms
    exts += ext(43, bytes([2]) + struct.pack("!H", 0x0304))         # supported_versions: 1.3
    exts += ext(51, struct.pack("!HHH", 36, 29, 32) + bytes(range(32)))  # key_share
    exts += ext(45, bytes([1, 1]))                                  # psk_key_exchange_modes
    if ech:
        exts += ext(0xFE0D, bytes([0, 0, 1, 0, 1, 7, 0, 32]) + bytes(32) + struct.pack("!H", 16) + bytes(16))
    body = struct.pack("!H", 0x0303) + bytes(32) + bytes([32]) + bytes(range(32))
    body += struct.pack("!HH", 2, 0x1301) + bytes([1, 0]) + struct.pack("!H", len(exts)) + exts
    msg = bytes([1]) + len(body).to_bytes(3, "big") + body
    return bytes([22, 3, 1]) + struct.pack("!H", len(msg)) + msg


def crafted_hello(variant):
    """A ClientHello that is wrong (or unusual) in one way, for the decision's tests."""
    def ext(ty, body):
        return struct.pack("!HH", ty, len(body)) + body

    def sni(name):
        return ext(0, struct.pack("!HBH", len(name) + 3, 0, len(name)) + name)

    def alpn(*protos):
        lst = b"".join(bytes([len(p)]) + p for p in protos)
        return ext(16, struct.pack("!H", len(lst)) + lst)

    base = ext(10, struct.pack("!HH", 2, 29)) + ext(13, struct.pack("!HHH", 4, 0x0403, 0x0804))
    base += ext(43, bytes([2]) + struct.pack("!H", 0x0304)) + ext(51, struct.pack("!HHH", 36, 29, 32) + bytes(range(32)))
    records = 16384
    if variant == "bad-sni":
        exts = sni("\u00e9.test".encode()) + base
    elif variant == "long-sni":
        exts = sni(b"a" * 250 + b".test") + base
    elif variant == "empty-alpn":
        exts = sni(b"server.test") + alpn(b"h2", b"") + base
    elif variant == "dup-sni":
        exts = sni(b"server.test") + sni(b"other.test") + base
    elif variant == "big":
        # 20 KiB of padding (extension 21), in 1 KiB records: more than one record can carry.
        exts = sni(b"server.test") + base + ext(21, bytes(20 * 1024))
        records = 1024
    elif variant == "http":
        return b"GET / HTTP/1.0\r\n\r\n"
    elif variant == "sslv2":
        # An SSLv2-format CLIENT-HELLO offering TLS 1.0 (what very old stacks send).
        specs = bytes([0, 0, 4, 0, 0, 5, 0, 0, 0x0a])
        body = bytes([1, 3, 1]) + struct.pack("!HHH", len(specs), 0, 16) + specs + bytes(16)
        return struct.pack("!H", 0x8000 | len(body)) + body
    else:
        sys.exit("unknown hello variant " + variant)
    body = struct.pack("!H", 0x0303) + bytes(32) + bytes([0])
    body += struct.pack("!HH", 2, 0x1301) + bytes([1, 0]) + struct.pack("!H", len(exts)) + exts
    msg = bytes([1]) + len(body).to_bytes(3, "big") + body
    return b"".join(bytes([22, 3, 1]) + struct.pack("!H", len(msg[i:i + records])) + msg[i:i + records]
                    for i in range(0, len(msg), records))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["server", "client"])
    p.add_argument("mode")
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--size", type=int, default=0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--timeout", type=float, default=5)
    p.add_argument("--variant", default="")
    p.add_argument("--cert", default="")
    p.add_argument("--key", default="")
    p.add_argument("--ca", default="")
    args = p.parse_args()
    serve(args) if args.role == "server" else client(args)


if __name__ == "__main__":
    main()
