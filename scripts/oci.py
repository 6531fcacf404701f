#!/usr/bin/env python3
"""Package built filters as Wasm OCI images (the *oci* variant Istio's agent pulls) and push them.

    python3 scripts/oci.py llm-telemetry schema-guard ...   # what `make oci` runs (via scripts/oci.sh)

For each filter NAME it reads target/wasm32-wasip1/release/<NAME with _>.wasm and pushes
REGISTRY/llm-guard/NAME:TAG through the Registry HTTP API v2 (monolithic blob upload POST + PUT,
manifest PUT), with the image layout `wasme` produced and Istio's agent (pkg/wasm/imagefetcher.go,
extractOCIArtifactImage) accepts: an OCI image manifest whose config is the runtime config
(`application/vnd.module.wasm.config.v1+json`) and whose two layers are that same runtime config and
the raw module (`application/vnd.module.wasm.content.layer.v1+wasm`). See docs/oci.md.

Everything in the image is a function of the .wasm bytes and the filter name (no timestamps), so a
rebuild of the same module gives the same manifest digest.

Prints one line per filter, `NAME oci://REGISTRY/llm-guard/NAME:TAG sha256:<manifest digest>`, and
writes OUT/digests.json. Environment (each also a flag):
  REGISTRY           host[:port][/namespace] (default 127.0.0.1:5000)
  TAG                image tag (default: the workspace version in Cargo.toml)
  OCI_OUT            output directory for digests.json (default target/oci)
  WASM_DIR           where the modules are (default target/wasm32-wasip1/release)
  REGISTRY_INSECURE  1: plain HTTP for a non-loopback registry (loopback always uses plain HTTP)
  REGISTRY_USER, REGISTRY_PASSWORD   credentials (Basic, or the Bearer token flow)
Exit status: 0 when every image is pushed, 1 on a push or registry error, 2 on bad usage.
"""

import argparse
import base64
import hashlib
import json
import os
import re
import sys
import tomllib
import urllib.error
import urllib.parse
import urllib.request

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.module.wasm.config.v1+json"
CONTENT_MEDIA_TYPE = "application/vnd.module.wasm.content.layer.v1+wasm"
# The proxy-wasm ABI our modules export (proxy-wasm 0.2.x: `proxy_abi_version_0_2_1`).
ABI_VERSION = "v0.2.1"
REPO_PREFIX = "llm-guard"
DEFAULT_REGISTRY = "127.0.0.1:5000"
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
REGISTRY_RE = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[a-z0-9]+([._-][a-z0-9]+)*)*$")
LOOPBACK = {"127.0.0.1", "localhost"}
TIMEOUT = 60


class PushError(Exception):
    pass


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode()


def workspace_version(root: str) -> str:
    with open(os.path.join(root, "Cargo.toml"), "rb") as f:
        cargo = tomllib.load(f)
    try:
        return cargo["workspace"]["package"]["version"]
    except KeyError:
        raise PushError("Cargo.toml has no [workspace.package] version") from None


def image(name: str, wasm: bytes) -> tuple[bytes, bytes]:
    """The runtime-config blob and the manifest bytes of one filter's image."""
    config = canonical(
        {
            "type": "envoy_proxy",
            "abiVersions": [ABI_VERSION],
            # The root id the shipped Envoy configs give the filter (envoy/*.yaml `root_id`).
            "config": {"rootIds": [name]},
        }
    )
    config_desc = {
        "mediaType": CONFIG_MEDIA_TYPE,
        "digest": sha256(config),
        "size": len(config),
        "annotations": {"org.opencontainers.image.title": "runtime-config.json"},
    }
    manifest = canonical(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": config_desc,
            "layers": [
                config_desc,
                {
                    "mediaType": CONTENT_MEDIA_TYPE,
                    "digest": sha256(wasm),
                    "size": len(wasm),
                    "annotations": {
                        "org.opencontainers.image.title": name.replace("-", "_") + ".wasm"
                    },
                },
            ],
            "annotations": {
                "module.wasm.runtime/type": "envoy_proxy",
                "module.wasm.runtime/abi_version": ABI_VERSION,
            },
        }
    )
    return config, manifest


