"""The Ed25519 key auth signs access tokens with, and its public half as a JWKS."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from shared.settings import Settings, load_or_create_secret
from shared.tokens import ALGORITHM

KEY_FILE_NAME = "jwt_ed25519.pem"


def generate_private_key_pem() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )


def _thumbprint(public_jwk: dict[str, str]) -> str:
    """RFC 7638 thumbprint: stable for a key, so the kid changes exactly when the key does."""
    required = {name: public_jwk[name] for name in ("crv", "kty", "x")}
    canonical = json.dumps(required, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()


@dataclass(frozen=True)
class SigningKey:
    private_key: Ed25519PrivateKey
    kid: str

    @classmethod
    def from_pem(cls, pem: bytes) -> SigningKey:
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the JWT signing key must be an Ed25519 private key (PEM)")
        return cls(private_key=key, kid=_thumbprint(_public_jwk(key)))

    def public_jwk(self) -> dict[str, str]:
        return {**_public_jwk(self.private_key), "kid": self.kid, "alg": ALGORITHM, "use": "sig"}

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [self.public_jwk()]}

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.private_key, algorithm=ALGORITHM, headers={"kid": self.kid})


def _public_jwk(key: Ed25519PrivateKey) -> dict[str, str]:
    jwk: dict[str, str] = OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return jwk


def load_signing_key(settings: Settings) -> SigningKey:
    """The configured key, else one generated on first start and kept under VAR_DIR (0600).

    Plain file I/O: this runs once while the app is built, before anything is served.
    """
    if settings.jwt_private_key:
        # A PEM squeezed into one environment line often arrives with literal \n escapes.
        return SigningKey.from_pem(settings.jwt_private_key.replace("\\n", "\n").encode())
    if settings.jwt_private_key_file:
        return SigningKey.from_pem(settings.jwt_private_key_file.read_bytes())
    path = settings.secrets_dir / KEY_FILE_NAME
    return SigningKey.from_pem(load_or_create_secret(path, generate_private_key_pem))
