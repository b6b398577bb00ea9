//! `/v1/polls/{poll_id}/results`: eventual (this node's applied state) or linearizable,
//! and `/results/stream`, the same as server-sent events on every change.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Extension;
use axum::Json;
use futures::Stream;
use tally_actors::{LiveFeed, LiveResults};
use tally_api::v1::{Breakdown, Consistency, OptionResult, ResultsBody, ResultsQuery};
use tally_raft::model::{PollId, VoterId};

use super::error::{ApiError, ApiResult};
use super::extract::ApiQuery;
use crate::auth::Identity;
use crate::clock::format_ms;
use crate::App;

fn percentage(votes: u64, total: u64) -> f64 {
    if total == 0 {
        return 0.0;
    }
    (votes as f64 * 1000.0 / total as f64).round() / 10.0
}

pub fn body(app: &App, live: &LiveResults, consistency: Consistency) -> ResultsBody {
    let poll = &live.poll;
    let total_votes = live.counts.iter().sum();
    ResultsBody {
        poll_id: poll.poll_id.0.clone(),
        title: poll.title.clone(),
        status: poll.status_at(app.node.clock.now_ms()),
        total_votes,
        options: poll
            .options
            .iter()
            .zip(&live.counts)
            .map(|(option, &votes)| OptionResult {
                option_id: option.option_id.clone(),
                label: option.text.clone(),
                votes,
                percentage: percentage(votes, total_votes),
            })
            .collect(),
        as_of: format_ms(live.as_of_ms),
        applied_index: live.applied_index,
        served_by: app.node.id,
        consistency,
        breakdown: None,
    }
}

/// The poll's counts and, for `breakdown`, votes per attribute value and option, all
/// from one read of this node's applied state so that the two agree.
fn from_state(app: &App, poll_id: &PollId, breakdown: Option<&str>) -> Option<(LiveResults, Option<Breakdown>)> {
    let applied = app.node.sm.read();
    let state = applied.state.polls.get(poll_id)?;
    let live = crate::source::live_results(&applied, poll_id)?;
    let counts = breakdown.map(|name| {
        let values = state.breakdowns.get(name).into_iter().flatten();
        values
            .map(|(value, per_option)| {
                let by_option = state.poll.options.iter().zip(per_option).filter(|(_, votes)| **votes > 0);
                (value.clone(), by_option.map(|(option, votes)| (option.option_id.clone(), *votes)).collect())
            })
            .collect::<Breakdown>()
    });
    Some((live, counts))
}

/// Get a poll's results.
///
/// `eventual` (default) reads this node's applied state; `linearizable` reflects every vote
/// recorded before the request began.
#[utoipa::path(get, path = "/v1/polls/{poll_id}/results", operation_id = "getResults", tag = "results", params(("poll_id" = String, Path), ResultsQuery),
    responses((status = 200, body = ResultsBody), (status = 403, description = "results hidden while voting")))]
pub async fn get(
    State(app): State<Arc<App>>,
    Path(poll_id): Path<String>,
    Extension(identity): Extension<Identity>,
    ApiQuery(query): ApiQuery<ResultsQuery>,
) -> ApiResult<Json<ResultsBody>> {
    let poll = app.known_poll(&poll_id).await?;
    if let Some(name) = &query.breakdown {
        if !poll.settings.breakdowns.contains(name) {
            return Err(ApiError::invalid(format!("{name:?} is not one of the poll's breakdowns")));
        }
    }
    let consistency = query.consistency.unwrap_or(Consistency::Eventual);
    if consistency == Consistency::Linearizable {
        app.node.linearizable_barrier().await?;
    }
    // Read from the state machine, not from the poll actor's copy: that copy is as of the
    // poll's last change (and may be a refresh behind a barrier), while `applied_index`
    // tells how fresh this node is, and a read lock costs less than the actor's round trip.
    let (live, breakdown) = from_state(&app, &poll.poll_id, query.breakdown.as_deref())
        .ok_or_else(|| ApiError::poll_not_found(&poll_id))?;
    check_visible(&app, &live, &identity)?;
    let mut result = body(&app, &live, consistency);
    if let (Some(name), Some(counts)) = (query.breakdown, breakdown) {
        result.breakdown = Some(BTreeMap::from([(name, counts)]));
    }
    Ok(Json(result))
}

