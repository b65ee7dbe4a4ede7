"""Identities, the certificate folder layout and ``rkdsc certs`` (a development CA).

    rkdsc certs --out DIR [--config deploy/topology.toml] [--id edge-9 ...] [--san relay.example]
    paths = write_certs(DIR, ["edge-near", "edge-far"])     # the same from Python
    ident = Identity.transmitter("edge-near"); ident.uri    # 'spiffe://rkdsc/transmitter/edge-near'
    cert_paths(DIR, ident) -> (DIR/transmitters/edge-near.pem, DIR/transmitters/edge-near.key)

Contract:

* An identity is a role (``server``, ``relay``, ``admin``, ``transmitter``) and a name (the
  transmitter id; the role itself otherwise). In a certificate it is the one URI subject
  alternative name ``spiffe://rkdsc/<role>`` / ``spiffe://rkdsc/transmitter/<id>``
  (``Identity.from_uri`` reads it back); the server and relay certificates also carry the DNS
  names and IP addresses clients dial (``DEFAULT_SERVER_NAMES`` plus ``--san``).
* Layout of a folder (``cert_paths``): ``ca.pem`` / ``ca.key`` (the CA; its key is needed only to
  issue more), ``server.pem|key``, ``relay.pem|key``, ``admin.pem|key``,
  ``transmitters/<id>.pem|key``, ``tokens.toml`` (random bearer tokens per identity, the fallback
  without mutual TLS). Keys and the tokens file are written with mode 0600.
* Keys are ECDSA P-256; every leaf certificate is valid for both TLS server and client auth
  (a service's own certificate also authenticates its health probe).
* ``check_valid(path, what)`` raises ``CertificateError`` naming the file and the dates when a
  certificate is expired or not yet valid (the services check their own at start).
* Needs the ``cryptography`` package only to issue and to check dates; no grpc.
"""
from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence
from urllib.parse import quote, unquote

__all__ = ["Identity", "ROLES", "TRUST_DOMAIN", "CertificateError", "cert_paths", "ca_paths", "tokens_path",
           "make_ca", "issue", "write_certs", "check_valid", "token_key", "DEFAULT_SERVER_NAMES", "cli"]

TRUST_DOMAIN = "rkdsc"
ROLES = ("server", "relay", "admin", "transmitter")
# names clients dial on localhost, in compose (service names) and in the Kubernetes manifests
DEFAULT_SERVER_NAMES = {"server": ("localhost", "server", "rkdsc-server", "127.0.0.1", "::1"),
                        "relay": ("localhost", "basestation", "relay", "rkdsc-relay", "127.0.0.1", "::1")}
DEFAULT_DAYS = 365


class CertificateError(ValueError):
    """A certificate that cannot be used (expired, not yet valid, unreadable); names the file."""


@dataclass(frozen=True)
class Identity:
    role: str      # one of ROLES
    name: str      # transmitter id, or the role

    def __post_init__(self):
        if self.role not in ROLES:
            raise ValueError(f"identity role: expected one of {', '.join(ROLES)}, got {self.role!r}")

    @classmethod
    def transmitter(cls, transmitter_id: str) -> "Identity":
        return cls("transmitter", transmitter_id)

    @classmethod
    def of(cls, role: str) -> "Identity":
        return cls(role, role)

    @property
    def uri(self) -> str:
        if self.role == "transmitter":
            return f"spiffe://{TRUST_DOMAIN}/transmitter/{quote(self.name, safe='-._~')}"
        return f"spiffe://{TRUST_DOMAIN}/{self.role}"

    @classmethod
    def from_uri(cls, uri: str) -> "Identity | None":
        """The identity of a ``spiffe://rkdsc/...`` URI, None for any other string."""
        prefix = f"spiffe://{TRUST_DOMAIN}/"
        if not uri.startswith(prefix):
            return None
        parts = uri[len(prefix):].split("/")
        if len(parts) == 2 and parts[0] == "transmitter" and parts[1]:
            return cls.transmitter(unquote(parts[1]))
        if len(parts) == 1 and parts[0] in ROLES and parts[0] != "transmitter":
            return cls.of(parts[0])
        return None

    def __str__(self) -> str:
        return f"transmitter {self.name!r}" if self.role == "transmitter" else self.role


