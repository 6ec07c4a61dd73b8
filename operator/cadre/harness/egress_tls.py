"""TLS for the egress proxy: the Agent's certificate authority (made by the operator, its key
only in the harness pod), certificates it issues for the hosts whose requests carry a
credential, and the host name a TLS ClientHello asks for (SNI).

Certificates and keys never touch a disk: ``ssl`` loads a chain only from a path, so each is
handed over through an anonymous memory file (``memfd``)."""

from __future__ import annotations

import contextlib
import datetime
import functools
import os
import socket
import ssl
import struct
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar, cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

T = TypeVar("T")


class Authority:
    """The Agent's egress CA, issuing one short-lived certificate per intercepted host."""

    def __init__(self, cert_pem: bytes, key_pem: bytes) -> None:
        self.cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the egress CA's key must be an EC key")
        self.key = key
        self.cert_pem = cert_pem

    @classmethod
    def load(cls, folder: Path) -> Authority:
        return cls((folder / "tls.crt").read_bytes(), (folder / "tls.key").read_bytes())

    @functools.lru_cache(maxsize=256)  # noqa: B019 - one Authority per process, kept for its life
    def context(self, host: str) -> ssl.SSLContext:
        """A server context presenting a certificate for ``host`` signed by this CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host[:64])]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        chain = cert.public_bytes(serialization.Encoding.PEM) + self.cert_pem
        private = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(["http/1.1"])  # the proxy speaks HTTP/1.1 to the client
        with _memory_file(chain) as cert_path, _memory_file(private) as key_path:
            context.load_cert_chain(cert_path, key_path)

        def same_host(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> int | None:
            # A tunnel opened for an allowed name cannot carry TLS for another one.
            return None if name in (None, host) else ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME

        context.sni_callback = same_host
        return context


class _memory_file:  # noqa: N801 - used as a context manager, like open()
    def __init__(self, data: bytes) -> None:
        self.fd = os.memfd_create("cadre-egress", os.MFD_CLOEXEC)
        os.write(self.fd, data)

    def __enter__(self) -> str:
        return f"/proc/self/fd/{self.fd}"

    def __exit__(self, *_: object) -> None:
        os.close(self.fd)


def server_name(hello: bytes) -> str | None:
    """The SNI host name of a TLS ClientHello record (None: not TLS, or no SNI) (pure)."""
    try:
        if len(hello) < 5 or hello[0] != 0x16:  # handshake record
            return None
        body = hello[5:]
        if body[0] != 0x01:  # ClientHello
            return None
        at = 4 + 2 + 32  # handshake header, version, random
        at += 1 + body[at]  # session id
        at += 2 + struct.unpack("!H", body[at : at + 2])[0]  # cipher suites
        at += 1 + body[at]  # compression methods
        end = at + 2 + struct.unpack("!H", body[at : at + 2])[0]
        at += 2
        while at + 4 <= end:
            kind, size = struct.unpack("!HH", body[at : at + 4])
            at += 4
            if kind == 0:  # server_name: list length, type, name length, name
                name_size = struct.unpack("!H", body[at + 3 : at + 5])[0]
                return body[at + 5 : at + 5 + name_size].decode("ascii").lower()
            at += size
    except (IndexError, struct.error, UnicodeDecodeError):
        return None
    return None


class BioTLS:
    """TLS over a blocking socket through memory BIOs, for the intercepted connections.

    An ``ssl.SSLSocket`` makes two system calls to read each 16 KB record (header, then body:
    OpenSSL's read-ahead is not exposed) and one to write each; relaying a download record by
    record then costs more than the cipher. Here one ``recv`` hands OpenSSL as much ciphertext
    as the kernel holds, ``read_available`` decrypts every whole record in it, and one
    ``sendall`` sends all the records a write made.

    Close the socket after ``close_notify``; the socket's timeout bounds every wait."""

    def __init__(
        self,
        sock: socket.socket,
        context: ssl.SSLContext,
        server_side: bool,
        server_hostname: str | None = None,
        chunk: int = 1024 * 1024,
    ) -> None:
        self.sock = sock
        self.chunk = chunk
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self.tls = context.wrap_bio(
            self._in, self._out, server_side=server_side, server_hostname=server_hostname
        )

    def handshake(self) -> None:
        self._until_done(self.tls.do_handshake)

    def recv(self, size: int) -> bytes:
        """At most ``size`` bytes of plaintext, waiting for the first; ``b""`` at the end."""
        try:
            return self._until_done(lambda: self.tls.read(size))
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):  # see recv_into
            return b""

    def recv_into(self, buffer: bytearray | memoryview, size: int = 0) -> int:
        size = size or len(buffer)
        try:
            got = self._until_done(lambda: self._read_into(size, buffer))
        # The peer's close_notify, or a close without one (as many servers do): the end.
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return 0
        return got

    def read_available(self, view: memoryview) -> int:
        """Plaintext into ``view``: waits for some, then adds every record already received,
        so a relay writes in large pieces. 0 at the end."""
        got = self.recv_into(view)
        while got and got < len(view) and (self._in.pending or self.tls.pending()):
            try:
                more = self._read_into(len(view) - got, view[got:])
            except (ssl.SSLWantReadError, ssl.SSLZeroReturnError, ssl.SSLEOFError):
                break  # a partial record, or the end: the next call waits or sees it
            if not more:
                break
            got += more
        self._flush()  # reading can answer the peer (a key update)
        return got

    def buffered(self) -> bool:
        """Received data not read yet, held here rather than on the socket: select() on the
        socket would not see it."""
        return bool(self._in.pending or self.tls.pending())

    def _read_into(self, size: int, buffer: bytearray | memoryview) -> int:
        # Given a buffer, SSLObject.read returns how much it wrote there (typeshed says bytes).
        return cast(int, self.tls.read(size, buffer))

    def sendall(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            written = self._until_done(functools.partial(self.tls.write, view))
            view = view[written:]

    def close_notify(self) -> None:
        """Say the end to the peer, without waiting for its answer."""
        with contextlib.suppress(ssl.SSLError):  # SSLWantReadError: its answer is not awaited
            self.tls.unwrap()
        with contextlib.suppress(OSError):
            self._flush()

    def _until_done(self, step: Callable[[], T]) -> T:
        while True:
            try:
                result = step()
            except ssl.SSLWantReadError:
                # OpenSSL reports the end as SSLEOFError; should it ask for more after it, say
                # the end rather than spin on a closed socket.
                if self._in.eof:
                    raise ssl.SSLEOFError("the peer closed the connection mid-record") from None
                self._flush()
                data = self.sock.recv(self.chunk)
                if data:
                    self._in.write(data)
                else:
                    self._in.write_eof()
                continue
            except ssl.SSLError:
                with contextlib.suppress(OSError):
                    self._flush()  # the alert saying why, so the peer can tell
                raise
            self._flush()
            return result

    def _flush(self) -> None:
        if self._out.pending:
            self.sock.sendall(self._out.read())
