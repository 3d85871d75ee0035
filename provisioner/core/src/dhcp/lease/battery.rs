//! One test battery for every [`LeaseStore`] backend: each backend's tests call
//! [`run_all`] with a factory of fresh, empty stores. Panics on the first failed
//! expectation, naming it.

use std::net::Ipv4Addr;

use super::{Lease, LeaseError, LeaseOp, LeaseState, LeaseStore};
use crate::model::MacAddr;

/// A factory of empty stores.
pub type Factory<'a> = &'a dyn Fn() -> Box<dyn LeaseStore>;

/// Runs every battery test against fresh stores from `make`.
pub fn run_all(make: Factory<'_>) {
    put_and_look_up_both_ways(&*make());
    moving_a_mac_frees_its_old_address(&*make());
    one_mac_per_address(&*make());
    remove_frees_both_keys(&*make());
    list_is_ordered_by_address(&*make());
    states_round_trip(&*make());
    batch_applies_in_order(&*make());
}

fn mac(n: u8) -> MacAddr {
    MacAddr([0x52, 0x54, 0, 0, 1, n])
}

fn ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 9, 0, n)
}

fn lease(m: u8, i: u8) -> Lease {
    Lease {
        mac: mac(m),
        ip: ip(i),
        expires: 1_790_000_000 + i64::from(i),
        hostname: Some(format!("node-{m}")),
        state: LeaseState::Active,
    }
}

fn put_and_look_up_both_ways(s: &dyn LeaseStore) {
    assert_eq!(s.by_mac(mac(1)).unwrap(), None, "empty store has no lease");
    s.put(&lease(1, 10)).unwrap();
    assert_eq!(s.by_mac(mac(1)).unwrap(), Some(lease(1, 10)), "by_mac after put");
    assert_eq!(s.by_ip(ip(10)).unwrap(), Some(lease(1, 10)), "by_ip after put");
    let mut renewed = lease(1, 10);
    renewed.expires += 3600;
    s.put(&renewed).unwrap();
    assert_eq!(s.by_mac(mac(1)).unwrap(), Some(renewed), "put replaces (renew)");
}

fn moving_a_mac_frees_its_old_address(s: &dyn LeaseStore) {
    s.put(&lease(1, 10)).unwrap();
    s.put(&lease(1, 11)).unwrap();
    assert_eq!(s.by_ip(ip(10)).unwrap(), None, "old address freed");
    assert_eq!(
        s.by_ip(ip(11)).unwrap().map(|l| l.mac),
        Some(mac(1)),
        "new address held"
    );
    s.put(&lease(2, 10)).unwrap();
    assert_eq!(s.list().unwrap().len(), 2, "two leases");
}

fn one_mac_per_address(s: &dyn LeaseStore) {
    s.put(&lease(1, 10)).unwrap();
    match s.put(&lease(2, 10)) {
        Err(LeaseError::Conflict { ip: i, holder }) => {
            assert_eq!((i, holder), (ip(10), mac(1)), "conflict names the holder");
        }
        other => panic!("second MAC on one address must conflict, got {other:?}"),
    }
    assert_eq!(s.by_mac(mac(2)).unwrap(), None, "failed put stored nothing");
    assert_eq!(
        s.by_ip(ip(10)).unwrap().map(|l| l.mac),
        Some(mac(1)),
        "holder kept"
    );
}

fn remove_frees_both_keys(s: &dyn LeaseStore) {
    s.put(&lease(1, 10)).unwrap();
    assert_eq!(
        s.remove(mac(1)).unwrap(),
        Some(lease(1, 10)),
        "remove returns the lease"
    );
    assert_eq!(s.remove(mac(1)).unwrap(), None, "second remove finds nothing");
    assert_eq!(s.by_ip(ip(10)).unwrap(), None, "address freed");
    s.put(&lease(2, 10)).unwrap();
    assert_eq!(
        s.by_ip(ip(10)).unwrap().map(|l| l.mac),
        Some(mac(2)),
        "address reusable"
    );
}

fn list_is_ordered_by_address(s: &dyn LeaseStore) {
    for (m, i) in [(1, 30), (2, 5), (3, 200), (4, 17)] {
        s.put(&lease(m, i)).unwrap();
    }
    let ips: Vec<_> = s.list().unwrap().iter().map(|l| l.ip).collect();
    assert_eq!(
        ips,
        vec![ip(5), ip(17), ip(30), ip(200)],
        "list ordered by address"
    );
}

fn states_round_trip(s: &dyn LeaseStore) {
    for (m, state) in [(1, LeaseState::Released), (2, LeaseState::Declined)] {
        let mut l = lease(m, m + 40);
        l.state = state;
        l.hostname = None;
        s.put(&l).unwrap();
        assert_eq!(s.by_mac(mac(m)).unwrap(), Some(l), "{state:?} round-trips");
    }
}

fn batch_applies_in_order(s: &dyn LeaseStore) {
    s.put(&lease(9, 90)).unwrap();
    s.apply_batch(&[
        LeaseOp::Put(lease(1, 10)),
        LeaseOp::Put(lease(1, 11)),
        LeaseOp::Remove(mac(9)),
        LeaseOp::Put(lease(2, 90)),
    ])
    .unwrap();
    assert_eq!(
        s.by_mac(mac(1)).unwrap().map(|l| l.ip),
        Some(ip(11)),
        "later put wins"
    );
    assert_eq!(
        s.by_ip(ip(10)).unwrap(),
        None,
        "moved address freed inside the batch"
    );
    assert_eq!(
        s.by_ip(ip(90)).unwrap().map(|l| l.mac),
        Some(mac(2)),
        "removed then reused in one batch"
    );
    assert_eq!(s.by_mac(mac(9)).unwrap(), None, "removed");
}
