//! Argo Rollouts' pause durations, read exactly as Argo reads them (`RolloutPause.DurationSeconds`
//! in `pkg/apis/rollouts/v1alpha1/types.go`):
//!
//! - an integer (`duration: 10`): that many seconds;
//! - a string that is a base-10 `int32` with optional sign (`"10"`, `"+10"`): that many seconds
//!   (Go's `strconv.ParseInt(s, 10, 32)`);
//! - any other string is a Go duration (`time.ParseDuration`): an optional sign, then one or more
//!   `<decimal><unit>` (`"1h30m"`, `"1.5h"`, `".5s"`, `"300ms"`), units `ns`, `us` (`µs`, `μs`),
//!   `ms`, `s`, `m`, `h`; `"0"` alone is allowed. The result is truncated toward zero to whole
//!   seconds (`int32(d.Seconds())`), so `"500ms"` is 0 s and `"1.9s"` is 1 s, as in Argo.
//!
//! A negative result is an error (Argo's validation rejects it), and so is one that does not fit
//! `int32` seconds (Argo would wrap it) or a Go duration that overflows Go's `int64` nanoseconds.

/// Go's `time.ParseDuration` caps durations at `1<<63 - 1` nanoseconds.
const GO_MAX_NANOS: u64 = 1 << 63;

/// The seconds of an Argo pause duration string; see the module docs.
pub fn argo_duration_string_seconds(text: &str) -> Result<u32, String> {
    let seconds = match parse_int32(text) {
        Some(seconds) => i64::from(seconds),
        None => {
            let nanos = parse_go_duration(text).ok_or_else(|| {
                format!(
                    "{text:?} is neither a number of seconds nor a duration like \"30s\", \
                     \"5m\" or \"1h30m\" (units ns, us, ms, s, m, h)"
                )
            })?;
            // Truncation toward zero, as Go's int32(float64) conversion of d.Seconds().
            nanos / 1_000_000_000
        }
    };
    non_negative_seconds(seconds, text)
}

/// The seconds of an Argo pause duration integer.
pub fn argo_duration_int_seconds(seconds: i32) -> Result<u32, String> {
    non_negative_seconds(i64::from(seconds), &seconds.to_string())
}

fn non_negative_seconds(seconds: i64, shown: &str) -> Result<u32, String> {
    if seconds < 0 {
        return Err(format!("{shown} is negative"));
    }
    if seconds > i64::from(i32::MAX) {
        return Err(format!(
            "{shown} is {seconds} s, above the largest pause ({} s)",
            i32::MAX
        ));
    }
    u32::try_from(seconds).map_err(|_| format!("{shown} is out of range"))
}

/// Go's `strconv.ParseInt(text, 10, 32)`: optional `+`/`-`, then ASCII digits only.
fn parse_int32(text: &str) -> Option<i32> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Rust's parser accepts the same optional sign and digits; it also checks the range.
    text.parse::<i32>().ok()
}

/// Go's `time.ParseDuration`, as signed nanoseconds; `None` where Go returns an error.
pub fn parse_go_duration(text: &str) -> Option<i64> {
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let first = rest.as_bytes()[0];
        if !(first == b'.' || first.is_ascii_digit()) {
            return None;
        }
        let (whole, after) = leading_int(rest)?;
        let has_whole = after.len() != rest.len();
        rest = after;
        let (mut fraction, mut scale, mut has_fraction) = (0u64, 1f64, false);
        if let Some(after_dot) = rest.strip_prefix('.') {
            let (f, s, after) = leading_fraction(after_dot);
            has_fraction = after.len() != after_dot.len();
            (fraction, scale, rest) = (f, s, after);
        }
        if !has_whole && !has_fraction {
            return None;
        }
        let unit_len = rest
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit: u64 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        let mut value = whole.checked_mul(unit).filter(|v| *v <= GO_MAX_NANOS)?;
        if fraction > 0 {
            // Go: v += uint64(float64(f) * (float64(unit) / scale)).
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let part = (fraction as f64 * (unit as f64 / scale)) as u64;
            value = value.checked_add(part).filter(|v| *v <= GO_MAX_NANOS)?;
        }
        total = total.checked_add(value).filter(|v| *v <= GO_MAX_NANOS)?;
    }
    if negative {
        // -(1<<63) is i64::MIN, which Go accepts.
        0i64.checked_sub_unsigned(total)
    } else {
        i64::try_from(total).ok()
    }
}

