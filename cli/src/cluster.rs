//! `tally cluster ...`: each node's view of the cluster, and membership changes.
//!
//! Membership commands are sent once and fail loudly (STYLE.md §5): the client only moves
//! to another endpoint when the request cannot have reached a node.

use std::collections::BTreeMap;

use clap::Subcommand;
use serde::Serialize;
use tally_api::v1::{AddMemberRequest, InitRequest, Initialized, MemberAdded, MemberBody, MemberRemoved, StatusBody};
use tokio::task::JoinSet;

use crate::client::{segment, Client, Request};
use crate::exit::Failure;
use crate::output::{self, or_dash, render_fields, Format, Table};
use crate::Settings;

/// State hashes are long; a prefix is enough to see whether nodes agree.
const STATE_HASH_CHARS_SHOWN: usize = 16;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ask every endpoint for its view: role, leader, term, indexes, members and their lag.
    Status,
    /// Form a cluster on a fresh node (with no --member: a single-node cluster).
    Init {
        /// An initial member, repeatable.
        #[arg(long = "member", value_name = "ID=HOST:PORT", value_parser = parse_member)]
        members: Vec<Member>,
    },
    /// Add a node (it joins as a learner and is promoted once caught up, unless --learner).
    AddMember {
        #[arg(long)]
        node_id: u64,
        /// The node's peer address.
        #[arg(long, value_name = "HOST:PORT", value_parser = parse_addr)]
        addr: String,
        /// Keep the node a non-voting learner.
        #[arg(long)]
        learner: bool,
    },
    /// Remove a node from the cluster.
    RemoveMember { node_id: u64 },
}

/// One `--member ID=HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub node_id: u64,
    pub addr: String,
}

pub fn parse_member(raw: &str) -> Result<Member, String> {
    let (id, addr) = raw.split_once('=').ok_or_else(|| format!("{raw}: expected ID=HOST:PORT"))?;
    let node_id: u64 = id.trim().parse().map_err(|_| format!("{raw}: the node id must be a number"))?;
    if node_id == 0 {
        return Err(format!("{raw}: node ids start at 1"));
    }
    Ok(Member { node_id, addr: parse_addr(addr.trim())? })
}

/// A peer address is `host:port` with no scheme: it is a socket address, not a URL.
pub fn parse_addr(raw: &str) -> Result<String, String> {
    let (host, port) = raw.rsplit_once(':').ok_or_else(|| format!("{raw}: expected HOST:PORT"))?;
    if host.is_empty() || host.contains("://") || host.contains('/') {
        return Err(format!("{raw}: expected HOST:PORT, without a scheme"));
    }
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(raw.to_string()),
        _ => Err(format!("{raw}: the port must be a number from 1 to 65535")),
    }
}

pub async fn run(command: Command, settings: &Settings) -> anyhow::Result<()> {
    let client = &settings.client;
    let format = settings.format;
    match command {
        Command::Status => status(settings).await,
        Command::Init { members } => {
            let request = settings.as_operator(Request::post("/v1/cluster/init", &init_body(&members)?));
            let reply: Initialized = client.call(&request).await?;
            output::emit_value(format, &reply, |reply| render_fields(&[("initialized", reply.initialized.to_string())]))
        }
        Command::AddMember { node_id, addr, learner } => {
            let body = AddMemberRequest { node_id, addr, voter: Some(!learner) };
            let reply: MemberAdded =
                client.call(&settings.as_operator(Request::post("/v1/cluster/members", &body))).await?;
            output::emit_value(format, &reply, |reply| {
                render_fields(&[("node_id", reply.node_id.to_string()), ("voter", reply.voter.to_string())])
            })
        }
        Command::RemoveMember { node_id } => {
            let path = format!("/v1/cluster/members/{}", segment(&node_id.to_string()));
            let reply: MemberRemoved = client.call(&settings.as_operator(Request::delete(path))).await?;
            output::emit_value(format, &reply, |reply| render_fields(&[("removed", reply.removed.to_string())]))
        }
    }
}

/// `{"members": {"1": "host:port"}}`, or `{}` for a single-node cluster.
pub fn init_body(members: &[Member]) -> Result<InitRequest, Failure> {
    if members.is_empty() {
        return Ok(InitRequest::default());
    }
    let mut by_id: BTreeMap<String, String> = BTreeMap::new();
    for member in members {
        if by_id.insert(member.node_id.to_string(), member.addr.clone()).is_some() {
            return Err(Failure::usage(format!("--member {} given twice", member.node_id)));
        }
    }
    Ok(InitRequest { members: Some(by_id) })
}

/// What one endpoint said about the cluster.
type Answer = (String, Result<StatusBody, Failure>);

