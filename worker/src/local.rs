//! Running tasks in-process behind an in-memory broker: unit tests of code that dispatches
//! and waits on tasks, with no Redis.
//!
//! [`in_memory_broker`] gives a [`Broker`] whose `.kiq()` runs the task on the current Tokio
//! runtime through the same execution path as a worker (timeouts, panics caught, retries with
//! their backoff, middleware, chains and groups), and whose handles wait on in-memory
//! records. The `kiq` facade's `kiq::testing::broker()` is this with the linked tasks.

use std::sync::{Arc, OnceLock};

use kiq_broker::envelope::now_ms;
use kiq_broker::{codec, Broker, Delivery, Envelope, LocalRunner};

use crate::execute::{execute, Running};
use crate::middleware::Middleware;
use crate::registry::Registry;

/// The consumer name in-memory runs report in task records.
pub const LOCAL_CONSUMER: &str = "in-memory";

/// Runs an in-memory broker's messages in this process.
pub struct LocalWorker {
    registry: Arc<Registry>,
    layers: Vec<Arc<dyn Middleware>>,
    running: OnceLock<Arc<Running>>,
}

impl LocalWorker {
    /// Runs `registry`'s tasks.
    pub fn new(registry: Registry) -> Self {
        Self {
            registry: Arc::new(registry),
            layers: crate::middleware::installed(),
            running: OnceLock::new(),
        }
    }

    /// Wraps every task in `layer` (after the process-wide ones).
    pub fn layer(mut self, layer: impl Middleware) -> Self {
        self.layers.push(Arc::new(layer));
        self
    }

    /// An in-memory broker whose tasks this runs.
    pub fn into_broker(self) -> Broker {
        Broker::in_memory(Arc::new(self))
    }

    fn running(&self, broker: &Broker) -> Arc<Running> {
        self.running
            .get_or_init(|| {
                let mut r = Running::new(std::time::Duration::from_secs(1), Some(broker.clone()));
                r.layers = self.layers.clone();
                Arc::new(r)
            })
            .clone()
    }
}

impl LocalRunner for LocalWorker {
    fn submit(&self, broker: &Broker, lane: String, payload: Vec<u8>, due_ms: Option<u64>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::error!("an in-memory broker needs a Tokio runtime to run tasks; task not run");
            return;
        };
        let running = self.running(broker);
        let registry = self.registry.clone();
        let broker = broker.clone();
        rt.spawn(async move {
            if let Some(due) = due_ms {
                let wait = due.saturating_sub(now_ms());
                tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
            }
            let precancelled = codec::decode::<Envelope>(&payload)
                .map(|e| broker.memory_cancelled(&e.id))
                .unwrap_or(false);
            let delivery = Delivery {
                queue: lane,
                stream_id: String::new(),
                payload: Some(payload),
                deliveries: 1,
            };
            let completion =
                execute(&registry, LOCAL_CONSUMER, delivery, &running, precancelled).await;
            if let Err(e) = broker.complete(&[completion]).await {
                tracing::error!(error = %e, "in-memory completion failed");
            }
        });
    }

    fn cancel_running(&self, id: &str) -> bool {
        self.running.get().is_some_and(|r| r.cancel(id))
    }
}

/// An in-memory broker running `registry`'s tasks (see the module docs).
pub fn in_memory_broker(registry: Registry) -> Broker {
    LocalWorker::new(registry).into_broker()
}
