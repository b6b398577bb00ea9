//! One contract, checked against both implementations.

use super::*;

fn check_contract(db: &dyn Database) {
    let space = db.keyspace("t").unwrap();
    let mut batch = WriteBatch::new();
    for i in 0u64..10 {
        batch.put(i.to_be_bytes().to_vec(), vec![i as u8]);
    }
    space.write(batch).unwrap();
    assert_eq!(space.get(&3u64.to_be_bytes()).unwrap(), Some(vec![3]));
    let page = space.range(&2u64.to_be_bytes(), Some(&5u64.to_be_bytes()), 100).unwrap();
    assert_eq!(page.iter().map(|(_, v)| v[0]).collect::<Vec<_>>(), vec![2, 3, 4]);
    assert_eq!(space.range(&0u64.to_be_bytes(), None, 2).unwrap().len(), 2);
    let top = space.range_rev(&2u64.to_be_bytes(), Some(&5u64.to_be_bytes()), 2).unwrap();
    assert_eq!(top.iter().map(|(_, v)| v[0]).collect::<Vec<_>>(), vec![4, 3]);
    assert_eq!(delete_range_from_top(&*space, &8u64.to_be_bytes(), None).unwrap(), 2);
    assert_eq!(space.last().unwrap().unwrap().1, vec![7]);
    assert_eq!(delete_range(&*space, &5u64.to_be_bytes(), None).unwrap(), 3);
    assert_eq!(space.last().unwrap().unwrap().1, vec![4]);
    // Keyspaces of one database are independent.
    let other = db.keyspace("u").unwrap();
    assert!(other.last().unwrap().is_none());
    space.flush().unwrap();
}

#[test]
fn sled_meets_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let db = SledDb::open(dir.path(), SledOptions::default()).unwrap();
    check_contract(&db);
}

#[test]
fn mem_meets_the_contract() {
    check_contract(&MemDb::new());
}

#[test]
fn sled_keeps_flushed_data_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = SledDb::open(dir.path(), SledOptions::default()).unwrap();
        let space = db.keyspace("log").unwrap();
        let mut batch = WriteBatch::new();
        batch.put(b"k".to_vec(), b"v".to_vec());
        space.write(batch).unwrap();
        space.flush().unwrap();
    }
    let db = SledDb::open(dir.path(), SledOptions::default()).unwrap();
    assert_eq!(db.keyspace("log").unwrap().get(b"k").unwrap(), Some(b"v".to_vec()));
}

/// A restart right after a drop must not trip over the lock sled's threads still hold.
#[test]
fn sled_reopens_at_once_after_drop() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0u64..50 {
        let db = SledDb::open(dir.path(), SledOptions::default()).unwrap();
        let space = db.keyspace("log").unwrap();
        assert_eq!(space.last().unwrap().map(|(_, v)| v), round.checked_sub(1).map(|r| r.to_be_bytes().to_vec()));
        let mut batch = WriteBatch::new();
        batch.put(round.to_be_bytes().to_vec(), round.to_be_bytes().to_vec());
        space.write(batch).unwrap();
        space.flush().unwrap();
    }
}

