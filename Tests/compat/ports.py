"""Loopback ports for the servers the tests start.

Binding port 0 and closing the socket returns a port from the kernel's ephemeral range, the range it
also gives every outgoing connection: between the check and the server's own bind, a client socket
of another test (or of the server under test, dialling a peer) can take it, and the server fails
with "Address already in use". So ports come from below that range, where the kernel hands out
nothing by itself, chosen at random, checked free, and never handed out twice by this process.
"""
import random
import socket

_handed_out = set()


def _ephemeral_floor():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port():
    top = min(_ephemeral_floor(), 65536) - 1
    for _ in range(1000):
        port = random.randint(20000, max(top, 20001))
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free loopback port below the ephemeral range")
