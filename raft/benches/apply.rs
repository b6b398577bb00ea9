//! What applying a vote costs in the pure state machine, per vote, as the poll grows: one
//! entry of 64 new voters at a time (`cargo bench -p tally-raft --bench apply`). Every node
//! pays this for every vote, so three times per vote across a cluster. Building the
//! entry's intents is inside the measured loop, as decoding an entry is on a node.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tally_raft::model::{Command, PollId, PollSettings, PollSpec, Request, VoteIntent, VoterId};
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

fn entry(first_voter: u64) -> Command {
    Command::CastVotes(
        (first_voter..first_voter + VOTES_PER_ENTRY)
            .map(|voter| VoteIntent {
                poll_id: PollId("p".into()),
                voter_id: VoterId(format!("voter-{voter}")),
                option_id: format!("o{}", voter % 3 + 1),
                idempotency_key: format!("key-{voter}"),
                attributes: Default::default(),
            })
            .collect(),
    )
}

fn apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply");
    group.throughput(Throughput::Elements(VOTES_PER_ENTRY));
    group.bench_function("64 new voters per entry", |b| {
        let mut state = State::default();
        let mut touched = Touched::default();
        state
            .apply(1, &request(1, Command::CreatePoll(poll_spec())), &mut touched)
            .expect("a pure state reads from memory");
        let mut index = 1;
        b.iter(|| {
            index += 1;
            touched.clear();
            let request = request(index, entry(index * VOTES_PER_ENTRY));
            state.apply(index, &request, &mut touched)
        });
    });
    group.finish();
}

criterion_group!(benches, apply);
criterion_main!(benches);
