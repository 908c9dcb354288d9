//! The currencies CoinPay's escrow API takes and the amounts it writes.
//!
//! Currencies: the SDK's shared table ([`infernet_plugin_api::money`])
//! without the `USD` quote unit, which is no chain. Amounts go out as exact
//! plain decimals (the SDK's [`to_decimal`]) and come back as JSON numbers
//! the service printed from a JavaScript double, so small ones arrive in
//! exponent form (`3.3e-7`): [`parse_amount`] reads any JSON number text
//! exactly into integer minor units, without a float, and refuses one that
//! is finer than the currency's decimals rather than rounding it.
//! [`check_representable`] refuses, before anything is sent, an amount a
//! double cannot carry unchanged (more than 15 significant digits).

use infernet_plugin_api::money::{self, Currency, QUOTE_CURRENCY};
use infernet_plugin_api::{CurrencyInfo, Error};
use std::fmt;

pub use money::to_decimal;

/// Significant decimal digits every IEEE-754 double carries through a
/// decimal → double → shortest-decimal round trip (`DBL_DIG`).
pub const SAFE_DIGITS: u32 = 15;

/// The chains CoinPay takes, from the shared table.
fn chains() -> impl Iterator<Item = &'static Currency> {
    money::CURRENCIES
        .iter()
        .filter(|c| c.code != QUOTE_CURRENCY)
}

/// The WIT list of supported currencies.
pub fn currency_infos() -> Vec<CurrencyInfo> {
    chains()
        .map(|c| CurrencyInfo {
            code: c.code.to_string(),
            decimals: c.decimals,
        })
        .collect()
}

/// Decimals of `code`, or `unsupported` naming the supported codes.
pub fn decimals(code: &str) -> Result<u8, Error> {
    chains()
        .find(|c| c.code == code)
        .map(|c| c.decimals)
        .ok_or_else(|| {
            let list: Vec<&str> = chains().map(|c| c.code).collect();
            Error::unsupported(format!(
                "currency `{code}` is not supported by the CoinPay adapter; supported: {}",
                list.join(", ")
            ))
        })
}

/// Why an amount in an answer cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AmountError {
    /// Not a JSON number (`-? int frac? exp?`).
    NotANumber,
    /// Below zero.
    Negative,
    /// Finer than the currency's smallest unit.
    TooPrecise {
        /// The currency's decimals.
        decimals: u8,
    },
    /// More minor units than a `u64` holds.
    TooLarge,
}

impl fmt::Display for AmountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AmountError::NotANumber => write!(f, "is not a number"),
            AmountError::Negative => write!(f, "is negative"),
            AmountError::TooPrecise { decimals } => {
                write!(
                    f,
                    "has more precision than the currency's {decimals} decimals"
                )
            }
            AmountError::TooLarge => write!(f, "is too large"),
        }
    }
}

/// The parts of a JSON number's text.
struct JsonNumber<'a> {
    negative: bool,
    int: &'a str,
    frac: &'a str,
    /// Exponent: whether negative, its digits.
    exp: Option<(bool, &'a str)>,
}

/// Splits JSON number text into its parts, checking the JSON grammar.
fn split_json_number(s: &str) -> Option<JsonNumber<'_>> {
    let digits_end = |t: &str| {
        t.bytes()
            .position(|b| !b.is_ascii_digit())
            .unwrap_or(t.len())
    };
    let (negative, rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let n = digits_end(rest);
    let (int, mut rest) = rest.split_at(n);
    if int.is_empty() || (int.len() > 1 && int.starts_with('0')) {
        return None;
    }
    let mut frac = "";
    if let Some(r) = rest.strip_prefix('.') {
        let n = digits_end(r);
        if n == 0 {
            return None;
        }
        (frac, rest) = r.split_at(n);
    }
    let mut exp = None;
    if let Some(r) = rest.strip_prefix(['e', 'E']) {
        let (neg, r) = match r.as_bytes().first() {
            Some(b'-') => (true, &r[1..]),
            Some(b'+') => (false, &r[1..]),
            _ => (false, r),
        };
        let n = digits_end(r);
        if n == 0 {
            return None;
        }
        exp = Some((neg, &r[..n]));
        rest = &r[n..];
    }
    rest.is_empty().then_some(JsonNumber {
        negative,
        int,
        frac,
        exp,
    })
}