#[test]
fn mem_crash_loses_exactly_the_unflushed_writes() {
    let db = MemDb::new();
    let space = db.keyspace("log").unwrap();
    let mut first = WriteBatch::new();
    first.put(b"a".to_vec(), b"1".to_vec());
    space.write(first).unwrap();
    space.flush().unwrap();
    let mut second = WriteBatch::new();
    second.put(b"b".to_vec(), b"2".to_vec());
    second.delete(b"a".to_vec());
    space.write(second).unwrap();
    assert_eq!(db.unflushed_writes(), 2);
    db.crash();
    assert_eq!(space.get(b"a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(space.get(b"b").unwrap(), None);
}

proptest::proptest! {
    /// Whatever the interleaving of writes, flushes and crashes, the store after a crash
    /// equals a model that applies only the writes made before the last flush.
    #[test]
    fn mem_crash_matches_model(ops in proptest::collection::vec((0u8..3, 0u8..8, 0u8..4), 1..60)) {
        let db = MemDb::new();
        let space = db.keyspace("t").unwrap();
        let mut live = std::collections::BTreeMap::new();
        let mut durable = live.clone();
        for (kind, key, value) in ops {
            match kind {
                0 => {
                    let mut batch = WriteBatch::new();
                    if value == 0 { batch.delete(vec![key]); live.remove(&vec![key]); }
                    else { batch.put(vec![key], vec![value]); live.insert(vec![key], vec![value]); }
                    space.write(batch).unwrap();
                }
                1 => { space.flush().unwrap(); durable = live.clone(); }
                _ => { db.crash(); live = durable.clone(); }
            }
            let got: std::collections::BTreeMap<_, _> = space.range(&[], None, usize::MAX).unwrap().into_iter().collect();
            proptest::prop_assert_eq!(&got, &live);
        }
    }
}

#[test]
fn mem_crash_points_trip_where_armed_and_lose_what_they_should() {
    let put = |space: &dyn Keyspace, key: &[u8]| {
        let mut batch = WriteBatch::new();
        batch.put(key.to_vec(), b"v".to_vec());
        space.write(batch).unwrap();
    };
    let db = MemDb::new();
    let (log, sm) = (db.keyspace("log").unwrap(), db.keyspace("sm").unwrap());
    put(&*log, b"1");
    log.flush().unwrap();

    // In a flush: the flush fails, persists nothing, and so do flushes after it.
    db.arm(CrashPoint::InFlush);
    put(&*log, b"2");
    assert!(!db.tripped(), "a write is not a flush");
    assert!(log.flush().is_err());
    assert!(db.tripped());
    assert!(sm.flush().is_err(), "a tripped store stays dead until the crash");
    db.crash();
    assert!(!db.tripped());
    assert_eq!(log.get(b"2").unwrap(), None);
    assert_eq!(log.get(b"1").unwrap(), Some(b"v".to_vec()));

    // After a write to `sm`: writes to other keyspaces do not trip it.
    db.arm(CrashPoint::AfterWrite("sm"));
    put(&*log, b"3");
    assert!(!db.tripped());
    put(&*sm, b"applied");
    assert!(db.tripped());
    db.crash();
    assert_eq!(sm.get(b"applied").unwrap(), None);

    // Disarmed, nothing trips.
    db.arm(CrashPoint::InFlush);
    db.disarm();
    log.flush().unwrap();
    assert!(!db.tripped());
}

fn check_journal_contract(db: &dyn Database) {
    let journal = db.journal("j").unwrap();
    let indexes = |start, end| journal.read(start, end).unwrap().into_iter().map(|(i, _)| i).collect::<Vec<_>>();
    assert_eq!(journal.last().unwrap(), None);
    journal.append((5..10).map(|i| (i, vec![i as u8])).collect()).unwrap();
    assert!(journal.append(vec![(9, vec![])]).is_err(), "an append never overwrites");
    assert_eq!(indexes(0, u64::MAX), vec![5, 6, 7, 8, 9]);
    assert_eq!(indexes(6, 8), vec![6, 7]);
    journal.truncate(8).unwrap();
    assert_eq!(journal.last().unwrap(), Some((7, vec![7])));
    journal.append(vec![(8, b"new".to_vec())]).unwrap();
    journal.sync().unwrap();
    journal.purge(6).unwrap();
    assert_eq!(indexes(0, u64::MAX), vec![7, 8], "reads start after the purge");
    assert_eq!(journal.read(8, 9).unwrap(), vec![(8, b"new".to_vec())]);
    // Payload lengths of what is there: 7 (one byte) and 8 ("new"), none purged or beyond.
    assert_eq!(journal.payload_bytes(0, 100), 4);
    assert_eq!(journal.payload_bytes(8, 9), 3);
    assert_eq!(journal.payload_bytes(9, 100), 0);
    // A second handle sees the same journal.
    assert_eq!(db.journal("j").unwrap().last().unwrap(), Some((8, b"new".to_vec())));
}

#[test]
fn sled_journals_meet_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    check_journal_contract(&SledDb::open(dir.path(), SledOptions::default()).unwrap());
}

#[test]
fn mem_journals_meet_the_contract() {
    check_journal_contract(&MemDb::new());
}

#[test]
fn mem_crash_keeps_exactly_the_synced_records() {
    let db = MemDb::new();
    let journal = db.journal("j").unwrap();
    journal.append(vec![(1, vec![1]), (2, vec![2])]).unwrap();
    journal.sync().unwrap();
    journal.append(vec![(3, vec![3])]).unwrap();
    db.crash();
    assert_eq!(journal.last().unwrap(), Some((2, vec![2])));
    // A crash armed inside the next flush or sync: the sync fails and keeps nothing new.
    journal.append(vec![(3, vec![3])]).unwrap();
    db.arm(CrashPoint::InFlush);
    assert!(journal.sync().is_err());
    assert!(db.tripped());
    db.crash();
    assert_eq!(journal.last().unwrap(), Some((2, vec![2])));
    // A journal's sync does not make keyspace writes durable, nor a flush the journal.
    let space = db.keyspace("k").unwrap();
    let mut batch = WriteBatch::new();
    batch.put(b"a".to_vec(), b"1".to_vec());
    space.write(batch).unwrap();
    journal.append(vec![(3, vec![3])]).unwrap();
    journal.sync().unwrap();
    db.crash();
    assert_eq!(space.get(b"a").unwrap(), None);
    journal.append(vec![(4, vec![4])]).unwrap();
    space.flush().unwrap();
    db.crash();
    assert_eq!(journal.last().unwrap(), Some((3, vec![3])));
}
