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
        payload: EntryPayload::Normal(Request {
            timestamp_ms: index as i64,
            entropy: [index as u8; 16],
            command: command.into(),
        }),
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

/// Reads a whole outgoing snapshot.
fn read_all(stream: &mut Outgoing) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut buf = vec![0; 1000];
    loop {
        let n = stream.read_sync(&mut buf).unwrap();
        if n == 0 {
            return bytes;
        }
        bytes.extend_from_slice(&buf[..n]);
    }
}

/// A crash right after the install was staged (blocks synced, the meta naming their
/// journal and marked `installing`, with the snapshot's head): the reopened store finishes
/// the install.
#[tokio::test]
async fn an_interrupted_install_is_redone_on_open() {
    let db = MemDb::new();
    let mut sm = StateMachineStore::open(&db).await.unwrap();
    sm.apply(sample_log()).await.unwrap();
    let mut snapshot = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let expected = snapshot_of(&sm.shared);
    let SnapshotStream::Outgoing(outgoing) = &mut *snapshot.snapshot else { panic!("built snapshots are read") };
    let bytes = read_all(outgoing);

    let target = MemDb::new();
    let store = StateMachineStore::open(&target).await.unwrap();
    let (mut incoming, slot) = store.begin_incoming().unwrap();
    incoming.write_sync(&bytes).unwrap();
    let (header, _) = store.check_incoming(incoming, slot, Some(&snapshot.meta), None).unwrap();
    store.stage_install(&header, slot, snapshot.meta.snapshot_id.clone()).unwrap();
    target.crash();
    let mut reopened = StateMachineStore::open(&target).await.unwrap();
    assert_eq!(snapshot_of(&reopened.shared), expected);
    reopened.shared.read().state.check_invariants().unwrap();
    let current = reopened.get_current_snapshot().await.unwrap().expect("the installed snapshot is current");
    assert_eq!(current.meta, snapshot.meta);
}

/// A snapshot built from the sample log: its meta, and its bytes as sent.
async fn sample_snapshot() -> (SnapshotMeta<crate::NodeId, openraft::BasicNode>, Vec<u8>) {
    let db = MemDb::new();
    let mut sm = StateMachineStore::open(&db).await.unwrap();
    sm.apply(sample_log()).await.unwrap();
    let mut snapshot = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let SnapshotStream::Outgoing(outgoing) = &mut *snapshot.snapshot else { panic!("built snapshots are read") };
    (snapshot.meta, read_all(outgoing))
}

/// A store holding the sample log's poll (entry 1), written and flushed: the state that a
/// refused or interrupted install must leave as it was.
async fn store_with_a_poll(db: &MemDb) -> (StateMachineStore, (State, Option<LogId>)) {
    let mut store = StateMachineStore::open(db).await.unwrap();
    store.apply(sample_log()[..1].to_vec()).await.unwrap();
    store.shared.persist_now().unwrap();
    store.space.flush().unwrap();
    let before = snapshot_of(&store.shared);
    (store, before)
}

