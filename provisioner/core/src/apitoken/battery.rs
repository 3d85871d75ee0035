//! One test battery for every [`ApiTokenStore`] backend: each backend's tests call
//! [`run_all`] with a factory of fresh, empty stores.

use time::OffsetDateTime;

use super::{ApiTokenRecord, ApiTokenStore, Role};

/// A factory of empty stores.
pub type Factory<'a> = &'a dyn Fn() -> Box<dyn ApiTokenStore>;

/// Runs every battery test against fresh stores from `make`.
pub fn run_all(make: Factory<'_>) {
    insert_lookup_list(&*make());
    duplicates_refused(&*make());
    revoke_by_id(&*make());
}

fn rec(id: &str, role: Role) -> ApiTokenRecord {
    ApiTokenRecord {
        id: id.into(),
        role,
        name: format!("note {id}"),
        created_at: OffsetDateTime::from_unix_timestamp(1_790_000_000).unwrap(),
    }
}

fn insert_lookup_list(s: &dyn ApiTokenStore) {
    assert!(s.list().unwrap().is_empty(), "new store is empty");
    assert_eq!(s.lookup("aa").unwrap(), None);
    s.insert("bb", &rec("t2", Role::ReadOnly)).unwrap();
    s.insert("aa", &rec("t1", Role::Admin)).unwrap();
    assert_eq!(s.lookup("aa").unwrap(), Some(rec("t1", Role::Admin)));
    assert_eq!(s.lookup("bb").unwrap().unwrap().role, Role::ReadOnly);
    assert_eq!(s.lookup("cc").unwrap(), None, "unknown hash");
    let ids: Vec<_> = s.list().unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(ids, ["t1", "t2"], "listed by id");
}

fn duplicates_refused(s: &dyn ApiTokenStore) {
    s.insert("aa", &rec("t1", Role::Admin)).unwrap();
    assert!(s.insert("aa", &rec("t9", Role::ReadOnly)).is_err(), "same hash");
    assert!(s.insert("zz", &rec("t1", Role::ReadOnly)).is_err(), "same id");
    assert_eq!(s.lookup("aa").unwrap().unwrap().role, Role::Admin, "unchanged");
    assert_eq!(s.lookup("zz").unwrap(), None);
}

fn revoke_by_id(s: &dyn ApiTokenStore) {
    s.insert("aa", &rec("t1", Role::Admin)).unwrap();
    s.insert("bb", &rec("t2", Role::Admin)).unwrap();
    assert!(s.revoke("t1").unwrap());
    assert!(!s.revoke("t1").unwrap(), "second revoke finds nothing");
    assert_eq!(s.lookup("aa").unwrap(), None, "revoked token no longer works");
    assert!(s.lookup("bb").unwrap().is_some(), "others untouched");
}
