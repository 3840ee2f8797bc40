pub use kiq_broker::*;