/// A crash while a snapshot arrives leaves the old state, and the blocks received so far
/// are cleared at open.
#[tokio::test]
async fn a_crash_while_a_snapshot_arrives_keeps_the_old_state() {
    let (_, bytes) = sample_snapshot().await;
    let target = MemDb::new();
    let (store, before) = store_with_a_poll(&target).await;
    let spare = |target: &MemDb, slot| target.journal(BLOCKS_JOURNALS[slot]).unwrap().last().unwrap();
    let (mut incoming, slot) = store.begin_incoming().unwrap();
    incoming.write_sync(&bytes[..bytes.len() - 3]).unwrap();
    assert_eq!(spare(&target, slot).map(|(seq, _)| seq), None, "blocks wait for a page or the end");
    // A crash with half a snapshot in the spare journal: the old state, and the spare cleared.
    incoming.flush_page().unwrap();
    assert_eq!(spare(&target, slot).map(|(seq, _)| seq), Some(1));
    std::mem::forget(incoming);
    target.crash();
    let reopened = StateMachineStore::open(&target).await.unwrap();
    assert_eq!(snapshot_of(&reopened.shared), before);
    assert_eq!(spare(&target, slot), None);
    // A stream cut short is refused, and dropping it leaves no copy behind.
    let (mut incoming, slot) = reopened.begin_incoming().unwrap();
    incoming.write_sync(&bytes[..bytes.len() - 3]).unwrap();
    assert!(incoming.finish().is_err(), "a stream cut short does not install");
    assert_eq!(spare(&target, slot), None);
    let (mut incoming, slot) = reopened.begin_incoming().unwrap();
    incoming.write_sync(&bytes).unwrap();
    incoming.flush_page().unwrap();
    drop(incoming);
    assert_eq!(spare(&target, slot), None, "a receipt never installed leaves nothing");
    assert_eq!(snapshot_of(&reopened.shared), before);
}

/// A snapshot whose state does not check (here: counts that its votes do not add up to),
/// or whose header is not what openraft's meta says, is refused before anything but the
/// spare journal was written: the store keeps its state and opens again.
#[tokio::test]
async fn a_snapshot_that_does_not_check_is_refused_before_it_is_staged() {
    let (meta, bytes) = sample_snapshot().await;
    let mut parser = crate::snapshot::FrameParser::default();
    parser.push(&bytes);
    let head_len = crate::snapshot::MAGIC.len() + 8 + parser.next_frame().unwrap().unwrap().len();
    let mut header = crate::snapshot::decode_head(&bytes[..head_len]).unwrap();
    header.state.polls.values_mut().next().unwrap().counts[0] += 1;
    let forged = crate::snapshot::head_bytes(&HeaderRef {
        state: &header.state,
        last_applied: &header.last_applied,
        membership: &header.membership,
        blocks: header.blocks,
    })
    .unwrap();
    let forged = [forged.as_slice(), &bytes[head_len..]].concat();

    let target = MemDb::new();
    let (mut store, before) = store_with_a_poll(&target).await;
    let mut later = meta.clone();
    later.last_log_id = Some(openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), 9));
    for (stream, meta) in [(&forged, &meta), (&bytes, &later)] {
        let (mut incoming, slot) = store.begin_incoming().unwrap();
        incoming.write_sync(stream).unwrap();
        assert!(store.install_incoming(incoming, slot, Some(meta), None).is_err());
        assert_eq!(target.journal(BLOCKS_JOURNALS[slot]).unwrap().last().unwrap(), None);
        assert_eq!(snapshot_of(&store.shared), before);
    }
    target.crash();
    let reopened = StateMachineStore::open(&target).await.unwrap();
    assert_eq!(snapshot_of(&reopened.shared).0.polls, before.0.polls);
}

