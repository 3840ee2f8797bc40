//! `taskctl serve`: the HTTP API, the dashboard and `/metrics`.

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
    let router = kiq_server::router(
        broker,
        kiq_server::ServerConfig::new(args.token).tasks(tasks),
    )
    .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("serving on http://{addr}/ (API under /api, metrics at /metrics)");
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        kiq_worker::supervisor::termination_signal().await;
        on_signal.cancel();
    });
    kiq_server::serve(listener, router, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}
