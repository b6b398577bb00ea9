//! The demo's sample data: the admin account of a `--auth jwt` demo, and the sample poll
//! with a vote through each node (reused on a re-run over the same data).

use super::*;

/// Registers the admin account (a re-run finds it there) and logs in as it. An `--admin`
/// name is reserved: only the operator, with the cluster secret, may register it.
pub(super) async fn admin_token(client: &Client, jwt: &JwtSetup, secret: &str) -> anyhow::Result<String> {
    let body = Credentials { username: ADMIN_USERNAME.to_string(), password: jwt.admin_password.clone() };
    let register = Request::post("/v1/users", &body).header(crate::client::CLUSTER_SECRET_HEADER, secret);
    match retry_unavailable(|| client.call::<UserBody>(&register)).await {
        Err(failure) if failure.code != "USERNAME_TAKEN" => return Err(failure.into()),
        _ => {}
    }
    let login = Request::post("/v1/auth/token", &body);
    let reply: TokenBody = retry_unavailable(|| client.call(&login)).await.with_context(|| {
        format!("cannot log in as {ADMIN_USERNAME} with the password in {}", jwt.password_file.display())
    })?;
    Ok(reply.access_token)
}

/// The sample poll a previous run on this data dir made, if the cluster still has it.
pub(super) async fn earlier_sample_poll(client: &Client, data_dir: &Path) -> Option<PollBody> {
    let poll_id = fs::read_to_string(data_dir.join(SAMPLE_POLL_FILE)).ok()?;
    let request = Request::get(crate::poll::poll_path(poll_id.trim()));
    retry_unavailable(|| client.call(&request)).await.ok()
}

/// Creates the sample poll through the first node (or finds the one an earlier run made),
/// then votes through each node in turn, to show that any node takes writes. The votes'
/// keys make a re-run replay them rather than add any.
pub(super) async fn seed(client: &Client, urls: &[String], jwt: bool, data_dir: &Path) -> anyhow::Result<PollBody> {
    let first = client.only(&urls[0]);
    let poll = match earlier_sample_poll(&first, data_dir).await {
        Some(poll) => poll,
        None => {
            let body = CreatePollRequest {
                title: SAMPLE_TITLE.to_string(),
                description: None,
                options: SAMPLE_OPTIONS.map(|text| OptionInput::Text(text.to_string())).to_vec(),
                start_time: None,
                end_time: None,
                settings: None,
            };
            let request = Request::post("/v1/polls", &body);
            retry_unavailable(|| first.call(&request)).await?
        }
    };
    let poll_id = poll.poll_id.clone();
    let remembered = data_dir.join(SAMPLE_POLL_FILE);
    fs::write(&remembered, &poll_id).with_context(|| format!("cannot write {}", remembered.display()))?;
    for (index, (voter, text)) in SAMPLE_VOTES.iter().enumerate() {
        let node = client.only(&urls[index % urls.len()]);
        let option_id = vote::find_option_id(&poll, text)?;
        // The key makes a retry after a lost reply safe: it cannot count twice.
        let key = format!("demo-{poll_id}-{voter}");
        if jwt {
            // With auth on, a single vote's voter is the token's subject (the admin here);
            // a trusted front end names its voters through votes:batch.
            let vote = BatchVote {
                poll_id: None,
                option_id,
                voter_id: Some(voter.to_string()),
                idempotency_key: Some(key),
                attributes: None,
            };
            retry_unavailable(|| vote::cast_as_front_end(&node, &poll_id, vote.clone())).await?;
        } else {
            let body = vote::vote_body(&option_id, Some(voter), &[])?;
            retry_unavailable(|| vote::cast(&node, &poll_id, &body, Some(&key))).await?;
        }
    }
    Ok(poll)
}

pub(super) async fn retry_unavailable<T, F, Fut>(mut attempt: F) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Failure>>,
{
    let mut attempts = 1;
    loop {
        match attempt().await {
            Err(failure) if failure.code == "UNAVAILABLE" && attempts < SEED_ATTEMPTS_MAX => {
                attempts += 1;
                sleep(SEED_RETRY_DELAY).await;
            }
            outcome => return outcome,
        }
    }
}
