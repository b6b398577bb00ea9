use proptest::prelude::*;

use super::*;

fn spec(id: &str, options: usize, allow_vote_change: bool) -> PollSpec {
    PollSpec {
        poll_id: PollId(id.into()),
        title: format!("poll {id}"),
        description: None,
        options: (0..options).map(|i| format!("option {i}")).collect(),
        start_time_ms: None,
        end_time_ms: None,
        settings: PollSettings { allow_vote_change, ..PollSettings::default() },
        owner: None,
    }
}

fn vote(poll: &str, voter: &str, option: usize, key: &str) -> VoteIntent {
    VoteIntent {
        poll_id: PollId(poll.into()),
        voter_id: VoterId(voter.into()),
        option_id: format!("o{}", option + 1),
        idempotency_key: key.into(),
        attributes: Default::default(),
    }
}

fn request(timestamp_ms: i64, command: Command) -> Request {
    Request { timestamp_ms, entropy: [timestamp_ms as u8; 16], command: command.into() }
}

/// The id of the vote in `slot` of the entry at `index` that [`request`] made at `timestamp_ms`.
fn vid(timestamp_ms: i64, index: u64, slot: usize) -> String {
    vote_id(&[timestamp_ms as u8; 16], index, slot)
}

fn apply_all(log: &[Request]) -> (State, Vec<Response>) {
    let mut state = State::default();
    let mut touched = Touched::default();
    let responses = log.iter().enumerate().map(|(i, r)| state.apply(i as u64 + 1, r, &mut touched).unwrap()).collect();
    (state, responses)
}

/// Every version of the voter's vote, latest first, walked back through `replaces`.
fn versions(state: &State, poll: &str, voter: &str) -> Vec<VoteRecord> {
    let poll = &state.polls[&PollId(poll.into())];
    let mut at = poll.votes.current(&VoterId(voter.into())).unwrap().map(|(loc, _)| loc);
    let mut out = Vec::new();
    while let Some(loc) = at {
        let record = poll.votes.read(loc).unwrap();
        at = record.replaces;
        out.push(record);
    }
    out
}

fn outcomes(response: &Response) -> &[VoteOutcome] {
    match response {
        Response::Votes(outcomes) => outcomes,
        other => panic!("expected votes, got {other:?}"),
    }
}

#[test]
fn one_vote_per_voter_and_replay_by_key() {
    let log = vec![
        request(10, Command::CreatePoll(spec("p", 3, false))),
        request(11, Command::CastVotes(vec![vote("p", "alice", 0, "k1"), vote("p", "alice", 1, "k2")])),
        request(12, Command::CastVotes(vec![vote("p", "alice", 2, "k1")])),
        request(13, Command::CastVotes(vec![vote("p", "alice", 0, "k1")])),
    ];
    let (state, responses) = apply_all(&log);
    let first = outcomes(&responses[1]);
    let VoteOutcome::Recorded(receipt) = &first[0] else { panic!("{first:?}") };
    assert_eq!(receipt.vote_id, vid(11, 2, 0));
    assert!(matches!(
        &first[1],
        VoteOutcome::Rejected(VoteRejection::AlreadyVoted { vote_id, option_id, .. })
            if *vote_id == vid(11, 2, 0) && option_id == "o1"
    ));
    // The same key with another option is another request: refused, and nothing moves
    // (API.md: 422 IDEMPOTENCY_KEY_REUSED). The same request again: the original receipt.
    assert_eq!(
        outcomes(&responses[2])[0],
        VoteOutcome::Rejected(VoteRejection::IdempotencyKeyReused { vote_id: vid(11, 2, 0) })
    );
    assert_eq!(outcomes(&responses[3])[0], VoteOutcome::Replayed { receipt: receipt.clone(), changed: false });
    assert_eq!(state.polls[&PollId("p".into())].counts, vec![1, 0, 0]);
    state.check_invariants().unwrap();
}

