//! `demo-upstream` binary: `demo-upstream [--addr 127.0.0.1:18080] [--chunk-size N]
//! [--chunk-delay-ms N]` (address also from `DEMO_UPSTREAM_ADDR`). Prints
//! `demo-upstream listening on ADDR` when ready; stops cleanly on SIGINT/SIGTERM.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context as _};
use demo_upstream::{Options, Upstream};

const DEFAULT_ADDR: &str = "127.0.0.1:18080";
const USAGE: &str =
    "usage: demo-upstream [--addr HOST:PORT] [--chunk-size BYTES] [--chunk-delay-ms MS]
  --addr            listen address (default 127.0.0.1:18080, or $DEMO_UPSTREAM_ADDR)
  --chunk-size      bytes per SSE body chunk, 0 = whole stream at once (default 16)
  --chunk-delay-ms  pause between SSE body chunks (default 0)";

struct Args {
    addr: SocketAddr,
    options: Options,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> anyhow::Result<Option<Args>> {
    let env_addr = std::env::var("DEMO_UPSTREAM_ADDR").ok();
    let mut addr = env_addr.unwrap_or_else(|| DEFAULT_ADDR.to_owned());
    let mut options = Options::default();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        let mut value = || -> anyhow::Result<String> {
            match inline.clone().or_else(|| args.next()) {
                Some(v) => Ok(v),
                None => bail!("option {flag} needs a value\n{USAGE}"),
            }
        };
        match flag.as_str() {
            "--addr" => addr = value()?,
            "--chunk-size" => {
                let v = value()?;
                options.chunk_size = v
                    .parse()
                    .with_context(|| format!("--chunk-size: {v:?} is not a byte count"))?;
            }
            "--chunk-delay-ms" => {
                let v = value()?;
                let ms: u64 = v
                    .parse()
                    .with_context(|| format!("--chunk-delay-ms: {v:?} is not a number"))?;
                options.chunk_delay = Duration::from_millis(ms);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let addr = addr
        .parse()
        .with_context(|| format!("listen address {addr:?} is not HOST:PORT"))?;
    Ok(Some(Args { addr, options }))
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
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo-upstream: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let Some(args) = parse_args(std::env::args().skip(1))? else {
        println!("{USAGE}");
        return Ok(());
    };
    let upstream = Upstream::start(args.addr, args.options).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "demo-upstream listening on {}", upstream.addr())?;
        out.flush()?;
    }
    let stopped = stop_signal().await;
    upstream.shutdown().await;
    stopped
}
