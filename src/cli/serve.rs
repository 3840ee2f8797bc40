//! `taskctl serve`: the HTTP API, the dashboard and `/metrics`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::GlobalArgs;

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", env = "KIQ_LISTEN")]
    listen: String,
    /// The bearer token every API and metrics request must carry (at least 8 characters).
    #[arg(long, env = "KIQ_API_TOKEN", hide_env_values = true)]
    token: String,
}

pub(crate) async fn run(global: &GlobalArgs, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let broker = global.connect().await?;
    let tasks = kiq_worker::Registry::linked()
        .map(|r| {
            r.tasks()
                .into_iter()
                .map(|d| (d.name.to_string(), d.queue.to_string()))
                .collect()
        })
        .unwrap_or_default();
    let token = args.token.trim().to_string();
    let router = kiq_server::router(
        broker,
        kiq_server::ServerConfig::new(token.clone()).tasks(tasks),
    )
    .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("serving on http://{addr}/ (API under /api, metrics at /metrics)");
    println!(
        "{}",
        sign_in_line(addr, &token, std::io::stdout().is_terminal())
    );
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        kiq_worker::supervisor::termination_signal().await;
        on_signal.cancel();
    });
    kiq_server::serve(listener, router, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

/// The dashboard's sign-in link: the token rides in the fragment, which browsers never send to
/// the server, and the page takes it out of the address bar once read. Printed whole only on a
/// terminal, so the token does not end up in a log file or the journal.
fn sign_in_line(addr: SocketAddr, token: &str, terminal: bool) -> String {
    let host = if addr.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    };
    if terminal {
        format!("dashboard: http://{host}/#token={}", fragment_encode(token))
    } else {
        format!(
            "dashboard: http://{host}/#token=<the token> (the whole link is printed on a terminal only)"
        )
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn fragment_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sign_in_link_carries_the_token_in_the_fragment_on_a_terminal_only() {
        let addr: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(
            sign_in_line(addr, "a b&c#d%", true),
            "dashboard: http://127.0.0.1:8080/#token=a%20b%26c%23d%25"
        );
        let logged = sign_in_line(addr, "secret-token", false);
        assert!(!logged.contains("secret-token"), "{logged}");
    }
}
