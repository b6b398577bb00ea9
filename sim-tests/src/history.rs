//! What the simulated clients saw, in the order it happened: the checker's input.

use std::fmt;

use tally_api::v1::VoteBody;

use crate::net::Answer;

/// The answer to one vote: the node's, or none within the client's timeout (or the
/// connection broke).
pub type Reply = Option<Answer<VoteBody>>;

#[derive(Debug, Clone, PartialEq)]
pub struct VoteAttempt {
    pub client: String,
    pub node: u64,
    pub poll: String,
    pub voter: String,
    pub option: String,
    pub key: String,
    pub sent_ms: u64,
    pub done_ms: u64,
    pub reply: Reply,
}

impl VoteAttempt {
    /// The vote id this attempt was acknowledged with (`200`), if it was.
    pub fn acknowledged(&self) -> Option<&str> {
        match &self.reply {
            Some(Answer::Success(200, body)) => Some(&body.vote_id),
            _ => None,
        }
    }
}

/// A `consistency=linearizable` results read that succeeded.
#[derive(Debug, Clone, PartialEq)]
pub struct Read {
    pub client: String,
    pub node: u64,
    pub poll: String,
    pub sent_ms: u64,
    pub done_ms: u64,
    pub total_votes: u64,
    pub applied_index: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Boxed: an attempt carries its whole reply, many times the size of other events.
    Vote(Box<VoteAttempt>),
    Read(Read),
    /// The fault schedule did something.
    Fault {
        at_ms: u64,
        what: String,
    },
    /// A milestone (polls created, cluster converged, ...).
    Note {
        at_ms: u64,
        what: String,
    },
}

impl Event {
    pub fn at_ms(&self) -> u64 {
        match self {
            Event::Vote(v) => v.done_ms,
            Event::Read(r) => r.done_ms,
            Event::Fault { at_ms, .. } | Event::Note { at_ms, .. } => *at_ms,
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Vote(v) => {
                let reply = match &v.reply {
                    None => "no answer".to_string(),
                    Some(Answer::Success(status, body)) => {
                        format!("{status} {} {}", body.status.as_str(), body.vote_id)
                    }
                    Some(Answer::Refused(status, error)) => {
                        let code = error.as_ref().map_or("?", |e| e.code.as_str());
                        match error.as_ref().and_then(|e| e.context_str("vote_id")) {
                            Some(id) => format!("{status} {code} (recorded: {id})"),
                            None => format!("{status} {code}"),
                        }
                    }
                };
                write!(
                    f,
                    "{:>7}ms {:<8} vote  node{} poll={} voter={} option={} key={} sent={}ms -> {reply}",
                    v.done_ms, v.client, v.node, v.poll, v.voter, v.option, v.key, v.sent_ms
                )
            }
            Event::Read(r) => write!(
                f,
                "{:>7}ms {:<8} read  node{} poll={} linearizable sent={}ms -> total {} at index {}",
                r.done_ms, r.client, r.node, r.poll, r.sent_ms, r.total_votes, r.applied_index
            ),
            Event::Fault { at_ms, what } => write!(f, "{at_ms:>7}ms fault    {what}"),
            Event::Note { at_ms, what } => write!(f, "{at_ms:>7}ms note     {what}"),
        }
    }
}

/// Every event of a run, in the order the simulation produced them.
#[derive(Debug, Default, Clone)]
pub struct History {
    pub events: Vec<Event>,
}

impl History {
    pub fn push(&mut self, event: Event) {
        self.events.push(event);
    }

    pub fn votes(&self) -> impl Iterator<Item = &VoteAttempt> {
        self.events.iter().filter_map(|e| match e {
            Event::Vote(v) => Some(&**v),
            _ => None,
        })
    }

    pub fn reads(&self) -> impl Iterator<Item = &Read> {
        self.events.iter().filter_map(|e| match e {
            Event::Read(r) => Some(r),
            _ => None,
        })
    }

    /// The events about one (poll, voter), and every fault: the slice that explains a
    /// violation about that vote.
    pub fn slice(&self, poll: &str, voter: &str) -> Vec<&Event> {
        self.events
            .iter()
            .filter(|e| match e {
                Event::Vote(v) => v.poll == poll && v.voter == voter,
                Event::Fault { .. } => true,
                _ => false,
            })
            .collect()
    }
}
