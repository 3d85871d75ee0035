//! Observations: timeline events that answer no request (a TFTP transfer or an
//! asset download completed). Nobody waits for them, so instead of a commit (and a
//! share of an fsync) per event on a blocking-pool thread, they queue for one
//! writer thread that writes everything queued in one commit
//! ([`Inventory::apply_many`]); a boot storm's thousands of downloads cost a few
//! commits a second. The journal still publishes each event only after its commit.
//! The queue is bounded: beyond it events are dropped and counted
//! (`provisioner_observations_dropped_total`), never the downloads. At shutdown
//! [`BootService::settle_observations`] waits for what is queued.

use std::net::IpAddr;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Weak};

use provisioner_core::boot::{BootDecision, BootRequest};
use provisioner_core::inventory::{Change, Update};
use provisioner_core::model::{Event, MacAddr, Machine, TimelineEvent};
use time::OffsetDateTime;

use super::BootService;

/// Events queued before new ones are dropped.
const QUEUE: usize = 16_384;
/// Events written in one commit at most.
const BATCH: usize = 512;

/// Whose timeline an observation goes to.
#[derive(Debug, Clone, Copy)]
pub enum Observed {
    /// A TFTP client: its MAC from the kernel's ARP table (firmware ARPs for us
    /// before its RRQ; the machine is created if the unknown policy records it),
    /// else from the peer map.
    TftpClient(IpAddr),
    /// Whichever known machine last fetched its script from this address.
    Peer(IpAddr),
}

/// What the writer thread takes from its queue.
#[derive(Debug)]
enum Item {
    Event(Observed, TimelineEvent),
    /// Answered once everything queued before it is written.
    Barrier(SyncSender<()>),
}

/// The sending side; the writer thread ends when it is dropped.
#[derive(Debug)]
pub(super) struct Observer {
    tx: SyncSender<Item>,
}

impl Observer {
    /// Starts the writer thread; it holds the service weakly.
    pub(super) fn spawn(service: Weak<BootService>) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Item>(QUEUE);
        std::thread::Builder::new()
            .name("timeline-obs".into())
            .spawn(move || writer(&service, &rx))?;
        Ok(Self { tx })
    }
}

/// Blocks for the next item, then takes whatever else is queued, up to `max`: a
/// batching writer's one read (the DHCP timeline thread uses it too). `None` once
/// every sender is gone.
pub fn next_batch<T>(rx: &Receiver<T>, max: usize) -> Option<Vec<T>> {
    let mut batch = vec![rx.recv().ok()?];
    while batch.len() < max {
        match rx.try_recv() {
            Ok(o) => batch.push(o),
            Err(_) => break,
        }
    }
    Some(batch)
}

fn writer(service: &Weak<BootService>, rx: &Receiver<Item>) {
    while let Some(batch) = next_batch(rx, BATCH) {
        let (mut events, mut barriers) = (Vec::with_capacity(batch.len()), Vec::new());
        for item in batch {
            match item {
                Item::Event(who, event) => events.push((who, event)),
                Item::Barrier(done) => barriers.push(done),
            }
        }
        let Some(service) = service.upgrade() else { return };
        service.write_observations(events);
        for done in barriers {
            let _ = done.try_send(());
        }
    }
}

impl BootService {
    /// Queues `event` for `who`'s timeline (see [`Observed`]); returns at once.
    pub fn observe(self: &Arc<Self>, who: Observed, event: Event) {
        let event = event.at(OffsetDateTime::now_utc());
        let observer = self
            .observer
            .get_or_init(|| Observer::spawn(Arc::downgrade(self)).ok());
        let Some(observer) = observer else {
            // No thread could be started: write it here.
            return self.write_observations(vec![(who, event)]);
        };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            observer.tx.try_send(Item::Event(who, event))
        {
            metrics::counter!("provisioner_observations_dropped_total").increment(1);
        }
    }

    /// Blocks until every observation queued so far is written, or `timeout`
    /// passed (shutdown: the servers have stopped, so nothing new arrives). Returns
    /// whether everything was written.
    pub fn settle_observations(&self, timeout: std::time::Duration) -> bool {
        let Some(Some(observer)) = self.observer.get() else {
            return true;
        };
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        let deadline = std::time::Instant::now() + timeout;
        let mut item = Item::Barrier(done);
        // The queue may be full: retry until the deadline.
        loop {
            match observer.tx.try_send(item) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if std::time::Instant::now() < deadline => {
                    item = back;
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(_) => return false,
            }
        }
        wait.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .is_ok()
    }