/// Hidden results (`show_results_during_voting: false`) of a poll not yet closed are for
/// its owner, admins and voters who have voted; with auth off, for nobody.
fn check_visible(app: &App, live: &LiveResults, identity: &Identity) -> ApiResult<()> {
    let poll = &live.poll;
    if !poll.results_hidden_at(app.node.clock.now_ms()) {
        return Ok(());
    }
    let allowed = match identity {
        Identity::User { subject, .. } => {
            identity.may_manage(poll.owner.as_deref()) || {
                let applied = app.node.sm.read();
                let state = applied.state.polls.get(&poll.poll_id);
                // Unreadable: not known to have voted, so not shown.
                state.is_some_and(|p| p.has_voted(&VoterId(subject.clone())).unwrap_or(false))
            }
        }
        Identity::Open | Identity::Anonymous => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "this poll shows its results to its owner, admins and those who have voted until it closes",
        ))
    }
}

/// Streams open on this node at once; past it, new ones get 503. Each costs one task and
/// one slot in its poll's feed, never a queue.
pub const STREAMS_MAX: usize = 10_000;
/// At most one event per stream in this window: changes in between coalesce (API.md).
const STREAM_EVENT_INTERVAL: Duration = Duration::from_millis(100);
/// The pause between two events of one stream while `streams` are open on this node and
/// all of them together may send `budget` events a second (`--stream-events-per-sec`).
/// Past `budget / 10` streams each stream's interval grows with their number (budget
/// 1,000: 1 s at 1,000 streams, 10 s at 10,000), so that fan-out to many viewers costs the
/// node a bounded amount of work however many there are, and votes keep their share of
/// the CPU. Every event says how fresh it is (`applied_index`, `as_of`).
fn stream_interval(streams: usize, budget: u64) -> Duration {
    let spread = Duration::from_secs(1).mul_f64(streams as f64 / budget.max(1) as f64);
    spread.max(STREAM_EVENT_INTERVAL)
}

/// Holds a place among `STREAMS_MAX` until the stream ends.
pub struct StreamSlot(Arc<App>);

impl StreamSlot {
    pub fn take(app: &Arc<App>) -> ApiResult<Self> {
        if app.streams.open.fetch_add(1, Ordering::AcqRel) >= STREAMS_MAX {
            app.streams.open.fetch_sub(1, Ordering::AcqRel);
            return Err(ApiError::unavailable(format!("this node already serves {STREAMS_MAX} streams")));
        }
        Ok(Self(app.clone()))
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.streams.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Open streams, counted on the `App`.
pub type StreamCount = AtomicUsize;

struct Streaming {
    slot: StreamSlot,
    feed: LiveFeed,
    first: Option<LiveResults>,
    last_sent: tokio::time::Instant,
    /// The applied index of the last event sent.
    sent_index: u64,
}

/// Polls whose latest event text is remembered; past it, the memory starts over.
const EVENT_CACHE_POLLS_MAX: usize = 10_000;

/// The JSON of each poll's latest results, made once per update and shared by every
/// stream of the poll: a thousand subscribers cost one serialisation per update, not a
/// thousand. Keyed by the feed's `Arc`, which the poll actor replaces on every update.
#[derive(Default)]
pub struct EventCache {
    latest: std::sync::Mutex<LatestEvents>,
}

/// Poll → the results it last streamed and their JSON.
type LatestEvents = std::collections::HashMap<PollId, (Arc<LiveResults>, Arc<str>)>;

impl EventCache {
    fn json(&self, app: &App, live: &Arc<LiveResults>) -> Arc<str> {
        let mut latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((seen, json)) = latest.get(&live.poll.poll_id) {
            if Arc::ptr_eq(seen, live) {
                return json.clone();
            }
        }
        let json: Arc<str> = serde_json::to_string(&body(app, live, Consistency::Eventual)).unwrap_or_default().into();
        if latest.len() >= EVENT_CACHE_POLLS_MAX {
            latest.clear();
        }
        latest.insert(live.poll.poll_id.clone(), (live.clone(), json.clone()));
        json
    }
}

/// Stream a poll's results (server-sent events).
#[utoipa::path(get, path = "/v1/polls/{poll_id}/results/stream", operation_id = "streamResults", tag = "results", params(("poll_id" = String, Path)),
    responses((status = 200, description = "text/event-stream: a `results` event (the results object) at once, then on every change, at most every 100 ms"),
              (status = 403, description = "results hidden while voting")))]