async fn status(settings: &Settings) -> anyhow::Result<()> {
    let answers = fetch_statuses(&settings.client).await;
    match settings.format {
        Format::Json => output::emit_json(&status_json(&answers))?,
        Format::Table => output::emit(&render_status(&answers))?,
    }
    // Partial answers are still useful (a node down during a failover test): report the
    // silent ones on stderr and fail only when no node answered.
    for (_, failure) in answers.iter().filter_map(|(e, a)| a.as_ref().err().map(|f| (e, f))) {
        eprintln!("error: {failure}");
    }
    if answers.iter().all(|(_, answer)| answer.is_err()) {
        return Err(Failure::unavailable("UNAVAILABLE", "no node answered").into());
    }
    Ok(())
}

/// Asks every endpoint at once, so a dead node costs one timeout, not one per node.
async fn fetch_statuses(client: &Client) -> Vec<Answer> {
    let mut tasks = JoinSet::new();
    for (index, endpoint) in client.endpoints().iter().enumerate() {
        let node = client.only(endpoint);
        let endpoint = endpoint.clone();
        tasks.spawn(async move {
            let answer = node.call(&Request::get("/v1/cluster/status")).await;
            (index, (endpoint, answer))
        });
    }
    let mut answers: Vec<(usize, Answer)> = tasks.join_all().await;
    answers.sort_by_key(|(index, _)| *index);
    answers.into_iter().map(|(_, answer)| answer).collect()
}

/// One endpoint in `cluster status -o json`.
#[derive(Serialize)]
struct StatusItem<'a> {
    endpoint: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a StatusBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorItem<'a>>,
}

#[derive(Serialize)]
struct ErrorItem<'a> {
    code: &'a str,
    message: &'a str,
}

/// `[{"endpoint", "status": <the node's StatusBody>} | {"endpoint", "error": {"code", "message"}}]`
fn status_json(answers: &[Answer]) -> Vec<StatusItem<'_>> {
    answers
        .iter()
        .map(|(endpoint, answer)| match answer {
            Ok(status) => StatusItem { endpoint, status: Some(status), error: None },
            Err(failure) => StatusItem {
                endpoint,
                status: None,
                error: Some(ErrorItem { code: &failure.code, message: &failure.message }),
            },
        })
        .collect()
}

pub fn render_status(answers: &[Answer]) -> String {
    let mut nodes = Table::new(&["ENDPOINT", "NODE", "ROLE", "LEADER", "TERM", "COMMIT", "APPLIED", "STATE_HASH"]);
    for (endpoint, answer) in answers {
        nodes.push(node_row(endpoint, answer.as_ref().ok()));
    }
    let mut text = nodes.render();
    if let Some(view) = members_view(answers) {
        text.push_str(&format!("\n\nmembers (as seen by node {}):\n", view.node_id));
        text.push_str(&render_members(&view.members));
    }
    text
}

fn node_row(endpoint: &str, status: Option<&StatusBody>) -> Vec<String> {
    let Some(status) = status else {
        let mut row = vec![endpoint.to_string(), "-".into(), "unreachable".into()];
        row.resize(8, "-".to_string());
        return row;
    };
    vec![
        endpoint.to_string(),
        status.node_id.to_string(),
        status.role.to_string(),
        or_dash(status.leader_id),
        status.term.to_string(),
        or_dash(status.commit_index),
        status.applied_index.to_string(),
        status.state_hash.chars().take(STATE_HASH_CHARS_SHOWN).collect(),
    ]
}

/// The leader's view when it answered (only it knows every member's lag), else the first.
fn members_view(answers: &[Answer]) -> Option<&StatusBody> {
    let statuses: Vec<&StatusBody> = answers.iter().filter_map(|(_, a)| a.as_ref().ok()).collect();
    let is_leader = |s: &StatusBody| s.leader_id == Some(s.node_id);
    statuses.iter().copied().find(|s| is_leader(s)).or(statuses.first().copied())
}