#[test]
fn closed_polls_refuse_new_votes_but_replay_old_ones() {
    let log = vec![
        request(10, Command::CreatePoll(spec("p", 2, false))),
        request(11, Command::CastVotes(vec![vote("p", "alice", 0, "k1")])),
        request(
            12,
            Command::UpdatePoll { poll_id: PollId("p".into()), patch: PollPatch { close: true, ..Default::default() } },
        ),
        request(13, Command::CastVotes(vec![vote("p", "bob", 0, "k2"), vote("p", "alice", 0, "k1")])),
        request(
            14,
            Command::UpdatePoll {
                poll_id: PollId("p".into()),
                patch: PollPatch { end_time_ms: Some(99), ..Default::default() },
            },
        ),
    ];
    let (_, responses) = apply_all(&log);
    let late = outcomes(&responses[3]);
    assert_eq!(late[0], VoteOutcome::Rejected(VoteRejection::PollClosed));
    assert!(matches!(late[1], VoteOutcome::Replayed { .. }));
    assert!(matches!(responses[4], Response::Poll(Err(PollRejection::Invalid(_)))));
}

#[test]
fn schedule_is_judged_by_the_leader_timestamp_and_time_never_goes_back() {
    let mut scheduled = spec("p", 2, false);
    scheduled.start_time_ms = Some(100);
    scheduled.end_time_ms = Some(200);
    let log = vec![
        request(10, Command::CreatePoll(scheduled)),
        request(50, Command::CastVotes(vec![vote("p", "a", 0, "1")])),
        request(150, Command::CastVotes(vec![vote("p", "b", 0, "2")])),
        // A new leader whose clock is behind: time in the log does not go back.
        request(90, Command::CastVotes(vec![vote("p", "c", 0, "3")])),
        request(250, Command::CastVotes(vec![vote("p", "d", 0, "4")])),
    ];
    let (_, responses) = apply_all(&log);
    assert_eq!(outcomes(&responses[1])[0], VoteOutcome::Rejected(VoteRejection::PollNotOpen));
    assert!(matches!(outcomes(&responses[2])[0], VoteOutcome::Recorded(_)));
    assert!(matches!(outcomes(&responses[3])[0], VoteOutcome::Recorded(_)));
    assert_eq!(outcomes(&responses[4])[0], VoteOutcome::Rejected(VoteRejection::PollClosed));
}

#[test]
fn vote_change_moves_the_count() {
    let log = vec![
        request(10, Command::CreatePoll(spec("p", 2, true))),
        request(11, Command::CastVotes(vec![vote("p", "a", 0, "1")])),
        request(12, Command::CastVotes(vec![vote("p", "a", 1, "2")])),
    ];
    let (state, responses) = apply_all(&log);
    assert!(matches!(outcomes(&responses[2])[0], VoteOutcome::Changed(_)));
    let poll = &state.polls[&PollId("p".into())];
    assert_eq!(poll.counts, vec![0, 1]);
    assert_eq!(versions(&state, "p", "a").len(), 2);
    state.check_invariants().unwrap();
}

#[test]
fn a_late_retry_of_a_changed_vote_replays_instead_of_moving_it_back() {
    let log = vec![
        request(10, Command::CreatePoll(spec("p", 2, true))),
        request(11, Command::CastVotes(vec![vote("p", "a", 0, "first")])),
        request(12, Command::CastVotes(vec![vote("p", "a", 1, "second")])),
        request(13, Command::CastVotes(vec![vote("p", "a", 0, "first"), vote("p", "a", 1, "second")])),
    ];
    let (state, responses) = apply_all(&log);
    let VoteOutcome::Recorded(first) = &outcomes(&responses[1])[0] else { panic!() };
    let VoteOutcome::Changed(second) = &outcomes(&responses[2])[0] else { panic!() };
    let retries = outcomes(&responses[3]);
    assert_eq!(retries[0], VoteOutcome::Replayed { receipt: first.clone(), changed: false });
    assert_eq!(retries[1], VoteOutcome::Replayed { receipt: second.clone(), changed: true });
    assert_eq!(state.polls[&PollId("p".into())].counts, vec![0, 1]);
}

#[test]
fn vote_changes_are_bounded() {
    let mut log = vec![request(10, Command::CreatePoll(spec("p", 2, true)))];
    for n in 0..=crate::limits::VOTE_CHANGES_MAX + 1 {
        log.push(request(11 + n as i64, Command::CastVotes(vec![vote("p", "a", n % 2, &format!("k{n}"))])));
    }
    let (state, responses) = apply_all(&log);
    let last = &outcomes(responses.last().unwrap())[0];
    assert!(matches!(last, VoteOutcome::Rejected(VoteRejection::TooManyChanges { .. })), "{last:?}");
    assert_eq!(versions(&state, "p", "a").len(), crate::limits::VOTE_CHANGES_MAX + 1);
    state.check_invariants().unwrap();
}