    /// Writes a batch in one commit; if it fails (a record that does not decode, a
    /// failing disk), one by one, so one machine cannot cost the others their events.
    fn write_observations(&self, batch: Vec<(Observed, TimelineEvent)>) {
        let mut changes: Vec<(MacAddr, _)> = batch
            .into_iter()
            .filter_map(|(who, event)| {
                let (mac, create) = self.resolve(who)?;
                Some((mac, self.observation(mac, create, event)))
            })
            .collect();
        let mut steps: Vec<(MacAddr, Change<'_>)> =
            changes.iter_mut().map(|(m, c)| (*m, c as Change<'_>)).collect();
        if steps.is_empty() || self.inventory.apply_many(&mut steps).is_ok() {
            return;
        }
        drop(steps);
        for (mac, change) in &mut changes {
            if let Err(e) = self.inventory.apply(*mac, change) {
                tracing::warn!(error = %e, %mac, "recording a timeline event failed");
            }
        }
    }

    /// The MAC an observation belongs to, and whether it may create the record.
    fn resolve(&self, who: Observed) -> Option<(MacAddr, bool)> {
        match who {
            Observed::TftpClient(ip) => match crate::sys::netinfo::arp_lookup(ip) {
                Some(mac) => {
                    self.remember_peer(ip, mac);
                    Some((mac, true))
                }
                None => Some((self.peer_mac(ip)?, false)),
            },
            Observed::Peer(ip) => Some((self.peer_mac(ip)?, false)),
        }
    }

    /// The change for one event: appended to a known machine's timeline; a machine
    /// not in the store is created (`Discovered`) only if `create` and the unknown
    /// policy records it (as [`BootService::record_seen`] decides).
    fn observation(
        &self,
        mac: MacAddr,
        create: bool,
        event: TimelineEvent,
    ) -> impl FnMut(Option<Machine>) -> Update + '_ {
        move |cur| match cur {
            Some(_) if !create => Update {
                events: vec![event.clone()],
                ..Update::default()
            },
            None if !(create && self.may_record(mac)) => Update::default(),
            cur => {
                let mut m = cur.unwrap_or_else(|| Machine::discovered(mac, event.at));
                m.last_seen = event.at;
                Update {
                    machine: Some(m),
                    events: vec![event.clone()],
                    ..Update::default()
                }
            }
        }
    }

    /// Whether the unknown policy lets traffic from `mac` create a record.
    pub(super) fn may_record(&self, mac: MacAddr) -> bool {
        let req = BootRequest {
            mac: Some(mac),
            ..Default::default()
        };
        !matches!(
            self.booter().decide(&req, None),
            BootDecision::Unknown { record: false, .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use provisioner_core::boot::{CatalogBooter, UnknownPolicy};
    use provisioner_core::inventory::{Inventory, InventoryError, MemInventory};

    use super::*;

    /// A store that counts its commits.
    #[derive(Debug, Default)]
    struct Counting {
        inner: MemInventory,
        commits: AtomicUsize,
    }

    impl Inventory for Counting {
        fn get(&self, mac: MacAddr) -> Result<Option<Machine>, InventoryError> {
            self.inner.get(mac)
        }
        fn list(&self) -> Result<Vec<Machine>, InventoryError> {
            self.inner.list()
        }
        fn apply(&self, mac: MacAddr, change: Change<'_>) -> Result<Option<Machine>, InventoryError> {
            self.commits.fetch_add(1, Ordering::SeqCst);
            self.inner.apply(mac, change)
        }
        fn apply_many(&self, changes: &mut [(MacAddr, Change<'_>)]) -> Result<(), InventoryError> {
            self.commits.fetch_add(1, Ordering::SeqCst);
            for (mac, change) in changes.iter_mut() {
                self.inner.apply(*mac, &mut **change)?;
            }
            Ok(())
        }
        fn delete(&self, mac: MacAddr) -> Result<bool, InventoryError> {
            self.inner.delete(mac)
        }
        fn timeline(&self, mac: MacAddr) -> Result<Vec<TimelineEvent>, InventoryError> {
            self.inner.timeline(mac)
        }
        fn issue_token(
            &self,
            key: &str,
            r: &provisioner_core::inventory::TokenRecord,
        ) -> Result<(), InventoryError> {
            self.inner.issue_token(key, r)
        }
        fn live_token(
            &self,
            key: &str,
        ) -> Result<Option<provisioner_core::inventory::TokenRecord>, InventoryError> {
            self.inner.live_token(key)
        }
        fn take_token(
            &self,
            key: &str,
            now: OffsetDateTime,
        ) -> Result<Option<provisioner_core::inventory::TokenRecord>, InventoryError> {
            self.inner.take_token(key, now)
        }
        fn spent_token(
            &self,
            key: &str,
        ) -> Result<Option<provisioner_core::inventory::SpentToken>, InventoryError> {
            self.inner.spent_token(key)
        }
        fn drop_tokens(
            &self,
            expired: &dyn Fn(&provisioner_core::inventory::TokenRecord) -> bool,
            spent_before: OffsetDateTime,
        ) -> Result<usize, InventoryError> {
            self.inner.drop_tokens(expired, spent_before)
        }
    }

    fn service(store: Arc<Counting>, unknown: UnknownPolicy) -> Arc<BootService> {
        let booter = Arc::new(CatalogBooter {
            catalog: Default::default(),
            unknown,
        });
        Arc::new(BootService::new(booter, store, "http://10.0.0.1".into()))
    }

    #[test]
    fn a_burst_of_asset_events_lands_on_the_peers_timelines_in_few_commits() {
        let store = Arc::new(Counting::default());
        let svc = service(store.clone(), UnknownPolicy::Record);
        let peers: Vec<(IpAddr, MacAddr)> = (1..=50u8)
            .map(|i| (IpAddr::from([10, 0, 0, i]), MacAddr([0x52, 0x54, 0, 0, 2, i])))
            .collect();
        for (ip, mac) in &peers {
            store
                .inner
                .put(&Machine::discovered(*mac, OffsetDateTime::now_utc()))
                .unwrap();
            svc.remember_peer(*ip, *mac);
        }
        let before = store.commits.load(Ordering::SeqCst);
        for round in 0..4 {
            for (ip, _) in &peers {
                let file = format!("vmlinuz-{round}");
                svc.observe(Observed::Peer(*ip), Event::AssetServed { file, bytes: 1 });
            }
        }
        // Settling (as at shutdown) returns once everything queued is written.
        assert!(svc.settle_observations(std::time::Duration::from_secs(10)));
        for (_, mac) in &peers {
            assert_eq!(store.inner.timeline(*mac).unwrap().len(), 4, "{mac}");
        }
        let commits = store.commits.load(Ordering::SeqCst) - before;
        assert!(commits < 200, "{commits} commits for 200 events");
        // An address no machine fetched a script from is dropped, not recorded.
        svc.observe(
            Observed::Peer(IpAddr::from([10, 9, 9, 9])),
            Event::AssetServed {
                file: "x".into(),
                bytes: 1,
            },
        );
        assert_eq!(store.inner.list().unwrap().len(), 50);
    }

    #[test]
    fn a_tftp_client_unknown_to_the_store_is_created_only_if_the_policy_records_it() {
        let mac = MacAddr([0x52, 0x54, 0, 0, 3, 1]);
        let ip = IpAddr::from([10, 0, 0, 77]);
        for (policy, created) in [(UnknownPolicy::Record, true), (UnknownPolicy::Ignore, false)] {
            let store = Arc::new(Counting::default());
            let svc = service(store.clone(), policy.clone());
            // No ARP entry for this address: the peer map names the machine, which
            // only an existing record may use; the ARP path (create) is the lab's.
            svc.remember_peer(ip, mac);
            let change = &mut svc.observation(
                mac,
                true,
                Event::TftpServed {
                    file: "undionly.kpxe".into(),
                    bytes: 1,
                }
                .at(OffsetDateTime::now_utc()),
            );
            store.apply(mac, change).unwrap();
            assert_eq!(store.inner.get(mac).unwrap().is_some(), created, "{policy:?}");
        }
    }
}
