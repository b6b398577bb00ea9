//! The simulated clients: many polls and voters, duplicate and concurrent attempts,
//! retries of unanswered requests with the same idempotency key, requests to any node,
//! and linearizable reads. Every request and its answer (or lack of one) goes into the
//! history; the workload itself judges nothing.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tally_api::v1::{CreatePollRequest, PollBody, ResultsBody, StatusBody};

use crate::history::{Event, History, Read, VoteAttempt};
use crate::net::{Answer, SimClient};

/// What the clients share.
pub struct Workload {
    pub seed: u64,
    pub nodes: u64,
    /// Voters per poll: few against many attempts make duplicates and races.
    pub voters: usize,
    /// Of the requests, this share (numerator, denominator) are linearizable reads.
    pub read_ratio: (u32, u32),
    /// Until this simulated time (ms), set by the harness after restarts and elections,
    /// half the requests are linearizable reads: that is when a read barrier is tested.
    pub read_burst_until_ms: Cell<u64>,
    pub fault_phase_end: Duration,
    /// Clients that have not finished yet: their last votes may still be in flight, and
    /// retried, after the fault phase.
    pub clients_running: Cell<usize>,
    /// (poll id, option ids), filled by the setup client.
    pub polls: RefCell<Vec<(String, Vec<String>)>>,
    pub history: Rc<RefCell<History>>,
    /// Post-heal timings (ms): reported, and hashed into the trace, not in the history.
    pub timings: RefCell<Vec<(&'static str, u64)>>,
}

/// Attempts at one vote: the first and its retries with the same key.
const ATTEMPTS_MAX: usize = 4;
/// Attempts at creating each poll during setup.
const CREATE_ATTEMPTS_MAX: usize = 100;
/// A client waits this long for an answer before calling it none.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(8);
/// The longest a client's last vote can take after the fault phase: every attempt timing
/// out, with the longest pause between attempts.
pub const CLIENT_DRAIN_MAX: Duration = Duration::from_secs(ATTEMPTS_MAX as u64 * (CLIENT_TIMEOUT.as_secs() + 1));

pub fn now_ms() -> u64 {
    turmoil::elapsed().as_millis() as u64
}

impl Workload {
    fn record(&self, event: Event) {
        self.history.borrow_mut().push(event);
    }

    /// Creates `count` polls, each through a random node, retrying until created (at most
    /// `CREATE_ATTEMPTS_MAX` times: a cluster that cannot create a poll fails the run).
    pub async fn setup(self: Rc<Self>, count: usize) -> turmoil::Result {
        let client = SimClient::new(CLIENT_TIMEOUT);
        let mut rng = StdRng::seed_from_u64(self.seed ^ 0x5e7u64);
        for p in 0..count {
            let options = rng.gen_range(2..5);
            let body = CreatePollRequest::new(format!("poll {p}"), (0..options).map(|o| format!("option {o}")));
            for attempt in 0.. {
                if attempt == CREATE_ATTEMPTS_MAX {
                    return Err(format!("poll {p} not created in {CREATE_ATTEMPTS_MAX} attempts").into());
                }
                let node = rng.gen_range(1..=self.nodes);
                if let Some(Answer::Success(201, poll)) = client.post::<PollBody>(node, "/v1/polls", &body).await {
                    let id = poll.poll_id;
                    let option_ids = poll.options.into_iter().map(|o| o.option_id).collect();
                    self.record(Event::Note { at_ms: now_ms(), what: format!("created poll {id} on node{node}") });
                    self.polls.borrow_mut().push((id, option_ids));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }

    /// One client's loop until the fault phase ends.
    pub async fn client(self: Rc<Self>, index: usize) -> turmoil::Result {
        let name = format!("client{index}");
        let client = SimClient::new(CLIENT_TIMEOUT);
        let mut rng = StdRng::seed_from_u64(self.seed.wrapping_mul(31).wrapping_add(index as u64 + 1));
        while self.polls.borrow().is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut requests = 0u64;
        while turmoil::elapsed() < self.fault_phase_end {
            let (poll, options) = {
                let polls = self.polls.borrow();
                polls[rng.gen_range(0..polls.len())].clone()
            };
            // With no burst the draw is the same as before bursts existed, so old seeds
            // replay as they ran (seed 95059's regression depends on it).
            let reading = if now_ms() < self.read_burst_until_ms.get() {
                rng.gen_ratio(1, 2)
            } else {
                rng.gen_ratio(self.read_ratio.0, self.read_ratio.1)
            };
            if reading {
                self.read(&client, &name, &mut rng, &poll).await;
            } else {
                requests += 1;
                // Few voters, many attempts: duplicates and races are the point.
                let voter = format!("voter{}", rng.gen_range(0..self.voters));
                let option = if rng.gen_ratio(1, 20) {
                    "o99".to_string()
                } else {
                    options[rng.gen_range(0..options.len())].clone()
                };
                let key = format!("{name}-{requests}");
                self.vote(&client, &name, &mut rng, &poll, &voter, &option, &key).await;
            }
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..100))).await;
        }
        self.clients_running.set(self.clients_running.get().saturating_sub(1));
        Ok(())
    }

