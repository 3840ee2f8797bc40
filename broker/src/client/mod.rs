//! The producer's surface: the [`Broker`] handle, dispatch options ([`Kicker`]), task handles,
//! workflows and cancellation.

pub(crate) mod broker;
pub(crate) mod cancel;
pub(crate) mod dispatch;
pub(crate) mod dispatch_layer;
pub(crate) mod handle;
pub(crate) mod kicker;
pub mod workflow;

pub use broker::Broker;
pub use cancel::CancelOutcome;
pub use dispatch::{valid_queue_name, OutgoingMessage, RawDispatch};
pub use dispatch_layer::DispatchLayer;
pub use handle::TaskHandle;
pub use kicker::{Kicker, TaskSpec};
pub use workflow::{group, Call, Chain, Chord, Group, GroupHandle, Link};
