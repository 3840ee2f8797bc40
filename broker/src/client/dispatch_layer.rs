//! Middleware on the dispatch side: every message passes through the broker's dispatch layers
//! before it is encoded and sent.
//!
//! ```
//! use kiq_broker::{BrokerConfig, DispatchLayer, Envelope};
//!
//! /// Stamps every task with the service that sent it, and refuses tasks without a tenant.
//! struct Stamp;
//!
//! impl DispatchLayer for Stamp {
//!     fn on_dispatch(&self, envelope: &mut Envelope) -> Result<(), String> {
//!         if !envelope.labels.contains_key("tenant") {
//!             return Err("every task needs a tenant label".into());
//!         }
//!         envelope.labels.insert("sent_by".into(), "billing-api".into());
//!         Ok(())
//!     }
//! }
//!
//! let config = BrokerConfig::new("redis://127.0.0.1:6379").dispatch_layer(Stamp);
//! # let _ = config;
//! ```

use crate::envelope::Envelope;

/// A layer every dispatch passes through, in the order added to the
/// [`BrokerConfig`](crate::BrokerConfig). It may change the envelope (labels, queue,
/// priority, timeout) or refuse the dispatch with a reason, and then nothing is enqueued.
///
/// It runs synchronously on the producer's path, once per message (for `kiq_many`, once per
/// item), so it should be cheap.
pub trait DispatchLayer: Send + Sync + 'static {
    /// Sees and may change `envelope` before it is encoded; `Err(reason)` refuses it.
    fn on_dispatch(&self, envelope: &mut Envelope) -> Result<(), String>;
}

impl std::fmt::Debug for dyn DispatchLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DispatchLayer")
    }
}