#[test]
fn a_retried_create_or_patch_answers_as_the_first_time() {
    let mut ending = spec("p", 2, false);
    ending.end_time_ms = Some(100);
    let log = vec![
        request(10, Command::CreatePoll(ending.clone())),
        request(11, Command::CreatePoll(ending.clone())),
        request(12, Command::CreatePoll(spec("p", 3, false))),
        request(
            150,
            Command::UpdatePoll {
                poll_id: PollId("p".into()),
                patch: PollPatch { end_time_ms: Some(100), ..Default::default() },
            },
        ),
    ];
    let (_, responses) = apply_all(&log);
    assert_eq!(responses[0], responses[1]);
    assert_eq!(responses[2], Response::Poll(Err(PollRejection::AlreadyExists)));
    assert!(matches!(responses[3], Response::Poll(Ok(_))), "{:?}", responses[3]);
}

#[test]
fn unknown_poll_option_and_attribute_are_rejected() {
    let mut with_region = vote("p", "a", 0, "1");
    with_region.attributes.insert("region".into(), "CA".into());
    let log = vec![
        request(10, Command::CreatePoll(spec("p", 2, false))),
        request(11, Command::CastVotes(vec![vote("nope", "a", 0, "1"), vote("p", "a", 7, "1"), with_region])),
    ];
    let (state, responses) = apply_all(&log);
    let got = outcomes(&responses[1]);
    assert_eq!(got[0], VoteOutcome::Rejected(VoteRejection::PollNotFound));
    assert_eq!(got[1], VoteOutcome::Rejected(VoteRejection::InvalidOption));
    assert!(matches!(got[2], VoteOutcome::Rejected(VoteRejection::InvalidAttributes(_))));
    assert_eq!(state.votes_recorded, 0);
}

/// A vote with a `region` attribute, or none for `region` 3 and over.
fn vote_in(poll: &str, voter: &str, option: usize, key: &str, region: u8) -> VoteIntent {
    let mut intent = vote(poll, voter, option, key);
    if let Some(name) = ["CA", "NY", "TX"].get(region as usize) {
        intent.attributes.insert("region".into(), name.to_string());
    }
    intent
}

fn spec_by_region(id: &str, options: usize, allow_vote_change: bool) -> PollSpec {
    let mut spec = spec(id, options, allow_vote_change);
    spec.settings.breakdowns = vec!["region".into()];
    spec
}

#[test]
fn breakdowns_follow_recorded_and_changed_votes() {
    let log = vec![
        request(10, Command::CreatePoll(spec_by_region("p", 2, true))),
        request(11, Command::CastVotes(vec![vote_in("p", "a", 0, "1", 0), vote_in("p", "b", 0, "2", 0)])),
        request(12, Command::CastVotes(vec![vote_in("p", "c", 1, "3", 3)])),
        // a moves to option 2 and to NY: CA keeps only b's vote.
        request(13, Command::CastVotes(vec![vote_in("p", "a", 1, "4", 1)])),
        // b moves to no region: CA disappears rather than stay as zeros.
        request(14, Command::CastVotes(vec![vote_in("p", "b", 1, "5", 3)])),
    ];
    let (state, _) = apply_all(&log);
    let poll = &state.polls[&PollId("p".into())];
    let expected: Breakdowns = BTreeMap::from([("region".into(), BTreeMap::from([("NY".into(), vec![0, 1])]))]);
    assert_eq!(poll.breakdowns, expected);
    assert_eq!(poll.counts, vec![0, 3]);
    assert_eq!(state.check_invariants(), Ok(()));
}

