//! openraft's own conformance suite, run against our stores on sled and on memory, plus
//! restart tests of the state machine's persistence.

use openraft::testing::{StoreBuilder, Suite};
use tally_storage::{MemDb, SledDb, SledOptions};

use super::*;
use crate::log_store::LogStore;

struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for SledBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().map_err(write_err)?;
        let db = SledDb::open(dir.path(), SledOptions::default()).map_err(write_err)?;
        let log = LogStore::open(&db).map_err(write_err)?;
        let sm = StateMachineStore::open(&db).await?;
        Ok((dir, log, sm))
    }
}

struct MemBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, ()> for MemBuilder {
    async fn build(&self) -> Result<((), LogStore, StateMachineStore), StorageError> {
        let db = MemDb::new();
        let log = LogStore::open(&db).map_err(write_err)?;
        let sm = StateMachineStore::open(&db).await?;
        Ok(((), log, sm))
    }
}

#[test]
fn sled_stores_pass_openraft_suite() {
    Suite::test_all(SledBuilder).unwrap();
}

#[test]
fn mem_stores_pass_openraft_suite() {
    Suite::test_all(MemBuilder).unwrap();
}

fn entry(index: u64, command: Command) -> Entry {
    openraft::Entry {
        log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Request { timestamp_ms: index as i64, entropy: [index as u8; 16], command }),
    }
}

fn sample_log() -> Vec<Entry> {
    let spec = PollSpec {
        poll_id: PollId("p1".into()),
        title: "t".into(),
        description: None,
        options: vec!["a".into(), "b".into()],
        start_time_ms: None,
        end_time_ms: None,
        settings: PollSettings::default(),
        owner: None,
    };
    let vote = |voter: &str, option: &str| VoteIntent {
        poll_id: PollId("p1".into()),
        voter_id: VoterId(voter.into()),
        option_id: option.into(),
        idempotency_key: voter.into(),
        attributes: Default::default(),
    };
    vec![
        entry(1, Command::CreatePoll(spec)),
        entry(2, Command::CastVotes(vec![vote("alice", "o1"), vote("bob", "o2")])),
        entry(3, Command::CastVotes(vec![vote("carol", "o2"), vote("alice", "o2")])),
    ]
}

/// The applied state, let go of its store (so that the store can be reopened).
fn snapshot_of(shared: &SmShared) -> (State, Option<LogId>) {
    let applied = shared.read();
    let mut state = applied.state.clone();
    state.detach();
    (state, applied.last_applied)
}

#[tokio::test]
async fn state_survives_reopen_without_replay() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let db = SledDb::open(dir.path(), SledOptions::default()).unwrap();
        let mut sm = StateMachineStore::open(&db).await.unwrap();
        sm.apply(sample_log()).await.unwrap();
        sm.shared.persist_now().unwrap();
        sm.space.flush().unwrap();
        snapshot_of(&sm.shared)
    };
    let db = SledDb::open(dir.path(), SledOptions::default()).unwrap();
    let sm = StateMachineStore::open(&db).await.unwrap();
    let after = snapshot_of(&sm.shared);
    assert_eq!(after, before);
    assert_eq!(after.1.unwrap().index, 3);
    assert_eq!(after.0.polls[&PollId("p1".into())].counts, vec![1, 2]);
}

#[tokio::test(start_paused = true)]
async fn applies_are_written_together_once_due() {
    let db = MemDb::new();
    let mut sm = StateMachineStore::open(&db).await.unwrap();
    let log = sample_log();
    sm.apply(log[..2].to_vec()).await.unwrap();
    let meta = |db: &MemDb| db.keyspace("sm").unwrap().get(META).unwrap();
    assert_eq!(meta(&db), None, "not written before it is due");
    tokio::time::advance(PERSIST_INTERVAL).await;
    sm.apply(log[2..].to_vec()).await.unwrap();
    let written: SmMeta = codec::decode(&meta(&db).expect("written once due")).unwrap();
    assert_eq!(written.last_applied.map(|l| l.index), Some(3), "with everything applied so far");
    let reopened = StateMachineStore::open(&db).await.unwrap();
    assert_eq!(snapshot_of(&reopened.shared), snapshot_of(&sm.shared));
}

#[tokio::test]
async fn snapshot_round_trips_into_a_fresh_store() {
    let db = MemDb::new();
    let mut sm = StateMachineStore::open(&db).await.unwrap();
    sm.apply(sample_log()).await.unwrap();
    let snapshot = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();

    let other_db = MemDb::new();
    let mut other = StateMachineStore::open(&other_db).await.unwrap();
    other.install_snapshot(&snapshot.meta, snapshot.snapshot).await.unwrap();
    assert_eq!(snapshot_of(&other.shared), snapshot_of(&sm.shared));
    // And the install is durable: a crash right after keeps it.
    other_db.crash();
    let reopened = StateMachineStore::open(&other_db).await.unwrap();
    assert_eq!(snapshot_of(&reopened.shared), snapshot_of(&sm.shared));
}

