//! Ids and timestamps of responses, the same for every front (HTTP, Python).

/// `{prefix}-` and 32 random hex digits (`chatcmpl-…`, `cmpl-…`).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}-{:032x}", rand::random::<u128>())
}

/// Seconds since the Unix epoch, for `created`.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