    /// Several clients on one simulated host: each is a task of its own, as `client`.
    pub async fn clients(self: Rc<Self>, indexes: Vec<usize>) -> turmoil::Result {
        let tasks: Vec<_> =
            indexes.into_iter().map(|index| tokio::task::spawn_local(self.clone().client(index))).collect();
        for task in tasks {
            task.await.map_err(|e| e.to_string())??;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn vote(
        &self,
        client: &SimClient,
        name: &str,
        rng: &mut StdRng,
        poll: &str,
        voter: &str,
        option: &str,
        key: &str,
    ) {
        for _ in 0..ATTEMPTS_MAX {
            let node = rng.gen_range(1..=self.nodes);
            let sent_ms = now_ms();
            let reply = client.vote(node, poll, voter, option, key).await;
            let definite = reply.as_ref().is_some_and(|answer| answer.status() < 500);
            self.record(Event::Vote(Box::new(VoteAttempt {
                client: name.to_string(),
                node,
                poll: poll.to_string(),
                voter: voter.to_string(),
                option: option.to_string(),
                key: key.to_string(),
                sent_ms,
                done_ms: now_ms(),
                reply,
            })));
            if definite {
                return;
            }
            // 503: nothing recorded; 504 or no answer: unknown. Either way the same key
            // makes a retry safe.
            tokio::time::sleep(Duration::from_millis(rng.gen_range(100..1_000))).await;
        }
    }

    async fn read(&self, client: &SimClient, name: &str, rng: &mut StdRng, poll: &str) {
        let node = rng.gen_range(1..=self.nodes);
        let sent_ms = now_ms();
        let path = format!("/v1/polls/{poll}/results?consistency=linearizable");
        if let Some(Answer::Success(200, body)) = client.get::<ResultsBody>(node, &path).await {
            self.record(Event::Read(Read {
                client: name.to_string(),
                node,
                poll: poll.to_string(),
                sent_ms,
                done_ms: now_ms(),
                total_votes: body.total_votes,
                applied_index: body.applied_index,
            }));
        }
    }

    /// After the heal: waits for every node to agree, then requires a new vote to be
    /// acknowledged, each within `bound` of simulated time. Records the outcome as notes.
    pub async fn liveness(self: Rc<Self>, bound: Duration) -> turmoil::Result {
        let client = SimClient::new(CLIENT_TIMEOUT);
        while turmoil::elapsed() < self.fault_phase_end {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let healed_at = now_ms();
        let converged = self.converged(&client, bound).await;
        // How long convergence took is kept out of the history (the notes carry the heal's
        // time), and goes into `timings`, which the trace hash covers after the history.
        let (what, took_ms) = match &converged {
            Some((index, hash)) => {
                (format!("converged after the heal at index {index}, state {hash}"), now_ms() - healed_at)
            }
            None => (format!("LIVENESS: nodes did not converge within {bound:?} of the heal"), now_ms() - healed_at),
        };
        self.record(Event::Note { at_ms: healed_at, what });
        self.timings.borrow_mut().push(("converged", took_ms));
        let poll = self.polls.borrow().first().cloned();
        if let (Some(_), Some((poll, options))) = (converged, poll) {
            let probe_started = now_ms();
            let acknowledged = crate::eventually(bound, || async {
                let node = (now_ms() / 1000) % self.nodes + 1;
                match client.vote(node, &poll, "liveness-probe", &options[0], "liveness-probe").await {
                    Some(Answer::Success(200, _)) => Some(()),
                    _ => None,
                }
            })
            .await;
            let what = match acknowledged {
                Some(()) => "probe vote acknowledged after convergence".to_string(),
                None => format!("LIVENESS: no new vote acknowledged within {bound:?} after the heal"),
            };
            self.record(Event::Note { at_ms: healed_at, what });
            self.timings.borrow_mut().push(("probe acknowledged", now_ms() - probe_started));
            // Votes still in flight at the heal are answered (and retried) after it: wait
            // for the clients to finish, so that the final states hold every vote.
            let drained =
                crate::eventually(CLIENT_DRAIN_MAX, || async { (self.clients_running.get() == 0).then_some(()) });
            if drained.await.is_none() {
                let what = format!("LIVENESS: clients still waiting for answers {CLIENT_DRAIN_MAX:?} after the probe");
                self.record(Event::Note { at_ms: healed_at, what });
            }
            // End with every node holding every vote, so that the final states compare.
            if self.converged(&client, bound).await.is_none() {
                let what = format!("LIVENESS: nodes did not converge within {bound:?} after the probe");
                self.record(Event::Note { at_ms: healed_at, what });
            }
        }
        Ok(())
    }

    /// Waits until every node knows a leader, has applied all it committed, and all agree
    /// on the applied index and state hash; returns those.
    async fn converged(&self, client: &SimClient, bound: Duration) -> Option<(u64, String)> {
        crate::eventually(bound, || async {
            let mut seen = Vec::new();
            for node in 1..=self.nodes {
                let status = client.get::<StatusBody>(node, "/v1/cluster/status").await?.success()?;
                let agreed = status.leader_id.is_some() && status.commit_index == Some(status.applied_index);
                agreed.then_some(())?;
                seen.push((status.applied_index, status.state_hash));
            }
            seen.iter().all(|s| *s == seen[0]).then(|| seen[0].clone())
        })
        .await
    }
}