#[test]
fn receipts_chain_every_version_of_every_vote_in_log_order() {
    let log = vec![
        request(10, Command::CreatePoll(spec_by_region("p", 2, true))),
        request(11, Command::CastVotes(vec![vote_in("p", "a", 0, "1", 0), vote_in("p", "b", 0, "2", 1)])),
        request(12, Command::CastVotes(vec![vote_in("p", "a", 1, "3", 0)])),
    ];
    let (state, responses) = apply_all(&log);
    let poll = &state.polls[&PollId("p".into())];
    let trail = poll.audit_trail().unwrap();
    let ids: Vec<_> = trail.iter().map(|e| (e.vote_id.clone(), e.chain.position, e.current)).collect();
    assert_eq!(ids, vec![(vid(11, 2, 0), 0, false), (vid(11, 2, 1), 1, true), (vid(12, 3, 0), 2, true)]);
    assert_eq!(trail[2].replaces, Some(vid(11, 2, 0)));
    assert_eq!(poll.chain_head, trail[2].chain.hash);
    let VoteOutcome::Changed(changed) = &outcomes(&responses[2])[0] else { panic!() };
    assert_eq!(changed.chain, trail[2].chain);
    assert_eq!(poll.find_vote(&vid(11, 2, 0)).unwrap().unwrap().chain, trail[0].chain);
    assert_eq!(poll.find_vote(&vid(11, 9, 9)), Ok(None));
    // An id names its entry (as the receipt's log_index does), but its digest is not
    // guessable: the entry's index with another digest finds nothing, nor does the old
    // `v{index}.{slot}` form, an id in capitals or of another length.
    let real = vid(11, 2, 0);
    let guessed = format!("{}{}", &real[..13], if &real[13..14] == "0" { "1" } else { "0" }) + &real[14..];
    assert_eq!(super::vote_key_index(super::vote_key(&guessed).unwrap()), 2);
    assert_eq!(poll.find_vote(&guessed), Ok(None));
    assert_eq!(poll.find_vote("v2.0"), Ok(None));
    assert_eq!(poll.find_vote(&real.to_uppercase().replacen('V', "v", 1)), Ok(None));
    assert_eq!(poll.find_vote(&real[..21]), Ok(None));
    assert_eq!(super::vote_key("v00000000000000000000000000000001"), Some(1));
    assert_eq!(super::vote_key(&format!("v{}", "f".repeat(32))), Some(u128::MAX));
    assert_eq!(super::vote_key(&format!("v{}", "f".repeat(20))), None);
    assert_eq!(state.check_invariants(), Ok(()));

    // Any edit to a stored vote breaks the chain, and the check says so.
    let mut tampered = state.clone();
    let votes = &mut tampered.polls.get_mut(&PollId("p".into())).unwrap().votes;
    votes.tamper(super::records::loc(2, 0), |a| a.recorded_at_ms += 1);
    let error = tampered.check_invariants().unwrap_err();
    assert!(error.contains(&vid(11, 2, 0)), "{error}");
}

