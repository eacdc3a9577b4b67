//! Durations on the command line, in humantime's syntax (`500ms`, `30s`, `1m30s`, `2h`), or a
//! bare number of seconds (`2`, `1.5`).

use std::time::Duration;

pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.starts_with('-') {
        return Err(format!("{text:?}: a duration cannot be negative"));
    }
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?}: {e} (expected e.g. 500ms, 30s, 1m30s, 2h)"))
}

/// `d` the way [`parse`] reads it back (`1m 30s`, `500ms`).
pub fn format(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1m 30s"), Ok(Duration::from_secs(90)));
        assert!(parse("3 fortnights").is_err());
        assert!(parse("s").is_err());
        assert!(parse("-1s").unwrap_err().contains("negative"));
        assert_eq!(
            parse(&format(Duration::from_millis(90_500))),
            Ok(Duration::from_millis(90_500))
        );
    }
}
