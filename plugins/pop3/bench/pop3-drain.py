#!/usr/bin/env python3
# Copied from the project test bed (shared/reference/testbed/bin/pop3-drain.py): the bare
# pipelining client (no MIME parsing, no delivery) that the benchmark shows as the ceiling.
"""Drain a POP3 mailbox: RETR+DELE every message, PIPELINING in batches (batch=1 -> lock-step).
usage: pop3-drain.py USER PASS [PORT=11110] [BATCH=64] [--keep]"""
import socket, sys, time
user, pw = sys.argv[1], sys.argv[2]
port = int(sys.argv[3]) if len(sys.argv) > 3 else 11110
batch = int(sys.argv[4]) if len(sys.argv) > 4 else 64
keep = "--keep" in sys.argv
s = socket.create_connection(("127.0.0.1", port)); f = s.makefile("rb", buffering=1 << 16)
def line():
    l = f.readline()
    if not l.startswith(b"+OK"): raise SystemExit(f"server said {l!r}")
    return l
def multiline():
    n = 0
    for l in iter(f.readline, b".\r\n"): n += len(l)
    return n
t0 = time.time(); line()
s.sendall(f"USER {user}\r\nPASS {pw}\r\nSTAT\r\n".encode()); line(); line()
count = int(line().split()[1]); total = 0
for start in range(1, count + 1, batch):
    ids = range(start, min(start + batch, count + 1))
    s.sendall(b"".join(b"RETR %d\r\n" % i + (b"" if keep else b"DELE %d\r\n" % i) for i in ids))
    for _ in ids:
        line(); total += multiline()
        if not keep: line()
s.sendall(b"QUIT\r\n"); line()
print(f"{count} msgs, {total} bytes in {time.time()-t0:.2f}s (batch={batch}, keep={keep})")
