//! Wall-clock time, behind a trait so that the simulation can supply its own (and skew it).
//! Only two things read it: the leader stamping an entry, and readers judging a poll's
//! status approximately. Apply never does.

pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        since_epoch.as_millis() as i64
    }
}

/// RFC 3339 in UTC with milliseconds, as API.md asks.
pub fn format_ms(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
        Err(_) => String::from("1970-01-01T00:00:00.000Z"),
    }
}

/// Parses an RFC 3339 timestamp into milliseconds since the epoch.
pub fn parse_ms(text: &str) -> Result<i64, String> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("{text:?} is not an RFC 3339 timestamp: {e}"))?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).map_err(|_| format!("{text:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_round_trip() {
        let ms = 1_775_390_401_234;
        assert_eq!(format_ms(ms), "2026-04-05T12:00:01.234Z");
        assert_eq!(parse_ms("2026-04-05T12:00:01.234Z"), Ok(ms));
        assert_eq!(parse_ms("2026-04-05T14:00:01.234+02:00"), Ok(ms));
        assert!(parse_ms("yesterday").is_err());
    }
}