/// One row per member: `{node_id, addr, role, matched_index, lag, reachable, last_heard_ms}`.
pub fn render_members(members: &[MemberBody]) -> String {
    let mut table = Table::new(&["NODE", "ADDR", "ROLE", "MATCHED", "LAG", "REACHABLE", "LAST HEARD"])
        .right_align(3)
        .right_align(4);
    for member in members {
        let reachable = match member.reachable {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        let heard = member.last_heard_ms.map_or("-".to_string(), heard_ago);
        table.push(vec![
            member.node_id.to_string(),
            member.addr.clone(),
            member.role.to_string(),
            or_dash(member.matched_index),
            or_dash(member.lag),
            reachable.to_string(),
            heard,
        ]);
    }
    table.render()
}

/// `last_heard_ms` for people: "now" for the node itself, then ms, s, min.
fn heard_ago(ms: u64) -> String {
    match ms {
        0 => "now".to_string(),
        1..=999 => format!("{ms} ms ago"),
        1_000..=119_999 => format!("{:.1} s ago", ms as f64 / 1_000.0),
        _ => format!("{} min ago", ms / 60_000),
    }
}

#[cfg(test)]
mod tests {
    use tally_api::v1::MemberRole;

    use super::*;
    use serde_json::json;

    #[test]
    fn members_parse_from_id_equals_addr() {
        let member = parse_member("1=127.0.0.1:7001").expect("valid member");
        assert_eq!(member, Member { node_id: 1, addr: "127.0.0.1:7001".into() });
        assert_eq!(parse_member("2=[::1]:7002").expect("ipv6").addr, "[::1]:7002");
    }

    #[test]
    fn bad_members_are_refused() {
        for raw in [
            "127.0.0.1:7001",
            "x=127.0.0.1:7001",
            "0=h:7001",
            "1=127.0.0.1",
            "1=:7001",
            "1=h:0",
            "1=http://h:7001",
            "1=h:99999",
        ] {
            assert!(parse_member(raw).is_err(), "{raw} should be refused");
        }
    }

    #[test]
    fn init_body_maps_ids_to_addresses() {
        let members = [parse_member("2=b:2").unwrap(), parse_member("1=a:1").unwrap()];
        let wire =
            |body: Result<InitRequest, Failure>| body.map(|body| serde_json::to_value(body).expect("serializes"));
        assert_eq!(wire(init_body(&members)), Ok(json!({"members": {"1": "a:1", "2": "b:2"}})));
        assert_eq!(wire(init_body(&[])), Ok(json!({})));
        assert!(init_body(&[members[0].clone(), members[0].clone()]).is_err());
    }

    #[test]
    fn status_table_shows_nodes_and_the_leaders_member_view() {
        let leader = json!({"node_id": 1, "role": "leader", "leader_id": 1, "term": 2,
            "commit_index": 9, "applied_index": 9, "last_log_index": 9, "snapshot_index": null,
            "state_hash": "0123456789abcdef0123", "votes_recorded": 3,
            "members": [{"node_id": 1, "addr": "h:1", "role": "voter", "matched_index": 9, "lag": 0,
                         "reachable": true, "last_heard_ms": 0},
                        {"node_id": 2, "addr": "h:2", "role": "voter", "matched_index": 7, "lag": 2,
                         "reachable": false, "last_heard_ms": 4200}]});
        let leader: StatusBody = serde_json::from_value(leader).expect("a StatusBody");
        let down = Failure::unavailable("UNAVAILABLE", "refused");
        let text = render_status(&[("http://h:1".into(), Ok(leader)), ("http://h:2".into(), Err(down))]);
        let expected = "\
ENDPOINT    NODE  ROLE         LEADER  TERM  COMMIT  APPLIED  STATE_HASH
http://h:1  1     leader       1       2     9       9        0123456789abcdef
http://h:2  -     unreachable  -       -     -       -        -

members (as seen by node 1):
NODE  ADDR  ROLE   MATCHED  LAG  REACHABLE  LAST HEARD
1     h:1   voter        9    0  yes        now
2     h:2   voter        7    2  NO         4.2 s ago";
        assert_eq!(text, expected);
    }

    /// Members are a list in the contract (StatusBody): a status whose members are a map
    /// keyed by node id, which this client used to render too, is now an invalid response.
    #[test]
    fn members_as_a_map_are_an_invalid_response() {
        let status = json!({"node_id": 1, "role": "leader", "leader_id": 1, "term": 2, "commit_index": 9,
            "applied_index": 9, "last_log_index": 9, "snapshot_index": null, "state_hash": "00",
            "votes_recorded": 0, "members": {"1": "h:1", "2": {"addr": "h:2", "lag": 3}}});
        let failure = crate::client::decode_success::<StatusBody>(&status.to_string()).expect_err("not a list");
        assert_eq!(failure.code, "INVALID_RESPONSE");
        assert!(failure.message.starts_with("the server's reply is not a StatusBody: "), "{}", failure.message);
    }

    #[test]
    fn members_without_what_only_the_leader_knows_show_dashes() {
        let member = |id: u64| MemberBody {
            node_id: id,
            addr: format!("h:{id}"),
            role: MemberRole::Voter,
            matched_index: None,
            lag: None,
            last_heard_ms: None,
            reachable: None,
        };
        assert_eq!(
            render_members(&[member(1), MemberBody { lag: Some(3), ..member(2) }]),
            "NODE  ADDR  ROLE   MATCHED  LAG  REACHABLE  LAST HEARD\n\
             1     h:1   voter        -    -  -          -\n\
             2     h:2   voter        -    3  -          -"
        );
    }
}
