//! Running tasks in-process behind an in-memory broker: unit tests of code that dispatches
//! and waits on tasks, with no Redis.
//!
//! [`in_memory_broker`] gives a [`Broker`] whose `.kiq()` runs the task on the current Tokio
//! runtime through the same execution path as a worker (timeouts, panics caught, retries with
//! their backoff, middleware, chains and groups), and whose handles wait on in-memory
//! records. The `kiq` facade's `kiq::testing::broker()` is this with the linked tasks.

use std::sync::{Arc, OnceLock};

use kiq_broker::envelope::now_ms;
use kiq_broker::{Broker, Delivery, LocalRunner, Write};

use crate::execute::Executor;
use crate::middleware::Middleware;
use crate::registry::Registry;

/// The consumer name in-memory runs report in task records.
pub const LOCAL_CONSUMER: &str = "in-memory";

/// Runs an in-memory broker's messages in this process.
pub struct LocalWorker {
    registry: Arc<Registry>,
    layers: Vec<Arc<dyn Middleware>>,
    executor: OnceLock<Arc<Executor>>,
}

impl LocalWorker {
    /// Runs `registry`'s tasks.
    pub fn new(registry: Registry) -> Self {
        Self {
            registry: Arc::new(registry),
            layers: crate::middleware::installed(),
            executor: OnceLock::new(),
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

    fn executor(&self, broker: &Broker) -> Arc<Executor> {
        self.executor
            .get_or_init(|| {
                Arc::new(Executor::new(
                    self.registry.clone(),
                    broker.consumer(LOCAL_CONSUMER),
                    self.layers.clone(),
                    std::time::Duration::from_secs(1),
                ))
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
        let executor = self.executor(broker);
        let broker = broker.clone();
        rt.spawn(async move {
            if let Some(due) = due_ms {
                let wait = due.saturating_sub(now_ms());
                tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
            }
            let precancelled = broker
                .wire()
                .decode_envelope(&payload)
                .map(|e| broker.memory_cancelled(&e.id))
                .unwrap_or(false);
            let delivery = Delivery {
                lane,
                stream_id: String::new(),
                payload: Some(payload),
                deliveries: 1,
            };
            let completion = executor.execute(delivery, precancelled).await;
            if let Err(e) = executor
                .consumer()
                .write(&[Write::Completion(completion)])
                .await
            {
                tracing::error!(error = %e, "in-memory completion failed");
            }
        });
    }

    fn cancel_running(&self, id: &str) -> bool {
        self.executor.get().is_some_and(|e| e.running.cancel(id))
    }
}

/// An in-memory broker running `registry`'s tasks (see the module docs).
pub fn in_memory_broker(registry: Registry) -> Broker {
    LocalWorker::new(registry).into_broker()
}