pub async fn stream(
    State(app): State<Arc<App>>,
    Path(poll_id): Path<String>,
    Extension(identity): Extension<Identity>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let poll = app.known_poll(&poll_id).await?;
    let slot = StreamSlot::take(&app)?;
    let handle = app.votes.registry.handle(&poll.poll_id).await?;
    // Subscribed before the first read, so no change can fall between the two.
    let feed = handle.subscribe();
    // The first event from the state machine, as `get` reads: stamped with this node's
    // applied index now, not with the poll's last change.
    let first = from_state(&app, &poll.poll_id, None).map(|(live, _)| live);
    let first = first.ok_or_else(|| ApiError::poll_not_found(&poll_id))?;
    check_visible(&app, &first, &identity)?;
    let sent_index = first.applied_index;
    let start = Streaming { slot, feed, first: Some(first), last_sent: tokio::time::Instant::now(), sent_index };
    let events = futures::stream::unfold(start, |mut s| async move {
        let app = s.slot.0.clone();
        // A poll can hide its results once they are being streamed only by closing,
        // which makes them public; so the first check holds for the whole stream.
        let json: Arc<str> = match s.first.take() {
            Some(first) => serde_json::to_string(&body(&app, &first, Consistency::Eventual)).unwrap_or_default().into(),
            None => {
                let interval = stream_interval(app.streams.open.load(Ordering::Relaxed), app.streams.event_budget);
                tokio::time::sleep_until(s.last_sent + interval).await;
                // An error means the actor is gone: the node is shutting down.
                // The first event was read from the state machine, and the actor's copy may
                // still be older: never send counts from before what was sent.
                let latest = loop {
                    s.feed.changed().await.ok()?;
                    let latest = s.feed.borrow_and_update().clone()?;
                    if latest.applied_index >= s.sent_index {
                        break latest;
                    }
                };
                s.sent_index = latest.applied_index;
                app.streams.events.json(&app, &latest)
            }
        };
        s.last_sent = tokio::time::Instant::now();
        app.metrics.stream_events.inc();
        Some((Ok(Event::default().event("results").data(&*json)), s))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn stream_intervals_keep_a_node_within_its_event_budget() {
        use super::stream_interval;
        use std::time::Duration;
        assert_eq!(stream_interval(1, 1_000), Duration::from_millis(100));
        assert_eq!(stream_interval(100, 1_000), Duration::from_millis(100));
        assert_eq!(stream_interval(1_000, 1_000), Duration::from_secs(1));
        assert_eq!(stream_interval(1_000, 2_000), Duration::from_millis(500));
        for budget in [10, 1_000, 2_000] {
            for streams in [1usize, 150, 1_000, 10_000] {
                let per_second = streams as f64 / stream_interval(streams, budget).as_secs_f64();
                assert!(per_second <= budget as f64 + 1e-6, "{streams} streams, budget {budget}: {per_second}/s");
            }
        }
    }

    #[test]
    fn percentages_round_to_one_decimal() {
        assert_eq!(super::percentage(1, 3), 33.3);
        assert_eq!(super::percentage(2, 3), 66.7);
        assert_eq!(super::percentage(0, 0), 0.0);
        assert_eq!(super::percentage(5, 5), 100.0);
    }
}
