"""Tiny network peers for end-to-end tests, run inside a test namespace.

    netserver.py whoami PORT        TCP: answer each connection with the peer's address
    netserver.py udp-echo PORT      UDP: answer each datagram with "echo:<data>"
    netserver.py udp-send HOST PORT MESSAGE   send one datagram, print the answer (3 s timeout)
"""

import socket
import sys


def whoami(port: int) -> None:
    srv = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    srv.bind(("::", port))
    srv.listen(16)
    while True:
        conn, peer = srv.accept()
        host = peer[0].removeprefix("::ffff:")
        conn.sendall(f"{host}\n".encode())
        conn.close()


def udp_echo(port: int) -> None:
    srv = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    srv.bind(("::", port))
    while True:
        data, peer = srv.recvfrom(2048)
        srv.sendto(b"echo:" + data, peer)


def udp_send(host: str, port: int, message: str) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.settimeout(3)
    sock.sendto(message.encode(), (host, port))
    print(sock.recvfrom(2048)[0].decode())


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "whoami":
        whoami(int(args[0]))
    elif mode == "udp-echo":
        udp_echo(int(args[0]))
    elif mode == "udp-send":
        udp_send(args[0], int(args[1]), args[2])
    else:
        raise SystemExit(__doc__)
