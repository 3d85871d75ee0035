//! A `Failed` cluster waits here for an operator retry (`POST
//! /api/v1/clusters/{id}/bootstrap/retry`, `core::cluster::retry`) instead of its task
//! ending: the retry is a write to the cluster store, so polling the store is enough
//! and needs no channel from the API to the workflow tasks (a retry is rare; one
//! small read per poll is cheap).

use std::time::Duration;

use provisioner_core::cluster::ClusterStore;
use provisioner_core::cluster::bootstrap::Step;
use tokio_util::sync::CancellationToken;

/// Waits until `cluster`'s record is no longer `Failed`, polling every `poll`.
/// `true` when it was retried, `false` on shutdown. Store errors are logged once and
/// polled through.
pub async fn until_retried(
    store: &dyn ClusterStore,
    cluster: &str,
    poll: Duration,
    shutdown: &CancellationToken,
) -> bool {
    let mut told = false;
    loop {
        match store.load(cluster) {
            Ok(Some(s)) if s.step == Step::Failed => {}
            Ok(_) => return true,
            Err(e) if !told => {
                tracing::warn!(cluster = %cluster, error = %e, "reading the cluster store while waiting for a retry");
                told = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            () = shutdown.cancelled() => return false,
            () = tokio::time::sleep(poll) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use provisioner_core::cluster::MemClusterStore;
    use provisioner_core::cluster::bootstrap::BootstrapState;
    use time::OffsetDateTime;

    use super::*;

    #[tokio::test]
    async fn wakes_on_a_retry_and_stops_on_shutdown() {
        let store = Arc::new(MemClusterStore::default());
        let mut s = BootstrapState::new("lab", OffsetDateTime::UNIX_EPOCH);
        s.step = Step::Failed;
        s.failed_step = Some(Step::WaitApi);
        s.failure = Some("timed out".into());
        store.save(&s, &[]).unwrap();
        let shutdown = CancellationToken::new();
        let poll = Duration::from_millis(10);
        let waiter = {
            let (store, shutdown) = (store.clone(), shutdown.clone());
            tokio::spawn(async move { until_retried(store.as_ref(), "lab", poll, &shutdown).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "a Failed cluster keeps waiting");
        let (next, ev) =
            provisioner_core::cluster::retry::retry(&s, None, OffsetDateTime::now_utc()).unwrap();
        store.save(&next, &ev).unwrap();
        assert!(waiter.await.unwrap());
        store.save(&s, &[]).unwrap();
        shutdown.cancel();
        assert!(!until_retried(store.as_ref(), "lab", poll, &shutdown).await);
    }
}
