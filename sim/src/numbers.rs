//! Number parsing and formatting exactly as Redis does it, since a script sees the text.

/// Parses a signed 64-bit integer the way Redis' `string2ll` does: an optional `-`, then `0`
/// alone or digits without a leading zero; no `+`, no spaces. Redis rejects `"01"` and `"-0"`,
/// so `"01"` is not an integer to INCR either.
pub fn parse_i64(bytes: &[u8]) -> Option<i64> {
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if digits == b"0" {
        return if negative { None } else { Some(0) };
    }
    if digits[0] == b'0' {
        return None;
    }
    let text = std::str::from_utf8(bytes).ok()?;
    text.parse::<i64>().ok()
}

/// Parses a double the way Redis' `string2d` does for scores: no leading space, `inf`/`-inf`
/// accepted, NaN rejected.
pub fn parse_f64(bytes: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(bytes).ok()?;
    if text.is_empty() || text.starts_with(|c: char| c.is_ascii_whitespace()) {
        return None;
    }
    let value = match text.to_ascii_lowercase().as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => f64::INFINITY,
        "-inf" | "-infinity" => f64::NEG_INFINITY,
        _ => text.parse::<f64>().ok()?,
    };
    if value.is_nan() { None } else { Some(value) }
}

/// Formats a double like C's `printf("%.17g")`, which Redis 7.0 uses both for scores in
/// replies (ZSCORE, WITHSCORES) and for Lua numbers passed as command arguments: integral
/// values print as plain digits, 0.1 prints as `0.10000000000000001`, 1e20 as `1e+20`.
pub fn format_g17(value: f64) -> String {
    if value.is_infinite() {
        return if value > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    if value.is_nan() {
        return "nan".to_owned();
    }
    if value == 0.0 {
        return if value.is_sign_negative() { "-0" } else { "0" }.to_owned();
    }
    // 17 significant digits: one before the point, 16 after, in scientific form first.
    let sci = format!("{value:.16e}");
    let (mantissa, exponent) = sci.split_once('e').expect("{:e} always has an exponent");
    let exponent: i32 = exponent.parse().expect("exponent is an integer");
    if !(-4..17).contains(&exponent) {
        let mantissa = strip_fraction_zeros(mantissa);
        let sign = if exponent < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exponent.abs());
    }
    let decimals = (16 - exponent).max(0) as usize;
    strip_fraction_zeros(&format!("{value:.decimals$}")).to_owned()
}

/// `%g` drops trailing zeros of the fraction, and the point when nothing is left after it.
fn strip_fraction_zeros(text: &str) -> &str {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_follow_string2ll() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-12"), Some(-12));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        for bad in [
            &b""[..],
            b"-",
            b"01",
            b"-0",
            b"+1",
            b" 1",
            b"1 ",
            b"1.0",
            b"9223372036854775808",
        ] {
            assert_eq!(parse_i64(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn doubles_print_like_printf_g17() {
        assert_eq!(format_g17(3.0), "3");
        assert_eq!(format_g17(-2.0), "-2");
        assert_eq!(format_g17(0.1), "0.10000000000000001");
        assert_eq!(format_g17(1e20), "1e+20");
        assert_eq!(format_g17(1_700_000_000_123.0), "1700000000123");
        assert_eq!(format_g17(1.5), "1.5");
        assert_eq!(format_g17(0.0001), "0.0001");
        assert_eq!(format_g17(0.00001), "1.0000000000000001e-05");
        assert_eq!(format_g17(f64::INFINITY), "inf");
    }

    #[test]
    fn scores_parse_like_string2d() {
        assert_eq!(parse_f64(b"-inf"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_f64(b"+inf"), Some(f64::INFINITY));
        assert_eq!(parse_f64(b"1.5"), Some(1.5));
        assert_eq!(parse_f64(b"nan"), None);
        assert_eq!(parse_f64(b" 1"), None);
        assert_eq!(parse_f64(b"abc"), None);
    }
}