def token_key(identity: Identity) -> str:
    """The key of an identity in tokens.toml: ``admin``, ``relay``, ``transmitter/edge-near``."""
    return f"transmitter/{identity.name}" if identity.role == "transmitter" else identity.role


def _file_stem(transmitter_id: str) -> str:
    if not transmitter_id or "/" in transmitter_id or "\\" in transmitter_id or transmitter_id.startswith("."):
        raise ValueError(f"transmitter id {transmitter_id!r}: cannot name a certificate file "
                         f"(no '/', '\\' or leading '.')")
    return transmitter_id


def cert_paths(folder: str | os.PathLike, identity: Identity) -> tuple[Path, Path]:
    """(certificate, key) of ``identity`` in a folder written by ``rkdsc certs``."""
    folder = Path(folder)
    if identity.role == "transmitter":
        stem = _file_stem(identity.name)
        return folder / "transmitters" / f"{stem}.pem", folder / "transmitters" / f"{stem}.key"
    return folder / f"{identity.role}.pem", folder / f"{identity.role}.key"


def ca_paths(folder: str | os.PathLike) -> tuple[Path, Path]:
    return Path(folder) / "ca.pem", Path(folder) / "ca.key"


def tokens_path(folder: str | os.PathLike) -> Path:
    return Path(folder) / "tokens.toml"


# ----------------------------------------------------------------------------- issuing

def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def make_ca(common_name: str = "rkdsc development CA", days: int = DEFAULT_DAYS, key=None,
            not_before: dt.datetime | None = None):
    """A self-signed CA -> (certificate, private key) (cryptography objects)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = key or _key()
    start = not_before or _now() - dt.timedelta(minutes=5)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "rkdsc")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def issue(ca_cert, ca_key, identity: Identity, names: Iterable[str] = (), days: int = DEFAULT_DAYS,
          not_before: dt.datetime | None = None, not_after: dt.datetime | None = None, key=None):
    """A leaf certificate for ``identity`` signed by the CA -> (certificate, private key).
    ``names``: DNS names / IP addresses added to the SAN (next to the identity URI);
    ``not_before`` / ``not_after`` override the validity (tests make expired ones)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = key or _key()
    start = not_before or _now() - dt.timedelta(minutes=5)
    end = not_after or start + dt.timedelta(days=days)
    sans: list = [x509.UniformResourceIdentifier(identity.uri)]
    for n in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity.name[:64]),
                                     x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, identity.role)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, key_cert_sign=False,
                                         crl_sign=False, content_commitment=False, data_encipherment=False,
                                         key_agreement=True, encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert, key


def _pem_cert(cert) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def _pem_key(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path: Path, data: bytes, secret: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, 0o600 if secret else 0o644)
    os.replace(tmp, path)


def write_pair(cert, key, cert_path: Path, key_path: Path) -> None:
    _write(cert_path, _pem_cert(cert))
    _write(key_path, _pem_key(key), secret=True)


def _load_ca(folder: Path):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert_p, key_p = ca_paths(folder)
    return (x509.load_pem_x509_certificate(cert_p.read_bytes()),
            serialization.load_pem_private_key(key_p.read_bytes(), password=None))


def _keep(cert_p: Path, key_p: Path, ca_cert, min_days: float) -> bool:
    """An existing leaf issued by this CA, valid for at least ``min_days`` more."""
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(cert_p.read_bytes())
        key_p.stat()
    except (OSError, ValueError):
        return False
    now = _now()
    return (cert.issuer == ca_cert.subject and cert.not_valid_before_utc <= now
            and cert.not_valid_after_utc - now > dt.timedelta(days=min_days))


