//! What a run measured, as JSON or a table: per kind of request, counts and latency
//! percentiles from the HDR histograms, outcomes, the check, and the results streams held.

use super::*;

#[derive(Debug, Serialize)]
pub(super) struct Report {
    pub(super) mode: &'static str,
    pub(super) duration_secs: f64,
    pub(super) connections: u64,
    pub(super) rate_target: Option<u64>,
    pub(super) via: Via,
    pub(super) endpoints: Vec<String>,
    pub(super) mix: Mix,
    pub(super) duplicate_ratio: f64,
    pub(super) votes_acknowledged: u64,
    pub(super) votes_acknowledged_per_second: f64,
    pub(super) requests: BTreeMap<&'static str, KindReport>,
    pub(super) outcomes: BTreeMap<String, u64>,
    /// Open model only: due requests dropped because the client's backlog was full.
    pub(super) not_sent: u64,
    pub(super) check: Option<CheckReport>,
    /// `--subscribers`: the streams held open and the events they received.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) subscribers: Option<StreamsReport>,
}

#[derive(Debug, Serialize)]
pub(super) struct StreamsReport {
    pub(super) open: u64,
    pub(super) events: u64,
    pub(super) events_per_stream: f64,
}

/// The results streams of `--subscribers`, each a task that counts events.
pub(super) struct Subscribers {
    pub(super) tasks: Vec<tokio::task::JoinHandle<()>>,
    pub(super) events: Arc<AtomicU64>,
}

impl Subscribers {
    /// Opens every stream (its first event received) before the load starts.
    pub(super) async fn open(run: &Run, client: &crate::client::Client) -> anyhow::Result<Self> {
        let events = Arc::new(AtomicU64::new(0));
        let count = run.args.subscribers;
        if count == 0 {
            return Ok(Self { tasks: Vec::new(), events });
        }
        // Its own client: each stream holds a connection for the whole run.
        let http = client.http_builder().connect_timeout(client.timeout()).build()?;
        let poll = &run.targets[0].poll_id;
        let mut tasks = Vec::new();
        let (opened_tx, mut opened_rx) = tokio::sync::mpsc::channel::<()>(count as usize);
        for i in 0..count as usize {
            let url = format!("{}/v1/polls/{poll}/results/stream", run.endpoints[i % run.endpoints.len()]);
            let (http, events, opened) = (http.clone(), events.clone(), opened_tx.clone());
            tasks.push(tokio::spawn(async move {
                let Ok(mut response) = http.get(url).send().await else { return };
                let mut announced = false;
                while let Ok(Some(chunk)) = response.chunk().await {
                    let n = chunk.windows(14).filter(|w| w == b"event: results").count() as u64;
                    events.fetch_add(n, Ordering::Relaxed);
                    if n > 0 && !announced {
                        announced = true;
                        let _ = opened.send(()).await;
                    }
                }
            }));
        }
        drop(opened_tx);
        let deadline = Instant::now() + client.timeout().max(Duration::from_secs(30));
        for _ in 0..count {
            match tokio::time::timeout_at(deadline.into(), opened_rx.recv()).await {
                Ok(Some(())) => {}
                _ => return Err(Failure::unavailable("STREAMS", "not every results stream opened in time").into()),
            }
        }
        Ok(Self { tasks, events })
    }

    pub(super) fn close(self) -> Option<StreamsReport> {
        let open = self.tasks.len() as u64;
        for task in &self.tasks {
            task.abort();
        }
        let events = self.events.load(Ordering::Relaxed);
        (open > 0).then(|| StreamsReport { open, events, events_per_stream: events as f64 / open as f64 })
    }
}

#[derive(Debug, Serialize)]
pub(super) struct KindReport {
    pub(super) count: u64,
    pub(super) ok: u64,
    pub(super) per_second: f64,
    pub(super) latency_ms: Percentiles,
}

#[derive(Debug, Serialize)]
pub(super) struct Percentiles {
    pub(super) p50: f64,
    pub(super) p90: f64,
    pub(super) p99: f64,
    pub(super) p999: f64,
    pub(super) max: f64,
}

