//! Release messages for [`Election::observe`](super::Election::observe): one pub/sub
//! connection per master, subscribed to the election's release channel, for as long as the
//! observer lives. A message only makes the observer read the leader now instead of at its next
//! interval; nothing depends on it arriving.

use std::time::Duration;

use futures::StreamExt;

use crate::endpoint::Endpoint;
use tokio::sync::mpsc;

/// Pause between two connection attempts to a master that is down.
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);

/// Starts listening on `channel` on every master of `urls`; the receiver gets a signal per
/// batch of messages. The listeners stop when the receiver is dropped (checked at least every
/// `RECONNECT_PAUSE` while a master is down, and at each message or reconnect otherwise).
pub(super) fn listen(
    endpoints: &[Endpoint],
    channel: String,
    connect_timeout: Duration,
) -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel(1);
    for endpoint in endpoints {
        // Through the endpoint, as every other connection: TLS and the builder's credentials.
        tokio::spawn(listener(
            endpoint.clone(),
            channel.clone(),
            connect_timeout,
            tx.clone(),
        ));
    }
    rx
}

async fn listener(
    endpoint: Endpoint,
    channel: String,
    connect_timeout: Duration,
    tx: mpsc::Sender<()>,
) {
    while !tx.is_closed() {
        let connected = tokio::time::timeout(connect_timeout, async {
            let mut pubsub = endpoint.pubsub(connect_timeout).await?;
            pubsub.subscribe(&channel).await.ok()?;
            Some(pubsub)
        })
        .await;
        let Ok(Some(pubsub)) = connected else {
            tokio::time::sleep(RECONNECT_PAUSE).await;
            continue;
        };
        let mut messages = pubsub.into_on_message();
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                msg = messages.next() => match msg {
                    // Full: a wake-up is already pending, which is all this needs to say.
                    Some(_) => { let _ = tx.try_send(()); }
                    None => break,
                },
            }
        }
    }
}
