//! `approval-service`: the service where people approve or deny high-stakes tool calls held
//! by the approval-gate filter, and follow up answers a guard could not give (the review
//! queue that a policy's `fallback.escalate` fills). REST API for the filters, web console for
//! approvers, SQLite store. Contract: `docs/approval-api.md`.
//!
//! ```text
//! approval-service --db /var/lib/approvals.db --client-token "$CLIENT_TOKEN" \
//!     --approver-token 'ops:approver+pii:s3cret' --pii-roles pii
//! ```
//!
//! Prints `approval-service listening on ADDR` when ready; stops on SIGINT/SIGTERM.

mod api;
mod auth;
mod console;
mod excerpt;
mod http;
mod reviews;
mod server;
mod store;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;

use crate::auth::{split_roles, Approver, Auth};
use crate::excerpt::Masker;
use crate::server::State;
use crate::store::Store;

const DEFAULT_ADDR: &str = "127.0.0.1:18090";
const USAGE: &str = "usage: approval-service --db PATH [--addr HOST:PORT] [--client-token TOKEN]
       [--approver-token NAME:ROLES:TOKEN]... [--pii-roles ROLE,ROLE] [--trust-identity-headers]
  --db                      SQLite database file (created if missing)
  --addr                    listen address (default 127.0.0.1:18090)
  --client-token            token the filter sends in x-approval-client-token
                            (without it the filter endpoints are open: loopback demos only)
  --approver-token          an approver: NAME:ROLE1+ROLE2:TOKEN (repeatable)
  --pii-roles               roles that see the unmasked conversation excerpt
  --trust-identity-headers  take x-approver / x-approver-roles from an authenticating proxy";

struct Args {
    addr: SocketAddr,
    db: PathBuf,
    client_token: Option<String>,
    approvers: Vec<(Approver, String)>,
    pii_roles: Vec<String>,
    trust_identity_headers: bool,
}

/// A usage error (exit 2) or a request for help.
enum ArgsError {
    Help,
    Usage(String),
}

fn parse_approver(v: &str) -> Result<(Approver, String), String> {
    let mut parts = v.splitn(3, ':');
    let (Some(name), Some(roles), Some(token)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!(
            "--approver-token: expected NAME:ROLES:TOKEN, got {} part(s)",
            v.split(':').count().min(3)
        ));
    };
    if name.is_empty() || name.len() > 128 {
        return Err("--approver-token: NAME must be 1..=128 characters".to_owned());
    }
    if token.len() < 8 {
        return Err(format!(
            "--approver-token: the token of {name:?} is shorter than 8 characters"
        ));
    }
    Ok((
        Approver {
            name: name.to_owned(),
            roles: split_roles(roles),
        },
        token.to_owned(),
    ))
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, ArgsError> {
    let mut addr = DEFAULT_ADDR.to_owned();
    let mut db = None;
    let mut client_token = None;
    let mut approvers: Vec<(Approver, String)> = Vec::new();
    let mut pii_roles = Vec::new();
    let mut trust_identity_headers = false;
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = || -> Result<String, ArgsError> {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| ArgsError::Usage(format!("option {flag} needs a value")))
        };
        match flag.as_str() {
            "-h" | "--help" => return Err(ArgsError::Help),
            "--addr" => addr = value()?,
            "--db" => db = Some(PathBuf::from(value()?)),
            "--client-token" => {
                let v = value()?;
                if v.is_empty() {
                    return Err(ArgsError::Usage("--client-token: empty token".to_owned()));
                }
                client_token = Some(v);
            }
            "--approver-token" => {
                let (approver, token) = parse_approver(&value()?).map_err(ArgsError::Usage)?;
                if approvers.iter().any(|(_, t)| *t == token) {
                    return Err(ArgsError::Usage(format!(
                        "--approver-token: the token of {:?} is already used by another approver",
                        approver.name
                    )));
                }
                approvers.push((approver, token));
            }
            "--pii-roles" => pii_roles.extend(split_roles(&value()?)),
            "--trust-identity-headers" => {
                if inline.is_some() {
                    return Err(ArgsError::Usage(
                        "--trust-identity-headers takes no value".to_owned(),
                    ));
                }
                trust_identity_headers = true;
            }
            other => return Err(ArgsError::Usage(format!("unknown argument {other:?}"))),
        }
    }
    let addr = addr
        .parse()
        .map_err(|_| ArgsError::Usage(format!("--addr: {addr:?} is not HOST:PORT")))?;
    let db = db.ok_or_else(|| ArgsError::Usage("--db PATH is required".to_owned()))?;
    Ok(Args {
        addr,
        db,
        client_token,
        approvers,
        pii_roles,
        trust_identity_headers,
    })
}

async fn stop_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT")?,
        _ = term.recv() => {}
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(ArgsError::Help) => {
            println!("{USAGE}");
            return std::process::ExitCode::SUCCESS;
        }
        Err(ArgsError::Usage(m)) => {
            eprintln!("approval-service: {m}\n{USAGE}");
            return std::process::ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("approval-service: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let store = Store::open(&args.db)?;
    let auth = Auth::new(
        args.client_token,
        args.approvers,
        args.pii_roles,
        args.trust_identity_headers,
    )?;
    let masker = Masker::new()?;
    let state = Arc::new(State::new(store, auth, masker));
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("binding {}", args.addr))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let (shutdown, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(server::serve(listener, state, rx));
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "approval-service listening on {addr}")?;
        out.flush()?;
    }
    let stopped = stop_signal().await;
    let _ = shutdown.send(true);
    let _ = task.await;
    stopped
}