class Registry:
    """A Registry HTTP API v2 client: plain HTTP on loopback (or REGISTRY_INSECURE=1), else HTTPS
    with the system's CA store; anonymous, Basic, or Bearer (token flow) with REGISTRY_USER /
    REGISTRY_PASSWORD."""

    def __init__(self, registry: str, insecure: bool, user: str | None, password: str | None):
        host, _, namespace = registry.partition("/")
        hostname = host.split(":")[0]
        scheme = "http" if insecure or hostname in LOOPBACK else "https"
        self.base = f"{scheme}://{host}"
        self.namespace = namespace
        self.user, self.password = user, password
        self.auth: str | None = None  # the Authorization header that worked last

    def _basic(self) -> str | None:
        if self.user is None:
            return None
        raw = f"{self.user}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _token(self, challenge: str) -> str:
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.pop("realm", None)
        if not realm:
            raise PushError(f"registry auth challenge without a realm: {challenge}")
        query = urllib.parse.urlencode({k: v for k, v in params.items() if k in ("service", "scope")})
        req = urllib.request.Request(realm + ("?" + query if query else ""))
        if (basic := self._basic()) is not None:
            req.add_header("Authorization", basic)
        try:
            with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
                body = json.load(r)
        except (urllib.error.URLError, ValueError) as e:
            raise PushError(f"token request to {realm} failed: {e}") from None
        token = body.get("token") or body.get("access_token")
        if not token:
            raise PushError(f"token response from {realm} has no token")
        return "Bearer " + token

    def request(self, method: str, url: str, body: bytes | None = None, headers=None):
        """Send one request (answering one auth challenge); returns (status, headers, body)."""
        if not url.startswith("http"):
            url = urllib.parse.urljoin(self.base, url)
        for attempt in range(2):
            req = urllib.request.Request(url, data=body, method=method)
            for k, v in (headers or {}).items():
                req.add_header(k, v)
            if self.auth:
                req.add_header("Authorization", self.auth)
            try:
                with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
                    return r.status, r.headers, r.read()
            except urllib.error.HTTPError as e:
                if e.code != 401:
                    return e.code, e.headers, e.read()
                challenge = e.headers.get("WWW-Authenticate", "")
                if attempt == 0 and challenge.lower().startswith("bearer"):
                    self.auth = self._token(challenge)
                elif attempt == 0 and challenge.lower().startswith("basic") and self.user:
                    self.auth = self._basic()
                elif self.user is None:
                    raise PushError(
                        f"{method} {url}: 401 unauthorized: set REGISTRY_USER and REGISTRY_PASSWORD"
                    ) from None
                else:
                    raise PushError(f"{method} {url}: 401 unauthorized: credentials rejected") from None
            except urllib.error.URLError as e:
                raise PushError(f"{method} {url}: {e.reason}") from None
            except OSError as e:
                raise PushError(f"{method} {url}: {e}") from None
        raise PushError(f"{method} {url}: 401 unauthorized: credentials rejected")

    def repo(self, name: str) -> str:
        return "/".join(p for p in (self.namespace, REPO_PREFIX, name) if p)

    def push_blob(self, repo: str, data: bytes) -> None:
        digest = sha256(data)
        status, _, _ = self.request("HEAD", f"/v2/{repo}/blobs/{digest}")
        if status == 200:
            return
        status, headers, body = self.request("POST", f"/v2/{repo}/blobs/uploads/", b"")
        location = headers.get("Location") if headers else None
        if status != 202 or not location:
            raise PushError(f"starting a blob upload to {repo}: HTTP {status} {body[:300]!r}")
        sep = "&" if "?" in location else "?"
        status, _, body = self.request(
            "PUT",
            f"{location}{sep}digest={urllib.parse.quote(digest)}",
            data,
            {"Content-Type": "application/octet-stream"},
        )
        if status != 201:
            raise PushError(f"uploading blob {digest} to {repo}: HTTP {status} {body[:300]!r}")

    def push_manifest(self, repo: str, tag: str, manifest: bytes) -> str:
        status, headers, body = self.request(
            "PUT",
            f"/v2/{repo}/manifests/{tag}",
            manifest,
            {"Content-Type": MANIFEST_MEDIA_TYPE},
        )
        if status != 201:
            raise PushError(f"putting the manifest of {repo}:{tag}: HTTP {status} {body[:300]!r}")
        served = headers.get("Docker-Content-Digest")
        if served and served != sha256(manifest):
            raise PushError(f"{repo}:{tag}: registry says digest {served}, expected {sha256(manifest)}")
        return sha256(manifest)


def main() -> int:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("filters", nargs="+", metavar="NAME", help="filter (crate) names, e.g. pii-redact")
    ap.add_argument("--registry", default=os.environ.get("REGISTRY") or DEFAULT_REGISTRY)
    ap.add_argument("--tag", default=os.environ.get("TAG") or None)
    ap.add_argument("--out", default=os.environ.get("OCI_OUT") or os.path.join(root, "target/oci"))
    ap.add_argument(
        "--wasm-dir",
        default=os.environ.get("WASM_DIR") or os.path.join(root, "target/wasm32-wasip1/release"),
    )
    args = ap.parse_args()

    def usage(msg: str) -> int:
        print(f"oci: {msg}", file=sys.stderr)
        return 2

    if not REGISTRY_RE.match(args.registry):
        return usage(f"REGISTRY must be host[:port][/namespace], got {args.registry!r}")
    try:
        tag = args.tag or workspace_version(root)
    except PushError as e:
        return usage(str(e))
    if not TAG_RE.match(tag):
        return usage(f"TAG {tag!r} is not a valid OCI tag")
    modules = {}
    for name in args.filters:
        if not re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", name):
            return usage(f"bad filter name {name!r}")
        path = os.path.join(args.wasm_dir, name.replace("-", "_") + ".wasm")
        try:
            with open(path, "rb") as f:
                modules[name] = f.read()
        except OSError as e:
            return usage(f"{path}: {e.strerror}: build it with `make wasm`")
        if modules[name][:4] != b"\0asm":
            return usage(f"{path} is not a wasm module")

    reg = Registry(
        args.registry,
        os.environ.get("REGISTRY_INSECURE") == "1",
        os.environ.get("REGISTRY_USER"),
        os.environ.get("REGISTRY_PASSWORD"),
    )
    digests = {}
    try:
        for name, wasm in modules.items():
            config, manifest = image(name, wasm)
            repo = reg.repo(name)
            reg.push_blob(repo, config)
            reg.push_blob(repo, wasm)
            digest = reg.push_manifest(repo, tag, manifest)
            ref = f"oci://{args.registry}/{REPO_PREFIX}/{name}:{tag}"
            digests[name] = {
                "image": ref,
                "digest": digest,
                "layer_digest": sha256(wasm),
                "size": len(wasm),
            }
            print(f"{name} {ref} {digest}", flush=True)
    except PushError as e:
        print(f"oci: {e}", file=sys.stderr)
        return 1

    os.makedirs(args.out, exist_ok=True)
    out = os.path.join(args.out, "digests.json")
    with open(out + ".tmp", "w") as f:
        json.dump(digests, f, indent=2)
        f.write("\n")
    os.replace(out + ".tmp", out)
    shown = os.path.relpath(out)
    print(f"oci: wrote {out if shown.startswith('..') else shown}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
