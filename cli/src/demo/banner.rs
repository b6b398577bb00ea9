//! What the demo prints once its cluster is up: the nodes, the sample poll, and commands
//! to try next (or the same as JSON).

use super::*;

pub(super) fn summary_json(
    nodes: &[Node],
    poll: &PollBody,
    leader_id: Option<u64>,
    data_dir: &Path,
    jwt: Option<&JwtSetup>,
) -> Value {
    let tls = match nodes.first().is_some_and(|node| node.plan.tls) {
        false => json!({"enabled": false}),
        true => json!({"enabled": true, "ca_file": data_dir.join(TLS_DIR).join(CA_FILE)}),
    };
    let nodes: Vec<Value> = nodes
        .iter()
        .map(|node| {
            let (id, url, pid) = (node.plan.id, node.plan.url(), node.child.id());
            json!({"node_id": id, "url": url, "pid": pid, "log": node.log_path})
        })
        .collect();
    let auth = match jwt {
        None => json!({"mode": "none"}),
        Some(jwt) => json!({"mode": "jwt", "admin": ADMIN_USERNAME, "password_file": jwt.password_file}),
    };
    json!({"data_dir": data_dir, "nodes": nodes, "leader_id": leader_id, "poll": poll, "auth": auth, "tls": tls})
}

/// The nodes, the leader, the poll, and commands to paste.
pub(super) fn banner(
    nodes: &[Node],
    poll: &PollBody,
    leader_id: Option<u64>,
    data_dir: &Path,
    jwt: Option<&JwtSetup>,
) -> String {
    let mut table = Table::new(&["NODE", "URL", "PID", "LOG"]);
    for node in nodes {
        let pid = node.child.id().map_or_else(|| "-".to_string(), |pid| pid.to_string());
        table.push(vec![node.plan.id.to_string(), node.plan.url(), pid, node.log_path.display().to_string()]);
    }
    let leader = nodes.iter().find(|node| Some(node.plan.id) == leader_id);
    let leader_line =
        leader.map_or_else(|| "unknown".to_string(), |node| format!("node {} ({})", node.plan.id, node.plan.url()));
    let poll_id = &poll.poll_id;
    let cacert = nodes[0].plan.tls.then(|| data_dir.join(TLS_DIR).join(CA_FILE));
    let tls_line = match &cacert {
        None => "off (plain HTTP on loopback; --tls for https and mutual TLS between nodes)".to_string(),
        Some(ca) => format!("https, nodes check each other's certificates; the CA is {}", ca.display()),
    };
    let auth_line = match jwt {
        None => "none (the body's voter_id is the voter; --auth jwt for accounts and tokens)".to_string(),
        // The password stays in its file: a banner ends up in terminals' scrollback and logs.
        Some(jwt) => format!(
            "jwt; admin account {ADMIN_USERNAME:?}, its password in {} (cat it to sign in on the page)",
            jwt.password_file.display()
        ),
    };
    format!(
        "Tally demo: {} node(s) running, data in {}\n\n{}\n\n\
         leader:       {leader_line}\n\
         auth:         {auth_line}\n\
         tls:          {tls_line}\n\
         sample poll:  {poll_id}  {SAMPLE_TITLE:?}  ({} votes cast, one per node in turn)\n\n\
         Try:\n{}",
        nodes.len(),
        data_dir.display(),
        table.render(),
        SAMPLE_VOTES.len(),
        try_commands(nodes, poll, leader.unwrap_or(&nodes[0]), jwt, cacert.as_deref()),
    )
}

pub(super) fn try_commands(
    nodes: &[Node],
    poll: &PollBody,
    leader: &Node,
    jwt: Option<&JwtSetup>,
    cacert: Option<&Path>,
) -> String {
    let shell = Shell {
        // As the user invoked us (e.g. ./target/release/tally), so the lines paste as they are.
        tally: std::env::args().next().unwrap_or_else(|| "tally".to_string()),
        curl: cacert.map_or_else(|| "curl".to_string(), |ca| format!("curl --cacert {}", ca.display())),
        first: nodes[0].plan.url(),
        poll_id: &poll.poll_id,
    };
    let mut lines = environment_lines(nodes, cacert);
    // Node 2 shows that a follower takes writes; a one-node demo has only node 1.
    let voting_node = nodes.get(1).unwrap_or(&nodes[0]);
    let go = vote::find_option_id(poll, "Go").unwrap_or_else(|_| "OPTION_ID".to_string());
    match jwt {
        None => lines.extend(shell.vote_lines(voting_node, &go)),
        Some(jwt) => lines.extend(shell.vote_lines_signed_in(voting_node, &go, jwt)),
    }
    lines.extend(shell.tour_lines(leader, jwt.is_some()));
    lines.join("\n")
}