/// Reads the text of a JSON number (`1.5`, `0.000000000000000001`,
/// `3.3e-7`, `1E+2`) as minor units of a currency with `decimals`,
/// exactly: no float is involved, digits past the currency's smallest unit
/// are refused (unless they are zeros), and so is anything a `u64` cannot hold.
pub fn parse_amount(text: &str, decimals: u8) -> Result<u64, AmountError> {
    let JsonNumber {
        negative,
        int,
        frac,
        exp,
    } = split_json_number(text).ok_or(AmountError::NotANumber)?;
    // value = digits × 10^(exp − len(frac)); minor = value × 10^decimals.
    let digits = format!("{int}{frac}");
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        return Ok(0); // zero, whatever its sign or exponent
    }
    if negative {
        return Err(AmountError::Negative);
    }
    let significant = digits.trim_end_matches('0');
    let trailing_zeros = (digits.len() - significant.len()) as i128;
    // An exponent longer than 30 digits is far beyond anything a u64
    // holds either way: its sign decides which error.
    let exp: i128 = match exp {
        None => 0,
        Some((neg, e)) => {
            let e = e.trim_start_matches('0');
            if e.len() > 30 {
                return Err(if neg {
                    AmountError::TooPrecise { decimals }
                } else {
                    AmountError::TooLarge
                });
            }
            let v: i128 = if e.is_empty() {
                0
            } else {
                e.parse().map_err(|_| AmountError::NotANumber)?
            };
            if neg {
                -v
            } else {
                v
            }
        }
    };
    let shift = exp - frac.len() as i128 + i128::from(decimals) + trailing_zeros;
    if shift < 0 {
        return Err(AmountError::TooPrecise { decimals });
    }
    // u64::MAX has 20 digits: more than that is too large.
    if significant.len() as i128 + shift > 20 {
        return Err(AmountError::TooLarge);
    }
    let mut minor: u128 = significant.parse().map_err(|_| AmountError::TooLarge)?;
    for _ in 0..shift {
        minor = minor.checked_mul(10).ok_or(AmountError::TooLarge)?;
    }
    u64::try_from(minor).map_err(|_| AmountError::TooLarge)
}

/// Significant decimal digits of `minor` (trailing zeros do not count).
pub fn significant_digits(minor: u64) -> u32 {
    let mut m = minor;
    while m != 0 && m.is_multiple_of(10) {
        m /= 10;
    }
    m.checked_ilog10().map_or(0, |d| d + 1)
}

