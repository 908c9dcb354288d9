//! Currencies, exact minor-unit ↔ decimal conversion, and timestamps.

use infernet_plugin_api::{CurrencyInfo, Error};

/// The chains CoinPay's escrow API takes, with their decimals.
pub const CURRENCIES: &[(&str, u8)] = &[
    ("BTC", 8),
    ("ETH", 18),
    ("SOL", 9),
    ("POL", 18),
    ("BCH", 8),
    ("USDC_ETH", 6),
    ("USDC_POL", 6),
    ("USDC_SOL", 6),
];

/// The WIT list of supported currencies.
pub fn currency_infos() -> Vec<CurrencyInfo> {
    CURRENCIES
        .iter()
        .map(|(code, decimals)| CurrencyInfo {
            code: code.to_string(),
            decimals: *decimals,
        })
        .collect()
}

/// Decimals of `code`, or `unsupported` naming the supported codes.
pub fn decimals(code: &str) -> Result<u8, Error> {
    CURRENCIES
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, d)| *d)
        .ok_or_else(|| {
            let list: Vec<&str> = CURRENCIES.iter().map(|(c, _)| *c).collect();
            Error::unsupported(format!(
                "currency `{code}` is not supported by the CoinPay adapter; supported: {}",
                list.join(", ")
            ))
        })
}

/// `minor` minor units as a decimal number of whole units, exactly
/// (`150000000`, 8 → `1.5`). No floats.
pub fn to_decimal(minor: u64, decimals: u8) -> String {
    if decimals == 0 {
        return minor.to_string();
    }
    let digits = format!("{minor:0>width$}", width = decimals as usize + 1);
    let (int, frac) = digits.split_at(digits.len() - decimals as usize);
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        int.to_string()
    } else {
        format!("{int}.{frac}")
    }
}

/// A decimal number of whole units (`1.5`, `0.000001`) as minor units with
/// `decimals`, exactly; digits past `decimals` are dropped (rounds down:
/// an escrow is never read as holding more than it does). `None` when it
/// is not a plain non-negative decimal or does not fit.
pub fn from_decimal(s: &str, decimals: u8) -> Option<u64> {
    let s = s.trim();
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty()
        || !int.bytes().all(|c| c.is_ascii_digit())
        || !frac.bytes().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let d = decimals as usize;
    let frac: String = frac.chars().take(d).collect();
    let digits = format!("{int}{frac:0<d$}");
    digits.parse::<u128>().ok()?.try_into().ok()
}

/// Unix seconds from an RFC 3339 / ISO 8601 UTC-or-offset timestamp
/// (`2026-01-02T03:04:05.678Z`, `...+02:00`); fractions are dropped.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: core::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    if let Some(r) = rest.strip_prefix('.') {
        rest = r.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match rest {
        "" | "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let r = &rest[1..];
            let oh = r.get(0..2)?.parse::<i64>().ok()?;
            let om = r.get(3..5).and_then(|m| m.parse::<i64>().ok()).unwrap_or(0);
            sign * (oh * 3600 + om * 60)
        }
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    // days from civil (Howard Hinnant)
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + se - offset;
    u64::try_from(secs).ok()
}

/// Seconds since the Unix epoch (wasi clocks).
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_exact() {
        assert_eq!(to_decimal(150_000_000, 8), "1.5");
        assert_eq!(to_decimal(1, 18), "0.000000000000000001");
        assert_eq!(to_decimal(u64::MAX, 18), "18.446744073709551615");
        assert_eq!(to_decimal(2_000_000, 6), "2");
        assert_eq!(to_decimal(0, 6), "0");
    }

    #[test]
    fn decimals_parse_exactly() {
        assert_eq!(from_decimal("1.5", 8), Some(150_000_000));
        assert_eq!(from_decimal("0.000000000000000001", 18), Some(1));
        assert_eq!(from_decimal("18.446744073709551615", 18), Some(u64::MAX));
        assert_eq!(from_decimal("18.446744073709551616", 18), None);
        assert_eq!(from_decimal("2", 6), Some(2_000_000));
        assert_eq!(from_decimal("0.0000019", 6), Some(1));
        assert_eq!(from_decimal("-1", 6), None);
        assert_eq!(from_decimal("1e5", 6), None);
    }

    #[test]
    fn timestamps_parse() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2000-03-01T00:00:00.123Z"), Some(951_868_800));
        assert_eq!(
            parse_rfc3339("2000-03-01T02:00:00+02:00"),
            Some(951_868_800)
        );
        assert_eq!(parse_rfc3339("garbage"), None);
    }
}