/// Go's `leadingInt`: the leading ASCII digits as a number; `None` on overflow past `1<<63`.
fn leading_int(text: &str) -> Option<(u64, &str)> {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let mut x: u64 = 0;
    for b in text[..end].bytes() {
        x = x
            .checked_mul(10)
            .and_then(|x| x.checked_add(u64::from(b - b'0')))
            .filter(|x| *x <= GO_MAX_NANOS)?;
    }
    Some((x, &text[end..]))
}

/// Go's `leadingFraction`: the leading digits after a '.', as a number and its power of ten;
/// digits past what fits are consumed and ignored.
fn leading_fraction(text: &str) -> (u64, f64, &str) {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (mut x, mut scale, mut overflow) = (0u64, 1f64, false);
    for b in text[..end].bytes() {
        if overflow {
            continue;
        }
        match x
            .checked_mul(10)
            .and_then(|x| x.checked_add(u64::from(b - b'0')))
            .filter(|x| *x <= GO_MAX_NANOS)
        {
            Some(y) => {
                x = y;
                scale *= 10.0;
            }
            None => overflow = true,
        }
    }
    (x, scale, &text[end..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_number_in_a_string_is_seconds_as_argo_reads_it() {
        assert_eq!(argo_duration_string_seconds("10"), Ok(10));
        assert_eq!(argo_duration_string_seconds("+10"), Ok(10));
        assert_eq!(argo_duration_string_seconds("0"), Ok(0));
        assert_eq!(argo_duration_string_seconds("-0"), Ok(0));
        assert!(argo_duration_string_seconds("-5").is_err());
        // Beyond int32: neither ParseInt nor ParseDuration (no unit) accepts it.
        assert!(argo_duration_string_seconds("2147483648").is_err());
        assert_eq!(
            argo_duration_string_seconds("2147483647"),
            Ok(i32::MAX as u32)
        );
    }

    #[test]
    fn go_durations_truncate_to_whole_seconds() {
        for (text, seconds) in [
            ("10s", 10),
            ("1m", 60),
            ("1h30m", 5400),
            ("1.5h", 5400),
            (".5m", 30),
            ("5.s", 5),
            ("500ms", 0),
            ("1999ms", 1),
            ("1.9s", 1),
            ("2000000us", 2),
            ("2000000\u{b5}s", 2),
            ("2000000\u{3bc}s", 2),
            ("3000000000ns", 3),
            ("1h1m1s1ms", 3661),
            ("+1m", 60),
            ("-500ms", 0),
            ("-0s", 0),
            ("0.000000001s", 0),
        ] {
            assert_eq!(argo_duration_string_seconds(text), Ok(seconds), "{text}");
        }
    }

    #[test]
    fn what_go_rejects_is_an_error() {
        for text in [
            "", "s", "10x", ".s", "-", "+", "1.2.3s", "1 s", " 1s", "1S", "1d", "1h-1m", "-1s",
            "10_0", "0x10", "1e3s", "soon",
        ] {
            assert!(argo_duration_string_seconds(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn overflow_is_an_error_not_a_wrap() {
        // Go's limit is 1<<63 - 1 ns (about 292 years).
        assert!(parse_go_duration("2562048h").is_none());
        assert_eq!(
            parse_go_duration("2562047h"),
            Some(2_562_047 * 3_600_000_000_000)
        );
        assert!(parse_go_duration("99999999999999999999s").is_none());
        assert_eq!(parse_go_duration("-9223372036854775808ns"), Some(i64::MIN));
        assert!(parse_go_duration("9223372036854775808ns").is_none());
        // A Go duration that fits int64 ns but not int32 seconds.
        let message = argo_duration_string_seconds("1000000h").expect_err("too long");
        assert!(message.contains("above the largest pause"), "{message}");
        assert!(argo_duration_int_seconds(-1).is_err());
        assert_eq!(argo_duration_int_seconds(15), Ok(15));
    }
}
