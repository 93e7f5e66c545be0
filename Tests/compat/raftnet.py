"""Cut the links between a cluster's nodes (issue 18's campaign): a TCP proxy in front of each node's Raft
port that drops traffic per directed link, like a partition.

Node i listens for Raft on its own loopback address, 127.0.0.(10+i) (listener `cluster_address`), and
tells the others to dial its proxy on 127.0.0.1 (`cluster_addr`). cofferd's Raft connections leave
from the address the node listens on, so the proxy in front of node i knows which node j a connection
comes from. Each connection carries the messages of one direction (j → i).

A cut link is a black hole, not a refusal: the proxy keeps reading what j sends and throws it away, so
j's connection looks alive while nothing arrives, as with a partition that drops packets. Healing closes
the connections that were cut (j then reconnects) and forwards new ones again.

This is a proxy in the test process, not the kernel: it stands in for network namespaces or netem,
which this machine's kernel does not offer (no `prio` qdisc). The API ports are not proxied, so a standby
can still forward a client's request to the active node over HTTP; only Raft traffic is cut.
"""

import select
import socket
import threading


def node_host(index):
    """The loopback address node `index` (1-based) listens on for Raft."""
    return f"127.0.0.{10 + index}"


class _Connection:
    def __init__(self, source, inbound, outbound):
        self.source, self.inbound, self.outbound = source, inbound, outbound
        self.cut = False

    def close(self):
        for s in (self.inbound, self.outbound):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


class Proxy:
    """Listens on 127.0.0.1:<port> and forwards to `target` (host, port), unless the link from the
    connecting node to `index` is cut in `net`."""

    def __init__(self, net, index, target):
        self.net, self.index, self.target = net, index, target
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.connections = set()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                inbound, (host, _) = self.listener.accept()
            except OSError:
                return
            source = self.net.index_of(host)
            try:
                outbound = socket.create_connection(self.target, timeout=1)
            except OSError:
                inbound.close()  # the node is down: the dialer sees its connection closed
                continue
            outbound.settimeout(None)
            connection = _Connection(source, inbound, outbound)
            with self.net.lock:
                if self.closed:
                    connection.close()
                    return
                connection.cut = (source, self.index) in self.net.cuts
                self.connections.add(connection)
            threading.Thread(target=self._pump, args=(connection,), daemon=True).start()

    def _pump(self, connection):
        pairs = {connection.inbound: connection.outbound, connection.outbound: connection.inbound}
        try:
            while True:
                readable, _, _ = select.select(list(pairs), [], [], 1.0)
                for s in readable:
                    data = s.recv(65536)
                    if not data:
                        return
                    if not connection.cut:  # read on a cut link too: the sender sees nothing wrong
                        pairs[s].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            with self.net.lock:
                self.connections.discard(connection)
            connection.close()

    def close(self):
        with self.net.lock:
            self.closed = True
            connections = list(self.connections)
        self.listener.close()
        for c in connections:
            c.close()


class RaftNet:
    """The proxies of a cluster's nodes, and which directed links (from, to) are cut."""

    def __init__(self):
        self.lock = threading.Lock()
        self.cuts = set()
        self.proxies = {}

    @staticmethod
    def index_of(host):
        parts = host.split(".")
        return int(parts[3]) - 10 if host.startswith("127.0.0.") and int(parts[3]) > 10 else None

    def add(self, index, raft_port):
        """A proxy in front of node `index`'s Raft port; returns the address to advertise."""
        proxy = Proxy(self, index, (node_host(index), raft_port))
        self.proxies[index] = proxy
        return f"127.0.0.1:{proxy.port}"

    def cut(self, source, target):
        """Drops everything `source` sends to `target` from now on."""
        with self.lock:
            self.cuts.add((source, target))
            for c in self.proxies[target].connections:
                if c.source == source:
                    c.cut = True

    def isolate(self, index):
        """Cuts every link into and out of node `index`."""
        for other in self.proxies:
            if other != index:
                self.cut(index, other)
                self.cut(other, index)

    def heal(self):
        """Restores every link; the connections that were cut are closed so their senders reconnect."""
        with self.lock:
            self.cuts.clear()
            stale = [c for p in self.proxies.values() for c in p.connections if c.cut]
        for c in stale:
            c.close()

    def close(self):
        for proxy in self.proxies.values():
            proxy.close()