def write_certs(out: str | os.PathLike, transmitter_ids: Sequence[str], names: Iterable[str] = (),
                days: int = DEFAULT_DAYS, reuse_ca: bool = True, tokens: bool = True,
                ca_dir: str | os.PathLike | None = None, keep_valid_days: float | None = None) -> dict[str, Path]:
    """Write (or renew) the folder: the CA (an existing ``ca.pem`` + ``ca.key`` is reused when
    ``reuse_ca``, so renewed leaves stay trusted), server, relay, admin and one certificate per
    transmitter, and ``tokens.toml``. ``names`` are extra DNS names / IPs of the server and
    relay. ``ca_dir``: keep the CA (and its key) there instead of in ``out`` (``out`` gets a
    copy of ``ca.pem`` only). ``keep_valid_days``: leave a leaf (and the tokens file) that this
    CA issued and that is valid that many more days as it is. Returns {label: path}."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ids = list(dict.fromkeys(transmitter_ids))
    for tid in ids:
        _file_stem(tid)
    ca_home = Path(ca_dir) if ca_dir is not None else out
    ca_home.mkdir(parents=True, exist_ok=True)
    ca_cert_p, ca_key_p = ca_paths(ca_home)
    if reuse_ca and ca_cert_p.is_file() and ca_key_p.is_file():
        ca_cert, ca_key = _load_ca(ca_home)
    else:
        ca_cert, ca_key = make_ca(days=max(days, DEFAULT_DAYS))
        write_pair(ca_cert, ca_key, ca_cert_p, ca_key_p)
        keep_valid_days = None  # a new CA: every leaf is issued again
    if ca_home != out:
        _write(ca_paths(out)[0], _pem_cert(ca_cert))
    written = {"ca": ca_paths(out)[0]}
    extra = list(names)
    identities = [Identity.of("server"), Identity.of("relay"), Identity.of("admin")]
    identities += [Identity.transmitter(t) for t in ids]
    for ident in identities:
        host_names = list(DEFAULT_SERVER_NAMES.get(ident.role, ())) + (extra if ident.role in ("server", "relay") else [])
        cp, kp = cert_paths(out, ident)
        written[token_key(ident)] = cp
        if keep_valid_days is not None and _keep(cp, kp, ca_cert, keep_valid_days):
            continue
        cert, key = issue(ca_cert, ca_key, ident, names=dict.fromkeys(host_names), days=days)
        write_pair(cert, key, cp, kp)
    if tokens:
        old: dict[str, str] = {}
        if keep_valid_days is not None and tokens_path(out).is_file():  # keep the tokens in use, add new ones
            import tomllib

            try:
                old = dict(tomllib.loads(tokens_path(out).read_text()).get("tokens", {}))
            except (OSError, ValueError):
                old = {}
        keys = [token_key(i) for i in identities]
        if not old or any(k not in old for k in keys):
            table = {**old, **{k: old.get(k) or secrets.token_urlsafe(32) for k in keys}}
            lines = ["# rkdsc bearer tokens: the fallback identity without mutual TLS (tls.mode = \"tls\").",
                     "# Secret: give each process only its own token (RKDSC_TOKEN / RKDSC_TOKEN_FILE).", "[tokens]"]
            lines += [f'"{k}" = "{v}"' for k, v in table.items()]
            _write(tokens_path(out), ("\n".join(lines) + "\n").encode(), secret=True)
        written["tokens"] = tokens_path(out)
    return written


# ----------------------------------------------------------------------------- checking

def validity(path: str | os.PathLike) -> tuple[dt.datetime, dt.datetime] | None:
    """(not_before, not_after) of the first certificate in a PEM file; None without ``cryptography``."""
    try:
        from cryptography import x509
    except ImportError:  # pragma: no cover - the dependency is installed with the package
        return None
    try:
        cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    except ValueError as exc:
        raise CertificateError(f"{path}: not a PEM certificate ({exc})") from None
    return cert.not_valid_before_utc, cert.not_valid_after_utc


def check_valid(path: str | os.PathLike, what: str, now: dt.datetime | None = None) -> None:
    """CertificateError naming ``what`` (the config field), the file and the dates when the
    certificate is expired or not yet valid."""
    span = validity(path)
    if span is None:
        return
    now = now or _now()
    start, end = span
    if now > end:
        raise CertificateError(f"{what}: the certificate {path} expired on {end:%Y-%m-%d %H:%M:%S} UTC (now "
                               f"{now:%Y-%m-%d %H:%M:%S} UTC); issue a new one (`rkdsc certs --out DIR` reuses "
                               f"the CA in DIR)")
    if now < start:
        raise CertificateError(f"{what}: the certificate {path} is not valid before {start:%Y-%m-%d %H:%M:%S} "
                               f"UTC (now {now:%Y-%m-%d %H:%M:%S} UTC); check the clock")


# ----------------------------------------------------------------------------- CLI

def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="rkdsc certs", description=(
        "Write a development CA and TLS certificates for the edge server, the relay, an admin and every "
        "transmitter of a topology (identity in the subject alternative name, spiffe://rkdsc/...), plus "
        "random bearer tokens (tokens.toml) for running without mutual TLS. Run it again to renew: the "
        "CA in OUT is reused, so the new certificates are trusted by everything that trusts the old ones."))
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--config", default=None,
                   help="topology TOML whose [[transmitters]] get certificates (default: deploy/topology.toml when "
                        "it exists)")
    p.add_argument("--id", action="append", default=[], metavar="ID",
                   help="another transmitter id to issue a certificate for (repeatable)")
    p.add_argument("--san", action="append", default=[], metavar="NAME",
                   help="extra DNS name or IP address of the server and the relay (repeatable; localhost, "
                        "127.0.0.1 and the compose service names are always included)")
    p.add_argument("--days", type=int, default=DEFAULT_DAYS, help=f"validity in days (default {DEFAULT_DAYS})")
    p.add_argument("--new-ca", action="store_true", help="make a new CA even when OUT has one (every old "
                                                         "certificate stops being trusted)")
    p.add_argument("--no-tokens", action="store_true", help="do not write tokens.toml")
    p.add_argument("--ca-dir", default=None, metavar="DIR",
                   help="keep the CA certificate and key here instead of in OUT (OUT gets a copy of ca.pem only), "
                        "so the folder handed to the services holds no CA key")
    p.add_argument("--keep", type=float, default=None, metavar="DAYS",
                   help="leave certificates of this CA that are valid at least DAYS more as they are (idempotent "
                        "re-runs, e.g. a compose one-shot)")
    args = p.parse_args(argv)
    if args.days < 1:
        print(f"rkdsc certs: error: --days: expected at least 1, got {args.days}", file=sys.stderr)
        return 2
    ids = list(args.id)
    config = args.config or ("deploy/topology.toml" if Path("deploy/topology.toml").is_file() else None)
    if config:
        from rkdsc.common.config import ConfigError, load_config

        try:
            ids = [t.id for t in load_config(config).transmitters] + ids
        except ConfigError as exc:
            print(f"rkdsc certs: error: --config: {exc}", file=sys.stderr)
            return 2
    try:
        written = write_certs(args.out, ids, names=args.san, days=args.days, reuse_ca=not args.new_ca,
                              tokens=not args.no_tokens, ca_dir=args.ca_dir, keep_valid_days=args.keep)
    except ImportError:
        print("rkdsc certs: error: the `cryptography` package is needed (pip install cryptography)", file=sys.stderr)
        return 2
    except (ValueError, OSError) as exc:
        print(f"rkdsc certs: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} files to {Path(args.out).resolve()}: CA, server, relay, admin, "
          f"{len(dict.fromkeys(ids))} transmitter(s){'' if args.no_tokens else ', tokens.toml'}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