pub(super) fn report(run: &Run, elapsed: Duration, not_sent: u64, check: Option<CheckReport>) -> Report {
    let recorder = run.recorder();
    let seconds = elapsed.as_secs_f64().max(0.001);
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let requests = recorder
        .latency_us
        .iter()
        .filter(|(_, h)| !h.is_empty())
        .map(|(kind, h)| {
            let report = KindReport {
                count: h.len(),
                ok: recorder.requests_ok.get(kind).copied().unwrap_or(0),
                per_second: h.len() as f64 / seconds,
                latency_ms: Percentiles {
                    p50: ms(h, 0.5),
                    p90: ms(h, 0.9),
                    p99: ms(h, 0.99),
                    p999: ms(h, 0.999),
                    max: h.max() as f64 / 1000.0,
                },
            };
            (kind.name(), report)
        })
        .collect();
    // Acknowledged during the load itself; votes resolved afterwards are in the check.
    let acknowledged: u64 =
        recorder.outcomes.iter().filter(|(n, _)| matches!(n.as_str(), "recorded" | "changed")).map(|(_, n)| n).sum();
    Report {
        mode: if run.args.rate.is_some() { "open" } else { "closed" },
        duration_secs: seconds,
        connections: run.args.connections,
        rate_target: run.args.rate,
        via: run.args.via,
        endpoints: run.endpoints.clone(),
        mix: run.args.mix,
        duplicate_ratio: run.args.duplicate_ratio,
        votes_acknowledged: acknowledged,
        votes_acknowledged_per_second: acknowledged as f64 / seconds,
        requests,
        outcomes: recorder.outcomes.clone(),
        not_sent,
        check,
        subscribers: None,
    }
}

pub(super) fn render(report: &Report) -> String {
    let mut out = format!(
        "{} loop, {:.1}s, {} connections{}, {}: {}\n\n",
        report.mode,
        report.duration_secs,
        report.connections,
        report.rate_target.map(|r| format!(", target {r} req/s")).unwrap_or_default(),
        report.via.describe(),
        report.endpoints.join(" "),
    );
    let mut table =
        Table::new(&["request", "count", "answered", "per s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"]);
    for column in 1..9 {
        table = table.right_align(column);
    }
    for (kind, k) in &report.requests {
        let l = &k.latency_ms;
        table.push(vec![
            kind.to_string(),
            k.count.to_string(),
            k.ok.to_string(),
            format!("{:.0}", k.per_second),
            format!("{:.2}", l.p50),
            format!("{:.2}", l.p90),
            format!("{:.2}", l.p99),
            format!("{:.2}", l.p999),
            format!("{:.2}", l.max),
        ]);
    }
    out += &table.render();
    out += &format!(
        "\n\nvotes acknowledged: {} ({:.0}/s)\noutcomes: {}\n",
        report.votes_acknowledged,
        report.votes_acknowledged_per_second,
        report.outcomes.iter().map(|(name, n)| format!("{name} {n}")).collect::<Vec<_>>().join(", ")
    );
    if report.not_sent > 0 {
        out += &format!("not sent (client backlog full): {}\n", report.not_sent);
    }
    if let Some(streams) = &report.subscribers {
        out += &format!(
            "results streams: {} open, {} events received ({:.1} per stream)\n",
            streams.open, streams.events, streams.events_per_stream
        );
    }
    if let Some(check) = &report.check {
        for poll in &check.polls {
            let nodes: Vec<String> = poll
                .nodes
                .iter()
                .map(|(id, total)| format!("node {id} {}", total.map_or("-".to_string(), |t| t.to_string())))
                .collect();
            out += &format!(
                "check {}: {} before + {} acknowledged = {}; {}\n",
                poll.poll_id,
                poll.votes_before,
                poll.acknowledged,
                poll.expected_total,
                nodes.join(", ")
            );
        }
        out += &match (check.ok, check.unresolved) {
            (true, _) => "check: OK, every node serves exactly the acknowledged votes".to_string(),
            (false, 0) => "check: FAILED, the counts differ from the acknowledged votes".to_string(),
            (false, n) => format!("check: FAILED, {n} outcomes stayed unknown"),
        };
    }
    out
}
