//! `make oci`'s push (scripts/oci.sh → scripts/oci.py) against a real registry: Debian's
//! `docker-registry` (installed by scripts/setup.sh) on a free loopback port with its own config
//! and a temporary storage directory. Every module the Makefile's FILTERS and COMBINED build is
//! pushed, then pulled back through the Registry API v2 and checked the way Istio's agent reads
//! it (pkg/wasm/imagefetcher.go: an OCI manifest, exactly two layers, one of them
//! `application/vnd.module.wasm.content.layer.v1+wasm` holding the raw module), with the manifest
//! digest (what WasmPlugin `sha256` pins) agreeing across the script's output, digests.json, the
//! served bytes and `Docker-Content-Digest`, and unchanged by a second push.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use anyhow::{anyhow, bail, Context, Result};
use e2e::{repo_root, Client, Resp, WAIT};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const WASM_CONFIG: &str = "application/vnd.module.wasm.config.v1+json";
const WASM_CONTENT: &str = "application/vnd.module.wasm.content.layer.v1+wasm";
const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
/// The workspace version: the default tag.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Basic-auth user of the registry with auth: password `oci-test-password`, bcrypt cost 4
/// (docker-registry's htpasswd file takes bcrypt only; the low cost keeps each request fast).
const HTPASSWD: &str = "ci:$2b$04$2nEhqUQh1uc.dS6B5hsEG.uBmU6pLd7N75.fhCQ3mHD7pHo/sYcyu\n";
const PASSWORD: &str = "oci-test-password";

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn sha256(data: &[u8]) -> String {
    let d = Sha256::digest(data);
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The filter names of the Makefile's `FILTERS` and `COMBINED`, in that order: what `make oci`
/// pushes.
fn makefile_filters() -> Result<Vec<String>> {
    let makefile = std::fs::read_to_string(repo_root().join("Makefile"))?;
    let mut names = Vec::new();
    for var in ["FILTERS", "COMBINED"] {
        let line = makefile
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{var} :=")))
            .ok_or_else(|| anyhow!("Makefile has no `{var} :=` line: update this test"))?;
        names.extend(line.split_whitespace().map(str::to_string));
    }
    Ok(names)
}

/// A docker-registry on a free loopback port; killed (its files removed unless the test failed)
/// on drop.
struct Registry {
    child: Option<Child>,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Registry {
    /// Start one, with Basic auth (user `ci`) when `auth` is true.
    async fn start(auth: bool) -> Result<Registry> {
        if !Path::new(REGISTRY_BIN).is_file() {
            bail!(
                "{REGISTRY_BIN} not found: run scripts/setup.sh (or `make setup`), which installs \
                 Debian's docker-registry package"
            );
        }
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!("guard-oci-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: e2e-oci-test\n",
            dir.join("data").display()
        );
        if auth {
            std::fs::write(dir.join("htpasswd"), HTPASSWD)?;
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: e2e\n    path: {}\n",
                dir.join("htpasswd").display()
            ));
        }
        std::fs::write(dir.join("config.yml"), config)?;
        let log = std::fs::File::create(dir.join("registry.log"))?;
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting docker-registry")?;
        let mut r = Registry {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        };
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = r.child.as_mut().map(Child::try_wait).transpose()?.flatten() {
                bail!("docker-registry exited: {status}\n{}", r.log());
            }
            // 200 without auth, 401 with: either way the API answers.
            if let Ok(resp) = r.client().get("/v2/").send().await {
                if resp.status == 200 || (auth && resp.status == 401) {
                    return Ok(r);
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "docker-registry did not answer /v2/ within {WAIT:?}\n{}",
                    r.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn name(&self) -> String {
        self.addr.to_string()
    }

    fn client(&self) -> Client {
        Client::new(self.addr)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    /// GET through the registry API, with Basic credentials when given.
    async fn get(&self, path: &str, accept: &str, auth: Option<&str>) -> Result<Resp> {
        let mut req = self.client().get(path).header("accept", accept);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await?;
        if r.status != 200 {
            bail!("GET {path}: {} {}", r.status, r.text());
        }
        Ok(r)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- docker-registry log ({}) ---\n{}",
                self.dir.display(),
                self.log()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// One run of the script `make oci` runs.
struct Push {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Run scripts/oci.sh for `filters` with REGISTRY=`registry`, digests.json into `out`; `env`
/// adds variables (TAG and credentials are unset otherwise). Bounded by WAIT.
async fn push(
    registry: &str,
    out: &Path,
    filters: &[String],
    env: &[(&str, &str)],
) -> Result<Push> {
    let mut cmd = tokio::process::Command::new(repo_root().join("scripts/oci.sh"));
    cmd.args(filters)
        .env("REGISTRY", registry)
        .env("OCI_OUT", out)
        .env_remove("TAG")
        .env_remove("REGISTRY_USER")
        .env_remove("REGISTRY_PASSWORD")
        .env_remove("REGISTRY_INSECURE")
        .env_remove("WASM_DIR")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let output = tokio::time::timeout(WAIT, cmd.output())
        .await
        .map_err(|_| anyhow!("scripts/oci.sh did not finish within {WAIT:?}"))?
        .context("running scripts/oci.sh")?;
    Ok(Push {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

impl Push {
    /// `<filter> <image> <digest>` per line, checked to be exactly that shape.
    fn lines(&self) -> Result<BTreeMap<String, (String, String)>> {
        if !self.ok {
            bail!("scripts/oci.sh failed:\n{}{}", self.stdout, self.stderr);
        }
        self.stdout
            .lines()
            .map(|l| match l.split(' ').collect::<Vec<_>>()[..] {
                [name, image, digest] => Ok((name.into(), (image.into(), digest.into()))),
                _ => Err(anyhow!("unexpected output line {l:?}")),
            })
            .collect()
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Pull `name`'s image back and check it against the module on disk and what the push reported;
/// returns the manifest digest.
async fn check_image(
    reg: &Registry,
    name: &str,
    printed: &(String, String),
    digests: &Value,
    auth: Option<&str>,
) -> Result<String> {
    let wasm = std::fs::read(e2e::wasm(&name.replace('-', "_"))?)?;
    let image = format!("oci://{}/llm-guard/{name}:{VERSION}", reg.name());
    assert_eq!(printed.0, image, "{name}: printed image reference");

    let m = reg
        .get(
            &format!("/v2/llm-guard/{name}/manifests/{VERSION}"),
            MANIFEST,
            auth,
        )
        .await?;
    assert_eq!(
        m.header("content-type").as_deref(),
        Some(MANIFEST),
        "{name}"
    );
    let digest = sha256(&m.body);
    assert_eq!(
        m.header("docker-content-digest").as_deref(),
        Some(digest.as_str()),
        "{name}: Docker-Content-Digest vs sha256 of the served manifest"
    );
    assert_eq!(
        printed.1, digest,
        "{name}: printed digest vs served manifest"
    );

    let manifest: Value = serde_json::from_slice(&m.body)?;
    assert_eq!(manifest["schemaVersion"], 2, "{name}");
    assert_eq!(manifest["mediaType"], MANIFEST, "{name}");
    assert_eq!(manifest["config"]["mediaType"], WASM_CONFIG, "{name}");
    // Istio's *oci* variant: exactly two layers, the runtime config and the raw module.
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 2, "{name}: layers {layers:?}");
    assert_eq!(layers[0]["mediaType"], WASM_CONFIG, "{name}");
    assert_eq!(layers[0]["digest"], manifest["config"]["digest"], "{name}");
    assert_eq!(layers[1]["mediaType"], WASM_CONTENT, "{name}");
    assert_eq!(
        layers[1]["digest"],
        sha256(&wasm),
        "{name}: layer digest vs the .wasm"
    );
    assert_eq!(layers[1]["size"], wasm.len(), "{name}");

    let blob = reg
        .get(
            &format!("/v2/llm-guard/{name}/blobs/{}", sha256(&wasm)),
            "*/*",
            auth,
        )
        .await?;
    assert!(
        blob.body == wasm,
        "{name}: the layer blob is not the .wasm file"
    );

    let config_digest = manifest["config"]["digest"]
        .as_str()
        .expect("config digest");
    let config = reg
        .get(
            &format!("/v2/llm-guard/{name}/blobs/{config_digest}"),
            "*/*",
            auth,
        )
        .await?;
    assert_eq!(sha256(&config.body), config_digest, "{name}");
    assert_eq!(config.body.len(), manifest["config"]["size"], "{name}");
    assert_eq!(
        serde_json::from_slice::<Value>(&config.body)?,
        json!({"type": "envoy_proxy", "abiVersions": ["v0.2.1"], "config": {"rootIds": [name]}}),
        "{name}: runtime config"
    );

    // Pinned by digest (oci://…@sha256:…) the registry serves the same bytes.
    let by_digest = reg
        .get(
            &format!("/v2/llm-guard/{name}/manifests/{digest}"),
            MANIFEST,
            auth,
        )
        .await?;
    assert!(
        by_digest.body == m.body,
        "{name}: manifest by digest differs"
    );

    assert_eq!(
        digests[name],
        json!({"image": image, "digest": digest, "layer_digest": sha256(&wasm), "size": wasm.len()}),
        "{name}: digests.json"
    );
    Ok(digest)
}

#[tokio::test]
async fn every_module_pushes_as_an_istio_wasm_image_with_a_stable_digest() -> Result<()> {
    let reg = Registry::start(false).await?;
    let filters = makefile_filters()?;
    assert_eq!(filters.len(), 7, "FILTERS + COMBINED: {filters:?}");
    let out = reg.dir.join("out");

    let first = push(&reg.name(), &out, &filters, &[]).await?;
    let lines = first.lines()?;
    assert_eq!(
        lines.keys().cloned().collect::<Vec<_>>(),
        {
            let mut f = filters.clone();
            f.sort();
            f
        },
        "one line per filter:\n{}",
        first.stdout
    );
    let digests = read_json(&out.join("digests.json"))?;
    assert_eq!(
        digests.as_object().map(|o| o.len()),
        Some(filters.len()),
        "digests.json: {digests}"
    );
    let mut pinned = BTreeMap::new();
    for name in &filters {
        let d = check_image(&reg, name, &lines[name], &digests, None).await?;
        pinned.insert(name.clone(), d);
    }
    // Different modules, different images.
    let distinct: std::collections::BTreeSet<_> = pinned.values().collect();
    assert_eq!(distinct.len(), filters.len(), "{pinned:?}");

    // Again: same output, same digests.json, the tag still on the same manifest.
    let first_json = std::fs::read(out.join("digests.json"))?;
    let second = push(&reg.name(), &out, &filters, &[]).await?;
    assert_eq!(second.lines()?, lines, "a second push changed the output");
    assert!(
        std::fs::read(out.join("digests.json"))? == first_json,
        "a second push changed digests.json"
    );
    for name in &filters {
        let d = check_image(&reg, name, &lines[name], &digests, None).await?;
        assert_eq!(d, pinned[name], "{name}");
    }
    Ok(())
}

#[tokio::test]
async fn tag_and_basic_auth_come_from_the_environment() -> Result<()> {
    let reg = Registry::start(true).await?;
    let filters = vec!["llm-telemetry".to_string()];
    let out = reg.dir.join("out");

    let anonymous = push(&reg.name(), &out, &filters, &[]).await?;
    assert!(
        !anonymous.ok,
        "pushed without credentials: {}",
        anonymous.stdout
    );
    assert!(
        anonymous
            .stderr
            .contains("set REGISTRY_USER and REGISTRY_PASSWORD"),
        "{}",
        anonymous.stderr
    );
    assert!(!out.join("digests.json").exists());

    let wrong = push(
        &reg.name(),
        &out,
        &filters,
        &[("REGISTRY_USER", "ci"), ("REGISTRY_PASSWORD", "nope")],
    )
    .await?;
    assert!(!wrong.ok, "pushed with a wrong password");
    assert!(
        wrong.stderr.contains("credentials rejected"),
        "{}",
        wrong.stderr
    );

    let pushed = push(
        &reg.name(),
        &out,
        &filters,
        &[
            ("REGISTRY_USER", "ci"),
            ("REGISTRY_PASSWORD", PASSWORD),
            ("TAG", "e2e-1"),
        ],
    )
    .await?;
    let lines = pushed.lines()?;
    let (image, digest) = &lines["llm-telemetry"];
    assert_eq!(
        image,
        &format!("oci://{}/llm-guard/llm-telemetry:e2e-1", reg.name())
    );
    let basic = format!("Basic {}", b64(&format!("ci:{PASSWORD}")));
    let m = reg
        .get(
            "/v2/llm-guard/llm-telemetry/manifests/e2e-1",
            MANIFEST,
            Some(&basic),
        )
        .await?;
    assert_eq!(&sha256(&m.body), digest);
    assert_eq!(
        read_json(&out.join("digests.json"))?["llm-telemetry"]["digest"],
        *digest
    );
    Ok(())
}

#[tokio::test]
async fn bad_registry_or_tag_fails_with_a_message() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("guard-oci-bad-{}", std::process::id()));
    let filters = vec!["llm-telemetry".to_string()];
    // Nothing listens on this port (and it is not the default, so no registry is started).
    let closed = format!("127.0.0.1:{}", free_port()?);
    let r = push(&closed, &dir, &filters, &[]).await?;
    assert!(
        !r.ok && r.stderr.contains("Connection refused"),
        "{}",
        r.stderr
    );
    assert!(r.stdout.is_empty(), "{}", r.stdout);

    let r = push(&closed, &dir, &filters, &[("TAG", "bad tag")]).await?;
    assert!(
        !r.ok && r.stderr.contains("not a valid OCI tag"),
        "{}",
        r.stderr
    );
    let r = push("http://example.com", &dir, &filters, &[]).await?;
    assert!(
        !r.ok && r.stderr.contains("host[:port][/namespace]"),
        "{}",
        r.stderr
    );
    let r = push(&closed, &dir, &["no-such-filter".to_string()], &[]).await?;
    assert!(!r.ok && r.stderr.contains("make wasm"), "{}", r.stderr);
    assert!(!dir.join("digests.json").exists());
    Ok(())
}

fn b64(s: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}