/// The way openraft moves a snapshot: the sender seeks and reads chunks, the receiver
/// seeks and writes them, and a chunk may be sent twice. Small chunks cross frames.
#[tokio::test]
async fn a_snapshot_sent_in_chunks_with_a_resend_installs() {
    use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
    let db = MemDb::new();
    let mut sm = StateMachineStore::open(&db).await.unwrap();
    sm.apply(sample_log_with_vote_change()).await.unwrap();
    let snapshot = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let mut sending = snapshot.snapshot;
    let end = sending.seek(std::io::SeekFrom::End(0)).await.unwrap();

    let other_db = MemDb::new();
    let mut other = StateMachineStore::open(&other_db).await.unwrap();
    let mut receiving = other.begin_receiving_snapshot().await.unwrap();
    let mut offset = 0;
    let mut resent = false;
    while offset < end {
        sending.seek(std::io::SeekFrom::Start(offset)).await.unwrap();
        let mut chunk = vec![0; 37];
        let n = sending.read(&mut chunk).await.unwrap();
        chunk.truncate(n);
        receiving.seek(std::io::SeekFrom::Start(offset)).await.unwrap();
        receiving.write_all(&chunk).await.unwrap();
        if offset > 100 && !resent {
            // The reply was lost: the same chunk again, from the same offset.
            resent = true;
            continue;
        }
        offset += n as u64;
    }
    other.install_snapshot(&snapshot.meta, receiving).await.unwrap();
    assert_eq!(snapshot_of(&other.shared), snapshot_of(&sm.shared));
    other.shared.read().state.check_invariants().unwrap();
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
    let EntryPayload::Normal(Request { command, .. }) = &mut log[0].payload else { unreachable!() };
    let Command::CreatePoll(spec) = std::sync::Arc::make_mut(command) else { unreachable!() };
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

/// A backup file, made as the node sends it.
fn backup_file(shared: &SmShared) -> (Vec<u8>, crate::backup::BackupInfo) {
    let (mut writer, mut info) = crate::backup::BackupWriter::new(shared.capture().unwrap());
    let mut file = Vec::new();
    while let Some(chunk) = writer.next_chunk(50).unwrap() {
        file.extend_from_slice(&chunk);
    }
    assert_eq!(file.len() as u64, info.bytes, "the length announced is the length sent");
    info.sha256 = crate::sm::hex(&file[file.len() - 32..]);
    (file, info)
}

/// A backup of one store restores into an empty one: the same state and hash, stored as
/// its current snapshot (which a learner is sent), and the log starting after it.
#[tokio::test]
async fn a_backup_restores_into_an_empty_store_as_its_current_snapshot() {
    let db = MemDb::new();
    let mut sm = StateMachineStore::open(&db).await.unwrap();
    sm.apply(sample_log()).await.unwrap();
    let (file, info) = backup_file(&sm.shared);
    let len = file.len() as u64;
    assert_eq!(crate::backup::inspect(&file[..], len).unwrap(), info);
    for at in [3, 40, file.len() - 40, file.len() - 1] {
        let mut damaged = file.clone();
        damaged[at] ^= 1;
        assert!(crate::backup::inspect(&damaged[..], len).is_err(), "a flipped bit at {at} is found");
    }
    assert!(crate::backup::inspect(&file[..file.len() - 1], len - 1).is_err(), "a file cut short is refused");

    let members = [(1, "a:1".to_string()), (2, "b:2".to_string())].into_iter().collect();
    let mut damaged = file.clone();
    damaged[60] ^= 1;
    let fresh = MemDb::new();
    assert!(crate::backup::restore(&fresh, &damaged[..], len, &members).await.is_err());
    // A failed restore installed nothing: the same directory takes the good file.
    let restored = crate::backup::restore(&fresh, &file[..], len, &members).await.unwrap();
    assert_eq!(restored, info);
    let mut reopened = StateMachineStore::open(&fresh).await.unwrap();
    assert_eq!(snapshot_of(&reopened.shared).0, snapshot_of(&sm.shared).0);
    let current = reopened.get_current_snapshot().await.unwrap().expect("a current snapshot");
    assert_eq!(current.meta.last_log_id.map(|l| l.index), Some(3));
    let SnapshotStream::Outgoing(mut stream) = *current.snapshot else { panic!("current snapshots are read") };
    let mut check = crate::snapshot::Incoming::new(None);
    check.write_sync(&read_all(&mut stream)).unwrap();
    let header = check.finish().unwrap();
    let original = snapshot_of(&sm.shared).0;
    assert_eq!((header.state.hash, header.state.votes_recorded), (original.hash, original.votes_recorded));
    assert_eq!(header.blocks, 2, "the snapshot carries the blocks");
    let mut log = LogStore::open(&fresh).unwrap();
    let state = openraft::storage::RaftLogStorage::get_log_state(&mut log).await.unwrap();
    assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(3));
    assert!(crate::backup::restore(&fresh, &file[..], len, &members).await.is_err(), "a used store is refused");
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