/// A random log over a few polls, voters, options, keys and regions, so that duplicates,
/// replays, changes (across regions) and closes are frequent.
fn arb_log() -> impl Strategy<Value = Vec<Request>> {
    let command = prop_oneof![
        1 => (0u8..3, 2usize..5, any::<bool>()).prop_map(|(p, n, change)| Command::CreatePoll(spec_by_region(&format!("p{p}"), n, change))),
        1 => (0u8..3).prop_map(|p| Command::UpdatePoll {
            poll_id: PollId(format!("p{p}")),
            patch: PollPatch { close: true, ..Default::default() },
        }),
        8 => proptest::collection::vec((0u8..3, 0u8..6, 0usize..5, 0u8..3, 0u8..5), 1..8).prop_map(|votes| {
            Command::CastVotes(votes.into_iter().map(|(p, v, o, k, r)| vote_in(&format!("p{p}"), &format!("v{v}"), o, &format!("k{k}"), r)).collect())
        }),
    ];
    proptest::collection::vec((0i64..1000, command), 1..40)
        .prop_map(|entries| entries.into_iter().map(|(t, c)| request(t, c)).collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Vote ids are in receipts already handed out: spelled by hand, they must stay what
    /// `format!` spelled, and parse back to their key.
    #[test]
    fn vote_ids_are_spelled_as_before(key in any::<u128>()) {
        let id = format_vote_id(key);
        prop_assert_eq!(&id, &format!("v{key:032x}"));
        prop_assert_eq!(vote_key(&id), Some(key));
    }

    #[test]
    fn counts_always_equal_a_recount(log in arb_log()) {
        let (state, _) = apply_all(&log);
        prop_assert_eq!(state.check_invariants(), Ok(()));
    }

    #[test]
    fn at_most_one_recorded_vote_per_poll_and_voter(log in arb_log()) {
        let (state, responses) = apply_all(&log);
        let mut recorded = BTreeMap::new();
        for (i, response) in responses.iter().enumerate() {
            if let Response::Votes(outcomes) = response {
                let Command::CastVotes(intents) = &*log[i].command else { unreachable!() };
                for (intent, outcome) in intents.iter().zip(outcomes) {
                    if let VoteOutcome::Recorded(receipt) = outcome {
                        let previous = recorded.insert((intent.poll_id.clone(), intent.voter_id.clone()), receipt.clone());
                        let allows_change = state.polls[&intent.poll_id].poll.settings.allow_vote_change;
                        prop_assert!(previous.is_none() || allows_change, "second Recorded for {:?}", intent);
                    }
                }
            }
        }
        for state in state.polls.values() {
            prop_assert!(state.votes.len() == state.total_votes());
        }
    }

    #[test]
    fn replaying_a_key_returns_the_original_receipt(log in arb_log()) {
        let (mut state, responses) = apply_all(&log);
        let next = log.len() as u64 + 1;
        let mut touched = Touched::default();
        for (i, response) in responses.iter().enumerate() {
            let (Response::Votes(outcomes), Command::CastVotes(intents)) = (response, &*log[i].command) else { continue };
            for (intent, outcome) in intents.iter().zip(outcomes) {
                let (receipt, changed) = match outcome {
                    VoteOutcome::Recorded(receipt) => (receipt, false),
                    VoteOutcome::Changed(receipt) => (receipt, true),
                    _ => continue,
                };
                // Keys repeat in this log: only the last request with a key is its owner.
                let owner = versions(&state, intent.poll_id.as_str(), intent.voter_id.as_str())
                    .into_iter()
                    .find(|version| version.idempotency_key == intent.idempotency_key);
                if owner.map(|version| version.vote_id()) != Some(receipt.vote_id.clone()) { continue }
                let before = state.polls[&intent.poll_id].counts.clone();
                let again = state.apply(next, &request(0, Command::CastVotes(vec![intent.clone()])), &mut touched).unwrap();
                prop_assert_eq!(outcomes_of(&again), vec![VoteOutcome::Replayed { receipt: receipt.clone(), changed }]);
                prop_assert_eq!(&state.polls[&intent.poll_id].counts, &before);
            }
        }
    }

    #[test]
    fn every_receipt_is_found_at_its_place_in_the_chain(log in arb_log()) {
        let (state, responses) = apply_all(&log);
        for response in &responses {
            let Response::Votes(outcomes) = response else { continue };
            for outcome in outcomes {
                let (VoteOutcome::Recorded(receipt) | VoteOutcome::Changed(receipt)) = outcome else { continue };
                let poll = &state.polls[&receipt.poll_id];
                let entry = poll.find_vote(&receipt.vote_id).unwrap();
                prop_assert_eq!(entry.map(|e| e.chain), Some(receipt.chain));
                prop_assert_eq!(poll.audit_trail().unwrap()[receipt.chain.position as usize].chain, receipt.chain);
            }
        }
    }

    #[test]
    fn audit_pages_of_any_size_join_up_to_the_whole_trail(log in arb_log(), size in 1usize..5) {
        let (state, _) = apply_all(&log);
        prop_assert_eq!(state.check_invariants(), Ok(()));
        for poll in state.polls.values() {
            let mut joined = Vec::new();
            loop {
                let page = poll.audit_page(joined.len() as u64, size).unwrap();
                if page.is_empty() {
                    break;
                }
                prop_assert!(page.len() <= size);
                joined.extend(page);
            }
            prop_assert_eq!(&joined, &poll.audit_trail().unwrap());
        }
    }

    #[test]
    fn applying_the_same_log_twice_gives_the_same_hash(log in arb_log()) {
        let (first, first_responses) = apply_all(&log);
        let (second, second_responses) = apply_all(&log);
        prop_assert_eq!(first.hash, second.hash);
        prop_assert_eq!(&first, &second);
        prop_assert_eq!(first_responses, second_responses);
    }

    #[test]
    fn a_different_log_gives_a_different_hash(log in arb_log(), extra in 0i64..1000) {
        let (first, _) = apply_all(&log);
        let mut longer = log.clone();
        longer.push(request(extra, Command::CastVotes(vec![vote("p0", "x", 0, "x")])));
        let (second, _) = apply_all(&longer);
        prop_assert_ne!(first.hash, second.hash);
    }
}

fn outcomes_of(response: &Response) -> Vec<VoteOutcome> {
    outcomes(response).to_vec()
}

#[test]
fn usernames_are_unique_and_a_retried_create_answers_as_the_first_time() {
    let user = |hash: &str| Command::CreateUser { username: "alice".into(), password_hash: hash.into() };
    let log = vec![request(10, user("h1")), request(11, user("h1")), request(12, user("h2"))];
    let (state, responses) = apply_all(&log);
    assert_eq!(
        responses,
        vec![Response::User(Ok(10)), Response::User(Ok(10)), Response::User(Err(UserRejection::UsernameTaken))]
    );
    assert_eq!(state.users["alice"].password_hash, "h1");
}

#[test]
fn a_password_changes_only_for_an_existing_account() {
    let create = Command::CreateUser { username: "alice".into(), password_hash: "h1".into() };
    let set = |name: &str, hash: &str, expected: Option<&str>| Command::SetPassword {
        username: name.into(),
        password_hash: hash.into(),
        expected_hash: expected.map(str::to_string),
    };
    let log = vec![
        request(10, create),
        request(11, set("alice", "h2", Some("h1"))),
        request(12, set("bob", "h2", None)),
        // Judged against h1 on a replica that had not applied h2 yet: refused.
        request(13, set("alice", "h3", Some("h1"))),
        // An admin's reset sets whatever is there.
        request(14, set("alice", "h4", None)),
    ];
    let (state, responses) = apply_all(&log);
    let expected = [
        Response::User(Ok(11)),
        Response::User(Err(UserRejection::NoSuchUser)),
        Response::User(Err(UserRejection::PasswordChanged)),
        Response::User(Ok(14)),
    ];
    assert_eq!(responses[1..], expected);
    assert_eq!(state.users["alice"].password_hash, "h4");
    assert_eq!(state.users["alice"].created_at_ms, 10, "the account keeps its creation time");
    assert!(!state.users.contains_key("bob"), "a password change creates no account");
}

#[test]
fn a_breakdown_attribute_takes_a_bounded_number_of_distinct_values() {
    use crate::limits::ATTRIBUTE_VALUES_MAX;
    let mut log = vec![request(10, Command::CreatePoll(spec_by_region("p", 2, false)))];
    let with_value = |voter: usize, value: String| {
        let mut intent = vote("p", &format!("v{voter}"), 0, &format!("k{voter}"));
        intent.attributes.insert("region".into(), value);
        intent
    };
    let full: Vec<_> = (0..ATTRIBUTE_VALUES_MAX).map(|n| with_value(n, format!("r{n}"))).collect();
    for entry in full.chunks(crate::limits::VOTES_PER_ENTRY_MAX) {
        log.push(request(11, Command::CastVotes(entry.to_vec())));
    }
    let over = ATTRIBUTE_VALUES_MAX;
    log.push(request(12, Command::CastVotes(vec![with_value(over, "new".into()), with_value(over + 1, "r7".into())])));
    let (state, responses) = apply_all(&log);
    let last = outcomes(responses.last().unwrap());
    assert!(matches!(&last[0], VoteOutcome::Rejected(VoteRejection::InvalidAttributes(_))), "{last:?}");
    assert!(matches!(&last[1], VoteOutcome::Recorded(_)), "an existing value is still fine: {last:?}");
    assert_eq!(state.polls[&PollId("p".into())].breakdowns["region"].len(), ATTRIBUTE_VALUES_MAX);
}

#[test]
fn a_no_space_alarm_refuses_new_votes_until_cleared_but_still_answers_retries() {
    let alarm = |raised| Command::SetAlarm { node_id: 3, raised };
    let log = vec![
        request(10, Command::CreatePoll(spec("p", 2, false))),
        request(11, Command::CastVotes(vec![vote("p", "alice", 0, "ka")])),
        request(12, alarm(true)),
        request(13, Command::CastVotes(vec![vote("p", "bob", 1, "kb"), vote("p", "alice", 0, "ka")])),
        request(14, alarm(false)),
        request(15, Command::CastVotes(vec![vote("p", "bob", 1, "kb")])),
    ];
    let (state, responses) = apply_all(&log);
    let during = outcomes(&responses[3]);
    assert_eq!(during[0], VoteOutcome::Rejected(VoteRejection::NoSpace { nodes: vec![3] }));
    assert!(matches!(during[1], VoteOutcome::Replayed { .. }), "{:?}", during[1]);
    assert!(matches!(outcomes(&responses[5])[0], VoteOutcome::Recorded(_)), "{:?}", responses[5]);
    assert!(state.alarms.is_empty());
    assert_eq!(state.polls[&PollId("p".into())].counts, vec![1, 1]);
    state.check_invariants().unwrap();
}
