//! What applying a vote costs in the pure state machine, per vote, as the poll grows: one
//! entry of 64 new voters at a time (`cargo bench -p tally-raft --bench apply`). Every node
//! pays this for every vote, so three times per vote across a cluster. Building the
//! entry's intents is inside the measured loop, as decoding an entry is on a node.
//! And what writing a bulk entry's records costs: encoding a block of 1,000 of them.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tally_raft::model::{Command, PollId, PollSettings, PollSpec, Request, VoteIntent, VoteRecord, VoterId};
use tally_raft::sm::records::encode_block;
use tally_raft::sm::{State, Touched};

const VOTES_PER_ENTRY: u64 = 64;

fn request(index: u64, command: Command) -> Request {
    Request { timestamp_ms: index as i64, entropy: [index as u8; 16], command: command.into() }
}

fn poll_spec() -> PollSpec {
    PollSpec {
        poll_id: PollId("p".into()),
        title: "bench".into(),
        description: None,
        options: vec!["a".into(), "b".into(), "c".into()],
        start_time_ms: None,
        end_time_ms: None,
        settings: PollSettings::default(),
        owner: None,
    }
}

fn entry(first_voter: u64, regions: bool) -> Command {
    Command::CastVotes(
        (first_voter..first_voter + VOTES_PER_ENTRY)
            .map(|voter| VoteIntent {
                poll_id: PollId("p".into()),
                voter_id: VoterId(format!("voter-{voter}")),
                option_id: format!("o{}", voter % 3 + 1),
                idempotency_key: format!("key-{voter}"),
                attributes: if regions {
                    BTreeMap::from([("region".to_string(), format!("r{}", voter % 8))])
                } else {
                    BTreeMap::new()
                },
            })
            .collect(),
    )
}

/// Entries applied to one state before the bench starts a fresh one (untimed), so that
/// every sample sees a poll of the same size (up to 64,000 voters) rather than one that
/// grows with the number of iterations criterion happens to choose.
const ENTRIES_PER_STATE: u64 = 1_000;

fn fresh_state(regions: bool) -> (State, Touched) {
    let mut state = State::default();
    let mut touched = Touched::default();
    let mut spec = poll_spec();
    if regions {
        spec.settings.breakdowns = vec!["region".into()];
    }
    state.apply(1, &request(1, Command::CreatePoll(spec)), &mut touched).expect("a pure state reads from memory");
    (state, touched)
}

fn apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply");
    group.throughput(Throughput::Elements(VOTES_PER_ENTRY));
    for (name, regions) in [("64 new voters per entry", false), ("64 new voters per entry, with a region", true)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut taken = Duration::ZERO;
                let (mut state, mut touched) = fresh_state(regions);
                let mut index = 1;
                for _ in 0..iters {
                    if index > ENTRIES_PER_STATE {
                        (state, touched) = fresh_state(regions);
                        index = 1;
                    }
                    index += 1;
                    touched.clear();
                    let started = Instant::now();
                    let request = request(index, entry(index * VOTES_PER_ENTRY, regions));
                    let _ = black_box(state.apply(index, &request, &mut touched));
                    taken += started.elapsed();
                }
                taken
            });
        });
    }
    group.finish();
}

/// A bulk entry's records as `tally bench` makes them: a region, a client's key, a change
/// now and then.
fn block_records() -> Vec<VoteRecord> {
    (0..1000u64)
        .map(|voter| VoteRecord {
            voter_id: VoterId(format!("bench-1765151000-{voter}")),
            vote_key: (u128::from(voter) << 80) | 0x5eed_0000_1234_5678_9abc,
            option_index: (voter % 3) as u32,
            idempotency_key: format!("0b6f3c1e-8d2a-4f55-9e61-{voter:012x}"),
            attributes: (&BTreeMap::from([("region".to_string(), format!("r{}", voter % 8))])).into(),
            recorded_at_ms: 1_765_151_000_000 + voter as i64,
            chain: tally_raft::audit::ChainLink { position: voter, hash: [voter as u8; 32] },
            replaces: (voter % 50 == 0).then_some(voter << 24),
            changes: u8::from(voter % 50 == 0),
            log_index: 77,
        })
        .collect()
}

fn encode(c: &mut Criterion) {
    let records = block_records();
    let mut group = c.benchmark_group("block");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.bench_function("encode 1000 records", |b| b.iter(|| encode_block(&records).expect("records encode")));
    group.finish();
}

criterion_group!(benches, apply, encode);
criterion_main!(benches);
