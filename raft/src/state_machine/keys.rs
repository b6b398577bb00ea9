//! Where the state machine's keyspace keeps polls and accounts, and a paged scan of it.

use super::*;

pub(super) fn poll_key(poll_id: &PollId) -> Vec<u8> {
    let mut key = POLL_PREFIX.to_vec();
    key.extend_from_slice(poll_id.0.as_bytes());
    key
}

pub(super) fn user_key(username: &str) -> Vec<u8> {
    let mut key = USER_PREFIX.to_vec();
    key.extend_from_slice(username.as_bytes());
    key
}

pub(super) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    *end.last_mut().expect("prefixes are not empty") += 1;
    end
}

/// Visits every pair under `prefix`, a page at a time.
pub(super) fn scan(
    space: &dyn Keyspace,
    prefix: &[u8],
    page_len: usize,
    mut visit: impl FnMut(&[u8], &[u8]) -> Result<(), StorageError>,
) -> Result<(), StorageError> {
    let end = prefix_end(prefix);
    let mut start = prefix.to_vec();
    loop {
        let page = space.range(&start, Some(&end), page_len).map_err(read_err)?;
        for (key, value) in &page {
            visit(key, value)?;
        }
        match page.last() {
            Some((last, _)) if page.len() == page_len => {
                start = last.clone();
                start.push(0);
            }
            _ => return Ok(()),
        }
    }
}