#[tokio::test]
async fn an_interrupted_install_is_redone_on_open() {
    let db = MemDb::new();
    let mut sm = StateMachineStore::open(&db).await.unwrap();
    sm.apply(sample_log()).await.unwrap();
    let snapshot = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let expected = snapshot_of(&sm.shared);

    let target = MemDb::new();
    let store = StateMachineStore::open(&target).await.unwrap();
    let stored = StoredSnapshot { meta: snapshot.meta.clone(), data: snapshot.snapshot.into_inner() };
    store.store_snapshot(&stored).unwrap();
    // Simulate a crash right after the `installing` mark was made durable.
    store.write_meta_flushed(&SmMeta { installing: true, ..SmMeta::default() }).unwrap();
    target.crash();
    let reopened = StateMachineStore::open(&target).await.unwrap();
    assert_eq!(snapshot_of(&reopened.shared), expected);
}

#[tokio::test]
async fn a_log_of_another_format_is_refused_at_open_and_a_new_one_is_stamped() {
    let db = MemDb::new();
    LogStore::open(&db).expect("a new data dir opens");
    LogStore::open(&db).expect("and reopens");
    // A data dir of an earlier build: entries in sled's `log` keyspace, format 2.
    let old = MemDb::new();
    let mut batch = WriteBatch::new();
    batch.put(1u64.to_be_bytes().to_vec(), b"an entry of the old format".to_vec());
    old.keyspace("log").unwrap().write(batch).unwrap();
    let mut batch = WriteBatch::new();
    batch.put(b"format".to_vec(), b"2".to_vec());
    old.keyspace("log_meta").unwrap().write(batch).unwrap();
    let error = LogStore::open(&old).err().expect("refused");
    assert!(error.to_string().contains("another format"), "{error}");
    // Before the format mark, every data dir that held a log also held a vote.
    let older = MemDb::new();
    let mut batch = WriteBatch::new();
    batch.put(b"vote".to_vec(), b"a vote".to_vec());
    older.keyspace("log_meta").unwrap().write(batch).unwrap();
    assert!(LogStore::open(&older).is_err());
}

/// Votes live in one block per entry and poll; a vote changed later (in a block written
/// before, or in the same unwritten window, or twice in one entry) must come back as its
/// last version, with its history, after a reopen.
/// [`sample_log`], its poll allowing vote changes.
fn sample_log_with_vote_change() -> Vec<Entry> {
    let mut log = sample_log();
    let EntryPayload::Normal(Request { command: Command::CreatePoll(spec), .. }) = &mut log[0].payload else {
        unreachable!()
    };
    spec.settings.allow_vote_change = true;
    log
}

/// A vote in poll `p1`, with its key.
fn vote(voter: &str, option: &str, key: &str) -> VoteIntent {
    VoteIntent {
        poll_id: PollId("p1".into()),
        voter_id: VoterId(voter.into()),
        option_id: option.into(),
        idempotency_key: key.into(),
        attributes: Default::default(),
    }
}

#[tokio::test]
async fn changed_votes_come_back_from_their_blocks_after_a_reopen() {
    let log = sample_log_with_vote_change();
    let later = vec![
        entry(4, Command::CastVotes(vec![vote("bob", "o1", "b2"), vote("dave", "o1", "d1")])),
        entry(5, Command::CastVotes(vec![vote("dave", "o2", "d2"), vote("dave", "o1", "d3"), vote("bob", "o2", "b3")])),
    ];
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let db = SledDb::open(dir.path(), SledOptions::default()).unwrap();
        let mut sm = StateMachineStore::open(&db).await.unwrap();
        sm.apply(log).await.unwrap();
        sm.shared.persist_now().unwrap();
        sm.apply(later).await.unwrap();
        sm.shared.persist_now().unwrap();
        sm.space.flush().unwrap();
        snapshot_of(&sm.shared)
    };
    let poll = &before.0.polls[&PollId("p1".into())];
    let changes = |voter: &str| poll.vote_of(&VoterId(voter.into())).unwrap().unwrap().changes;
    assert_eq!((changes("dave"), changes("bob")), (2, 2), "{poll:?}");
    let db = SledDb::open(dir.path(), SledOptions::default()).unwrap();
    let sm = StateMachineStore::open(&db).await.unwrap();
    assert_eq!(snapshot_of(&sm.shared), before);
}