/// Refuses an amount CoinPay cannot hold exactly: the service reads and
/// answers amounts as JSON numbers (JavaScript doubles), which keep at most
/// [`SAFE_DIGITS`] significant digits unchanged.
pub fn check_representable(minor: u64, code: &str, decimals: u8) -> Result<(), Error> {
    let digits = significant_digits(minor);
    if digits > SAFE_DIGITS {
        return Err(Error::invalid(format!(
            "{} {code} has {digits} significant digits; CoinPay carries amounts as JSON \
             numbers (doubles), exact to {SAFE_DIGITS} significant digits only",
            to_decimal(u128::from(minor), decimals)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quote_unit_is_not_a_chain() {
        assert!(decimals("USD").is_err());
        assert_eq!(decimals("BTC").unwrap(), 8);
        assert_eq!(decimals("USDC_POL").unwrap(), 6);
        assert_eq!(currency_infos().len(), money::CURRENCIES.len() - 1);
    }

    #[test]
    fn plain_and_exponent_amounts_parse_exactly() {
        let ok = |s: &str, d: u8| parse_amount(s, d).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(ok("1.5", 8), 150_000_000);
        assert_eq!(ok("2", 6), 2_000_000);
        assert_eq!(ok("0", 6), 0);
        assert_eq!(ok("-0", 6), 0);
        assert_eq!(ok("0e999999999999999999999999999999999", 6), 0);
        // JavaScript prints doubles below 1e-6 in exponent form
        assert_eq!(ok("3.3e-7", 8), 33);
        assert_eq!(ok("1e-18", 18), 1);
        assert_eq!(ok("1E-18", 18), 1);
        assert_eq!(ok("1.2345e-7", 18), 123_450_000_000);
        assert_eq!(ok("5e-6", 6), 5);
        assert_eq!(ok("1.5e2", 8), 15_000_000_000);
        assert_eq!(ok("1.5E+2", 8), 15_000_000_000);
        assert_eq!(ok("15e-1", 1), 15);
        assert_eq!(ok("120e-1", 0), 12);
        assert_eq!(ok("1.10", 1), 11, "trailing zeros are not precision");
        assert_eq!(ok("0.000000000000000001", 18), 1);
        assert_eq!(ok("0.123456789", 9), 123_456_789);
        assert_eq!(ok("18.446744073709551615", 18), u64::MAX);
        assert_eq!(ok("1.8446744073709551615e1", 18), u64::MAX);
        assert_eq!(ok("18446744073709551615", 0), u64::MAX);
        assert_eq!(ok("1e+0", 0), 1);
        assert_eq!(ok("1e0000000000000000000000000000000000001", 0), 10);
    }

    #[test]
    fn amounts_finer_than_the_currency_are_refused_not_rounded() {
        let precise = |s: &str, d: u8| parse_amount(s, d);
        let too_precise = |d: u8| Err(AmountError::TooPrecise { decimals: d });
        assert_eq!(precise("0.123456789", 8), too_precise(8));
        assert_eq!(precise("1e-9", 8), too_precise(8));
        assert_eq!(precise("3.33e-7", 8), too_precise(8));
        assert_eq!(precise("0.0000019", 6), too_precise(6));
        assert_eq!(precise("5e-7", 6), too_precise(6));
        assert_eq!(precise("1.000000001", 8), too_precise(8));
        assert_eq!(precise("12e-1", 0), too_precise(0));
        assert_eq!(precise("1e-19", 18), too_precise(18));
        assert_eq!(precise("1e-400", 18), too_precise(18));
        assert_eq!(
            precise("1e-9999999999999999999999999999999999", 18),
            too_precise(18)
        );
    }

    #[test]
    fn malformed_negative_and_huge_amounts_are_refused() {
        for bad in [
            "", "-", ".", ".5", "1.", "01", "00.5", "+1", "1e", "1e+", "e5", "1.5.5", "0x10",
            "1,5", "NaN", "Infinity", " 1", "1 ", "\"1\"", "1e5e5", "1_000",
        ] {
            assert_eq!(
                parse_amount(bad, 8),
                Err(AmountError::NotANumber),
                "{bad:?}"
            );
        }
        assert_eq!(parse_amount("-1", 8), Err(AmountError::Negative));
        assert_eq!(parse_amount("-3.3e-7", 8), Err(AmountError::Negative));
        for huge in [
            "18446744073709551616",
            "1e20",
            "1e400",
            "1e99999999999999999999999999999999999",
            "100000000000000000000000000000",
        ] {
            assert_eq!(parse_amount(huge, 0), Err(AmountError::TooLarge), "{huge}");
        }
        assert_eq!(
            parse_amount("18.446744073709551616", 18),
            Err(AmountError::TooLarge)
        );
        assert_eq!(
            parse_amount("1.8446744073709551616e1", 18),
            Err(AmountError::TooLarge)
        );
    }

    #[test]
    fn amounts_a_double_cannot_carry_are_refused_before_sending() {
        assert_eq!(significant_digits(0), 0);
        assert_eq!(significant_digits(150_000_000), 2);
        assert_eq!(significant_digits(123_456_789_012_345), 15);
        assert_eq!(significant_digits(u64::MAX), 20);
        assert!(check_representable(1, "ETH", 18).is_ok());
        assert!(check_representable(123_456_789_012_345_000, "ETH", 18).is_ok());
        let Err(Error::InvalidInput(m)) = check_representable(1_234_567_890_123_456, "ETH", 18)
        else {
            panic!("16 significant digits accepted");
        };
        assert!(
            m.contains("0.001234567890123456 ETH") && m.contains("16"),
            "{m}"
        );
        assert!(check_representable(u64::MAX, "POL", 18).is_err());
    }

    #[test]
    fn amounts_go_out_as_plain_decimals() {
        assert_eq!(to_decimal(150_000_000, 8), "1.5");
        assert_eq!(to_decimal(1, 18), "0.000000000000000001");
        // what goes out is read back to the same minor units
        for (minor, d) in [(1u64, 18u8), (33, 8), (2_000_000, 6), (123_456_789, 9)] {
            assert_eq!(
                parse_amount(&to_decimal(u128::from(minor), d), d),
                Ok(minor)
            );
        }
    }
}