/// What the suggested command lines are made of.
struct Shell<'a> {
    tally: String,
    curl: String,
    /// The first node's URL: any node serves the page and the reads.
    first: String,
    poll_id: &'a str,
}

/// The exports that point the CLI at the demo's nodes, when its defaults would not.
fn environment_lines(nodes: &[Node], cacert: Option<&Path>) -> Vec<String> {
    let urls: Vec<String> = nodes.iter().map(|node| node.plan.url()).collect();
    let urls = urls.join(",");
    let mut lines = Vec::new();
    if urls != crate::DEFAULT_ENDPOINTS {
        lines.extend(["  # the CLI's nodes".to_string(), format!("  export TALLY_ENDPOINTS={urls}")]);
    }
    if let Some(ca) = cacert {
        lines.extend([
            "  # the CLI checks the nodes' certificates against the demo's CA".to_string(),
            format!("  export TALLY_CACERT={}", ca.display()),
        ]);
    }
    lines
}

impl Shell<'_> {
    /// The page, and a vote with the voter in the body.
    fn vote_lines(&self, voting_node: &Node, go: &str) -> Vec<String> {
        let Shell { curl, first, poll_id, .. } = self;
        vec![
            "  # the web page, in a browser (any node serves it)".to_string(),
            format!("  {first}/"),
            format!("  # vote for Go through node {}", voting_node.plan.id),
            format!(
                "  {curl} -s -X POST {}/v1/polls/{poll_id}/votes -H 'Content-Type: application/json' \
                 -d '{{\"option_id\": \"{go}\", \"voter_id\": \"you\"}}'",
                voting_node.plan.url()
            ),
        ]
    }

    /// With accounts on: the page, an account whose token votes, then the admin's token.
    fn vote_lines_signed_in(&self, voting_node: &Node, go: &str, jwt: &JwtSetup) -> Vec<String> {
        let Shell { tally, curl, first, poll_id } = self;
        vec![
            format!("  # the web page, in a browser (any node serves it): sign in as {ADMIN_USERNAME}, or register"),
            format!("  {first}/"),
            "  # make an account and log in; the token's subject is the voter".to_string(),
            format!("  echo 'correct horse battery' | {tally} user create you --password-stdin"),
            format!("  export TALLY_TOKEN=$(echo 'correct horse battery' | {tally} user login you --password-stdin)"),
            format!("  # vote for Go through node {}", voting_node.plan.id),
            format!(
                "  {curl} -s -X POST {}/v1/polls/{poll_id}/votes -H \"Authorization: Bearer $TALLY_TOKEN\" \
                 -H 'Content-Type: application/json' -d '{{\"option_id\": \"{go}\"}}'",
                voting_node.plan.url()
            ),
            "  # the admin's token: audits, batches and simulations (a trusted front end) need it".to_string(),
            format!(
                "  export TALLY_TOKEN=$({tally} user login {ADMIN_USERNAME} --password-stdin < {})",
                jwt.password_file.display()
            ),
        ]
    }

    /// Watching, simulating, auditing, and killing the leader.
    fn tour_lines(&self, leader: &Node, signed_in: bool) -> Vec<String> {
        let Shell { tally, curl, first, poll_id } = self;
        let leader_pid = leader.child.id().map_or_else(|| "PID".to_string(), |pid| pid.to_string());
        // EventSource cannot send headers, so the stream also takes the token as a parameter.
        let stream = if signed_in {
            format!("  {curl} -N \"{first}/v1/polls/{poll_id}/results/stream?access_token=$TALLY_TOKEN\"")
        } else {
            format!("  {curl} -N {first}/v1/polls/{poll_id}/results/stream")
        };
        vec![
            "  # watch the results change".to_string(),
            format!("  {tally} results {poll_id} --watch"),
            "  # the same as server-sent events, from any node".to_string(),
            stream,
            "  # a simulated election: turnout by region, live standings (watch the page move)".to_string(),
            format!("  {tally} simulate --kind election --voters 5000 --duration 60s"),
            "  # audit the sample poll: its hash chain, a recount against the results".to_string(),
            format!("  {tally} audit verify {poll_id}"),
            "  # every node's view of the cluster".to_string(),
            format!("  {tally} cluster status"),
            format!("  # kill the leader (node {}) and watch another take over", leader.plan.id),
            format!("  kill {leader_pid}"),
            "  # Prometheus metrics".to_string(),
            format!("  {curl} {first}/metrics"),
        ]
    }
}
