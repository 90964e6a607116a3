#!/usr/bin/env python3
"""Writes the JWT seeds of fuzz/corpus/jwt/, signed with the test keys of runway-access.

Run from the repository root: python3 fuzz/jwt-seeds.py (needs the `cryptography` package).
The valid tokens expire in 2100, so the seeds keep reaching the verifier's happy path.
"""

import base64
import hashlib
import hmac
import json
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

KEYS = Path("crates/access/tests/keys")
OUT = Path("fuzz/corpus/jwt")
ISS, AUD, EXP = "https://auth.example.test", "orders", 4102444800


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(alg, kid, claims, sign):
    header = {"alg": alg, "typ": "JWT"} | ({"kid": kid} if kid else {})
    signed = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
    return signed + "." + b64(sign(signed.encode()))


def hs(secret):
    return lambda msg: hmac.new(secret, msg, hashlib.sha256).digest()


def rs(msg):
    key = serialization.load_pem_private_key((KEYS / "rs256.pem").read_bytes(), None)
    return key.sign(msg, padding.PKCS1v15(), hashes.SHA256())


def es(msg):
    key = serialization.load_pem_private_key((KEYS / "es256.pem").read_bytes(), None)
    r, s = decode_dss_signature(key.sign(msg, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


secret = (KEYS / "hs256.secret").read_bytes()
good = {"iss": ISS, "aud": AUD, "sub": "alice", "exp": EXP}
seeds = {
    "hs256": token("HS256", "hs", good, hs(secret)),
    "hs256-no-kid": token("HS256", None, good | {"aud": [AUD, "other"]}, hs(secret)),
    "rs256": token("RS256", "rs", good, rs),
    "es256": token("ES256", "es", good | {"nbf": 0}, es),
    "bearer-hs256": "Bearer " + token("HS256", "hs", good, hs(secret)),
    "expired": token("HS256", "hs", good | {"exp": 1}, hs(secret)),
    "wrong-audience": token("HS256", "hs", good | {"aud": "billing"}, hs(secret)),
    "confusion": token("HS256", "rs", good, hs((KEYS / "rs256.pub.pem").read_bytes())),
    "alg-none": token("none", None, good, lambda _: b""),
    "basic": "Basic dXNlcjpwYXNz",
    "jwks": (KEYS / "jwks.json").read_text(),
}
OUT.mkdir(parents=True, exist_ok=True)
for name, text in seeds.items():
    (OUT / name).write_text(text)
