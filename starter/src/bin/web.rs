//! One process that serves HTTP and runs tasks: an axum app dispatching to kiq, a kiq worker
//! on the same Tokio runtime, and kiq's own API and dashboard mounted under `/kiq`.
//!
//! ```sh
//! KIQ_REDIS_URL=redis://127.0.0.1:6379 KIQ_API_TOKEN=change-me-please cargo run --bin starter-web
//! curl -X POST 'http://127.0.0.1:3000/add?a=2&b=3'     # {"task_id":"…","sum":5}
//! ```
//!
//! Ctrl-C (or SIGTERM) stops the HTTP server and the worker: in-flight tasks finish first.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use kiq_starter::add;

#[derive(Deserialize)]
struct AddQuery {
    a: i64,
    b: i64,
}

#[derive(Serialize)]
struct AddReply {
    task_id: String,
    sum: i64,
}

/// Dispatches `add` and waits for its result (a real app might return the id at once).
async fn add_handler(
    State(broker): State<kiq::Broker>,
    Query(q): Query<AddQuery>,
) -> Result<Json<AddReply>, (StatusCode, String)> {
    let handle = add::kiq(&broker, q.a, q.b)
        .await
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let task_id = handle.id().to_string();
    let sum = handle
        .wait_result(Duration::from_secs(10))
        .await
        .map_err(|e| (StatusCode::GATEWAY_TIMEOUT, e.to_string()))?;
    Ok(Json(AddReply { task_id, sum }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("KIQ_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let token = std::env::var("KIQ_API_TOKEN").unwrap_or_else(|_| "change-me-please".into());
    let addr = std::env::var("STARTER_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let broker = kiq::Broker::connect(&url).await?;

    // The worker: this crate's tasks, read from their queues, until `shutdown` fires.
    let shutdown = CancellationToken::new();
    let registry = kiq::Registry::linked()?;
    let worker = kiq::Worker::builder(broker.clone(), registry).build();
    let worker = tokio::spawn(worker.run(shutdown.clone()));

    let kiq_api = kiq::server::router(broker.clone(), kiq::server::ServerConfig::new(token))?;
    let app = Router::new()
        .route("/add", post(add_handler))
        .with_state(broker)
        .nest("/kiq", kiq_api);

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let stop = shutdown.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            wait_for_signal().await;
            stop.cancel();
        })
        .await?;
    let report = worker.await??;
    println!("worker stopped: {report:?}");
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = ctrl_c => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
