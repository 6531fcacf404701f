#!/usr/bin/env python3
"""rag-acl demo helpers for `make run` (standard library only).

  rag-demo.py seed CHROMA_URL    create the `docs` collection (idempotent) with documents of two
                                 tenants and several groups; prints the collection id
  rag-demo.py token USER         print a token signed with the DEMO key of envoy/rag-acl.yaml
                                 (users: alice, erin, bob, mallory)
"""
import base64
import hashlib
import hmac
import json
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BASE = "/api/v2/tenants/default_tenant/databases/default_database"
USERS = {
    "alice": {"tenant": "A", "groups": ["finance", "eng"], "clearance": 2, "roles": ["reader"]},
    "erin": {"tenant": "A", "groups": ["hr"], "clearance": 3, "roles": ["reader"]},
    "bob": {"tenant": "B", "groups": ["finance", "eng"], "clearance": 3, "roles": ["reader", "writer"]},
    "mallory": {"groups": ["eng"], "clearance": 9, "roles": ["reader"]},  # no tenant claim
}
RECORDS = [
    ("a1", [1.0, 0.0, 0.0], {"tenant": "A", "acl_groups": ["finance", "eng"], "clearance": 2}, "A: Q3 finance plan"),
    ("a2", [0.9, 0.1, 0.0], {"tenant": "A", "acl_groups": ["eng"], "clearance": 1}, "A: deployment runbook"),
    ("a3", [0.0, 1.0, 0.0], {"tenant": "A", "acl_groups": ["hr"], "clearance": 3}, "A: salary bands"),
    ("b1", [1.0, 0.0, 0.01], {"tenant": "B", "acl_groups": ["finance"], "clearance": 1}, "B: acquisition memo"),
    ("b2", [0.0, 0.0, 1.0], {"tenant": "B", "acl_groups": ["eng"], "clearance": 0}, "B: architecture notes"),
]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(user: str) -> str:
    jwks = json.loads((REPO / "envoy/rag-acl/demo-jwks.json").read_text())
    key = jwks["keys"][0]
    secret = base64.urlsafe_b64decode(key["k"] + "=" * (-len(key["k"]) % 4))
    claims = {"iss": "https://issuer.demo", "aud": "vectordb", "sub": user, "exp": int(time.time()) + 3600}
    claims.update(USERS[user])
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key["kid"]}).encode())
    body = b64url(json.dumps(claims).encode())
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(sig)}"


def call(url: str, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")


def seed(chroma: str) -> str:
    col = call(f"{chroma}{BASE}/collections", {"name": "docs", "get_or_create": True})
    call(
        f"{chroma}{BASE}/collections/{col['id']}/upsert",
        {
            "ids": [r[0] for r in RECORDS],
            "embeddings": [r[1] for r in RECORDS],
            "metadatas": [r[2] for r in RECORDS],
            "documents": [r[3] for r in RECORDS],
        },
    )
    return col["id"]


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "seed":
        print(seed(sys.argv[2]))
    elif len(sys.argv) == 3 and sys.argv[1] == "token" and sys.argv[2] in USERS:
        print(token(sys.argv[2]))
    else:
        sys.exit(__doc__)