/// A backup of one store restores into an empty one: the same state and hash, stored as
/// its current snapshot (which a learner is sent), and the log starting after it.
#[tokio::test]
async fn a_backup_restores_into_an_empty_store_as_its_current_snapshot() {
    let db = MemDb::new();
    let mut sm = StateMachineStore::open(&db).await.unwrap();
    sm.apply(sample_log()).await.unwrap();
    let (file, info) = sm.shared.backup().unwrap();
    assert_eq!(crate::backup::inspect(&file).unwrap(), info);
    let mut damaged = file.clone();
    damaged[40] ^= 1;
    assert!(crate::backup::inspect(&damaged).is_err());

    let fresh = MemDb::new();
    let members = [(1, "a:1".to_string()), (2, "b:2".to_string())].into_iter().collect();
    let restored = crate::backup::restore(&fresh, file.clone(), &members).await.unwrap();
    assert_eq!(restored.state_hash, info.state_hash);
    let mut reopened = StateMachineStore::open(&fresh).await.unwrap();
    assert_eq!(snapshot_of(&reopened.shared).0, snapshot_of(&sm.shared).0);
    let current = reopened.get_current_snapshot().await.unwrap().expect("a current snapshot");
    assert_eq!(current.meta.last_log_id.map(|l| l.index), Some(3));
    let data: SnapshotData = codec::decode(current.snapshot.get_ref()).unwrap();
    let original = snapshot_of(&sm.shared).0;
    assert_eq!((data.state.hash, data.state.votes_recorded), (original.hash, original.votes_recorded));
    assert!(!data.blocks.is_empty(), "the snapshot carries the blocks");
    let mut log = LogStore::open(&fresh).unwrap();
    let state = openraft::storage::RaftLogStorage::get_log_state(&mut log).await.unwrap();
    assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(3));
    assert!(crate::backup::restore(&fresh, file, &members).await.is_err(), "a used store is refused");
}

/// Once applied blocks are written, memory lets them go and every read (a voter's vote,
/// a duplicate's judgement, a replayed key, a change, a receipt, the audit trail, the
/// recount) goes to the keyspace.
#[tokio::test(start_paused = true)]
async fn written_blocks_leave_memory_and_are_read_back_from_the_keyspace() {
    let db = MemDb::new();
    let mut sm = StateMachineStore::open(&db).await.unwrap();
    let log = sample_log_with_vote_change();
    sm.apply(log).await.unwrap();
    tokio::time::advance(PERSIST_INTERVAL).await;
    // Applied after the due write: blocks 2 and 3 are now only in the keyspace.
    let replies = sm
        .apply(vec![entry(
            4,
            Command::CastVotes(vec![vote("bob", "o2", "bob"), vote("carol", "o1", "c2"), vote("dave", "o1", "dave")]),
        )])
        .await
        .unwrap();
    let Response::Votes(outcomes) = &replies[0] else { panic!("{replies:?}") };
    assert!(matches!(outcomes[0], VoteOutcome::Replayed { changed: false, .. }), "{outcomes:?}");
    assert!(matches!(outcomes[1], VoteOutcome::Changed(_)), "{outcomes:?}");
    assert!(matches!(outcomes[2], VoteOutcome::Recorded(_)), "{outcomes:?}");
    tokio::time::advance(PERSIST_INTERVAL).await;
    sm.apply(vec![entry(5, Command::CastVotes(vec![vote("erin", "o1", "erin")]))]).await.unwrap();
    let applied = sm.shared.read();
    let poll = &applied.state.polls[&PollId("p1".into())];
    assert_eq!(poll.votes.unwritten_blocks(), 1, "only entry 5's block is still in memory");
    assert_eq!(poll.counts, vec![4, 1], "alice reused her key in entry 3, so kept o1");
    let carol = poll.vote_of(&VoterId("carol".into())).unwrap().unwrap();
    assert_eq!((carol.log_index, carol.changes), (4, 1));
    let first = poll.votes.read(carol.replaces.unwrap()).unwrap();
    assert_eq!((first.log_index, first.idempotency_key.as_str()), (3, "carol"));
    let found = poll.find_vote(&first.vote_id()).unwrap().unwrap();
    assert!(!found.current);
    assert_eq!(poll.audit_trail().unwrap().len(), 6);
    applied.state.check_invariants().unwrap();
}

/// The block journal is synced before the keyspace write that counts its blocks, and a
/// crash may lose that write (it is flushed later): the blocks past the meta's count are
/// cut off at open, and applying the same entries again gives the same state.
#[tokio::test]
async fn blocks_past_a_lost_meta_are_cut_off_and_written_again() {
    let db = MemDb::new();
    let mut sm = StateMachineStore::open(&db).await.unwrap();
    sm.apply(sample_log()).await.unwrap();
    sm.shared.persist_now().unwrap();
    let before = snapshot_of(&sm.shared);
    assert_eq!(before.0.blocks, 2);
    drop(sm);
    db.crash();
    let mut sm = StateMachineStore::open(&db).await.unwrap();
    assert_eq!(snapshot_of(&sm.shared).0.blocks, 0, "the crash lost the keyspace write");
    sm.apply(sample_log()).await.unwrap();
    sm.shared.persist_now().unwrap();
    sm.space.flush().unwrap();
    assert_eq!(snapshot_of(&sm.shared), before);
    drop(sm);
    let sm = StateMachineStore::open(&db).await.unwrap();
    assert_eq!(snapshot_of(&sm.shared), before);
    let applied = sm.shared.read();
    applied.state.check_invariants().unwrap();
}
