//! What a worker is told between reads: new delayed work on its lanes, cancellations, and
//! queue control (pause, resume, quiet).

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::consumer::delivery::Notice;

use super::RedisBackend;

impl RedisBackend {
    /// Subscribes to the wake channels of `lanes` and to cancellations, on a connection of its
    /// own, until `stop`: notices arrive on the returned channel. The subscription is
    /// re-established after a connection loss (each time, [`Notice::Resubscribed`] says that
    /// anything announced meanwhile is unknown).
    pub(crate) fn notices(
        &self,
        lanes: &[String],
        stop: CancellationToken,
    ) -> mpsc::Receiver<Notice> {
        let (tx, rx) = mpsc::channel(1024);
        let target = self.target().clone();
        let cancel_channel = self.keys.cancel_channel();
        let mut channels: Vec<String> = lanes.iter().map(|l| self.keys.wake_channel(l)).collect();
        channels.push(cancel_channel.clone());
        let control_channel = self.keys.control_channel();
        channels.push(control_channel.clone());
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            // Which server to subscribe through: on a cluster, any node hears every
            // (non-sharded) PUBLISH, so a lost node is replaced by the next seed.
            let mut attempt = 0usize;
            while !stop.is_cancelled() {
                let client = target.node_client(attempt).await;
                attempt = attempt.wrapping_add(1);
                let pubsub = match client {
                    Ok(c) => c
                        .get_async_pubsub()
                        .await
                        .map_err(crate::BrokerError::redis),
                    Err(e) => Err(e),
                };
                let mut pubsub: redis::aio::PubSub = match pubsub {
                    Ok(p) => p,
                    Err(_) => {
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = stop.cancelled() => return,
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                };
                if pubsub.subscribe(&channels).await.is_err() {
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
                backoff = Duration::from_millis(100);
                if tx.send(Notice::Resubscribed).await.is_err() {
                    return;
                }
                let mut messages = pubsub.into_on_message();
                loop {
                    tokio::select! {
                        m = messages.next() => match m {
                            Some(m) => {
                                let channel = m.get_channel_name();
                                let notice = if channel == cancel_channel {
                                    Notice::Cancelled(
                                        String::from_utf8_lossy(m.get_payload_bytes()).into_owned(),
                                    )
                                } else if channel == control_channel {
                                    Notice::Control
                                } else {
                                    Notice::Wake
                                };
                                if tx.send(notice).await.is_err() {
                                    return;
                                }
                            }
                            None => break,
                        },
                        _ = stop.cancelled() => return,
                    }
                }
            }
        });
        rx
    }
}
