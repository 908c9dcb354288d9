//! Exact money, shared by the host and every payment adapter: the currency
//! table, decimal amounts in integer minor units (strict parsing and
//! formatting, plus the truncating read a service's answer needs), and
//! conversion of a USD quote into a payment currency through a named rate
//! source. No float ever holds an amount. Plain Rust: this module builds
//! for the host without the guest bindings (`default-features = false`).

use std::collections::BTreeMap;
use std::fmt;

/// A currency the network can settle in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Currency {
    /// Code used in config, quotes and escrows (`BTC`, `USDC_POL`, ...).
    pub code: &'static str,
    /// Chain it lives on (CoinPay's `chain` field for escrows).
    pub chain: &'static str,
    /// Minor units per whole unit, as a power of ten.
    pub decimals: u8,
}

/// Quotes are priced in micro-USD (`USD` with 6 decimals); payment
/// currencies are converted from it.
pub const QUOTE_CURRENCY: &str = "USD";

/// Every currency known here: the quote unit and the settlement currencies.
pub const CURRENCIES: &[Currency] = &[
    Currency {
        code: "USD",
        chain: "none",
        decimals: 6,
    },
    Currency {
        code: "BTC",
        chain: "BTC",
        decimals: 8,
    },
    Currency {
        code: "ETH",
        chain: "ETH",
        decimals: 18,
    },
    Currency {
        code: "SOL",
        chain: "SOL",
        decimals: 9,
    },
    Currency {
        code: "POL",
        chain: "POL",
        decimals: 18,
    },
    Currency {
        code: "BCH",
        chain: "BCH",
        decimals: 8,
    },
    Currency {
        code: "USDC_ETH",
        chain: "ETH",
        decimals: 6,
    },
    Currency {
        code: "USDC_POL",
        chain: "POL",
        decimals: 6,
    },
    Currency {
        code: "USDC_SOL",
        chain: "SOL",
        decimals: 6,
    },
];

/// What went wrong with an amount or a currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoneyError {
    /// Not in [`CURRENCIES`].
    UnknownCurrency {
        /// What was asked for.
        code: String,
    },
    /// Not a decimal amount, or more fractional digits than the currency has.
    BadAmount {
        /// The text.
        text: String,
        /// Currency.
        code: String,
        /// Its decimals.
        decimals: u8,
    },
    /// The result does not fit.
    Overflow(String),
    /// The rate source has no rate for the currency.
    NoRate {
        /// Source.
        source_name: String,
        /// Currency.
        code: String,
    },
    /// The rate source cannot answer at all (unreadable, malformed, stale).
    RateSource {
        /// Source.
        source_name: String,
        /// What is wrong and what to do.
        message: String,
    },
}

impl fmt::Display for MoneyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MoneyError::UnknownCurrency { code } => {
                write!(f, "unknown currency `{code}`; known: {}", known_codes())
            }
            MoneyError::BadAmount {
                text,
                code,
                decimals,
            } => write!(
                f,
                "`{text}` is not an amount of {code} (digits, at most one `.`, at most {decimals} decimals)"
            ),
            MoneyError::Overflow(what) => write!(f, "amount overflows: {what}"),
            MoneyError::NoRate { source_name, code } => {
                write!(f, "rate source `{source_name}` has no USD rate for `{code}`")
            }
            MoneyError::RateSource {
                source_name,
                message,
            } => write!(f, "rate source `{source_name}`: {message}"),
        }
    }
}

impl std::error::Error for MoneyError {}

fn known_codes() -> String {
    CURRENCIES
        .iter()
        .map(|c| c.code)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The table entry for `code` (case-sensitive, as written in the table).
pub fn currency(code: &str) -> Result<&'static Currency, MoneyError> {
    CURRENCIES
        .iter()
        .find(|c| c.code == code)
        .ok_or_else(|| MoneyError::UnknownCurrency { code: code.into() })
}

/// An exact amount: integer minor units of one currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount {
    /// Minor units (satoshi, wei, lamports, micro-USD, ...).
    pub minor: u128,
    /// The currency.
    pub currency: &'static str,
}

impl Amount {
    /// `minor` units of `code`.
    pub fn from_minor(minor: u128, code: &str) -> Result<Amount, MoneyError> {
        Ok(Amount {
            minor,
            currency: currency(code)?.code,
        })
    }

    /// Parses a decimal amount (`"0.00012"` BTC) into minor units, exactly.
    pub fn parse(text: &str, code: &str) -> Result<Amount, MoneyError> {
        let c = currency(code)?;
        let bad = || MoneyError::BadAmount {
            text: text.into(),
            code: c.code.into(),
            decimals: c.decimals,
        };
        let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() && frac.is_empty()
            || !digits(whole)
            || !digits(frac)
            || frac.len() > usize::from(c.decimals)
        {
            return Err(bad());
        }
        let scale = pow10(c.decimals)?;
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        let frac_minor: u128 = if frac.is_empty() {
            0
        } else {
            let f: u128 = frac.parse().map_err(|_| bad())?;
            f * pow10(c.decimals - frac.len() as u8)?
        };
        let minor = whole
            .checked_mul(scale)
            .and_then(|w| w.checked_add(frac_minor))
            .ok_or_else(|| MoneyError::Overflow(format!("{text} {code}")))?;
        Ok(Amount {
            minor,
            currency: c.code,
        })
    }

    /// The amount as a `u64` for the wire, if it fits.
    pub fn to_u64(self) -> Result<u64, MoneyError> {
        u64::try_from(self.minor).map_err(|_| MoneyError::Overflow(self.to_string()))
    }
}

impl fmt::Display for Amount {
    /// Decimal, trailing zeros trimmed: `0.00012 BTC`, `3 USD`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let decimals = currency(self.currency).map_or(0, |c| c.decimals);
        write!(f, "{} {}", to_decimal(self.minor, decimals), self.currency)
    }
}

/// `minor` minor units as a decimal number of whole units with `decimals`
/// places, trailing zeros trimmed (`150000000`, 8 → `1.5`). Exact.
pub fn to_decimal(minor: u128, decimals: u8) -> String {
    let Ok(scale) = pow10(decimals) else {
        return minor.to_string();
    };
    let (whole, frac) = (minor / scale, minor % scale);
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:0width$}", width = usize::from(decimals));
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

/// A decimal number of whole units as minor units with `decimals`, reading
/// what a payment service answers: digits past `decimals` are dropped
/// (rounds down: an escrow is never read as holding more than it does).
/// `None` when it is not a plain non-negative decimal or does not fit a `u64`.
pub fn from_decimal_truncating(s: &str, decimals: u8) -> Option<u64> {
    let s = s.trim();
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty()
        || !int.bytes().all(|c| c.is_ascii_digit())
        || !frac.bytes().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let d = usize::from(decimals);
    let frac: String = frac.chars().take(d).collect();
    let digits = format!("{int}{frac:0<d$}");
    digits.parse::<u128>().ok()?.try_into().ok()
}

/// Whether two account addresses name the same account: exact, except that
/// `0x` hex addresses (EVM chains) compare without regard to case
/// (checksum casing). Empty never matches.
pub fn same_account(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        return false;
    }
    a == b || (a.len() > 2 && a.starts_with("0x") && a.eq_ignore_ascii_case(b))
}

fn pow10(n: u8) -> Result<u128, MoneyError> {
    10u128
        .checked_pow(u32::from(n))
        .ok_or_else(|| MoneyError::Overflow(format!("10^{n}")))
}

/// Where USD prices of currencies come from. The config names one; the
/// default is [`FixedRates::default`].
pub trait RateSource: Send + Sync {
    /// A name for errors and logs.
    fn name(&self) -> &str;
    /// Micro-USD per *whole* unit of `code` (e.g. BTC at 60,000 USD is
    /// 60_000_000_000).
    fn micro_usd_per_unit(&self, code: &str) -> Result<u128, MoneyError>;
}

/// A fixed table of rates (for local networks, tests, and providers who set
/// their own prices).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedRates {
    rates: BTreeMap<String, u128>,
}

impl FixedRates {
    /// A table from `(code, micro-USD per whole unit)` pairs.
    pub fn new(rates: impl IntoIterator<Item = (String, u128)>) -> Result<FixedRates, MoneyError> {
        let rates: BTreeMap<String, u128> = rates.into_iter().collect();
        for code in rates.keys() {
            currency(code)?;
        }
        Ok(FixedRates { rates })
    }

    /// This table with `overrides` replacing (or adding) the rates of their codes.
    pub fn with_overrides(
        mut self,
        overrides: impl IntoIterator<Item = (String, u128)>,
    ) -> Result<FixedRates, MoneyError> {
        for (code, rate) in overrides {
            currency(&code)?;
            self.rates.insert(code, rate);
        }
        Ok(self)
    }
}

impl Default for FixedRates {
    /// Round reference prices; a provider who settles for real sets its own.
    fn default() -> Self {
        let usd = |whole: u128| whole * 1_000_000;
        FixedRates {
            rates: [
                ("USD", usd(1)),
                ("BTC", usd(60_000)),
                ("ETH", usd(3_000)),
                ("SOL", usd(150)),
                ("POL", usd(1) / 2),
                ("BCH", usd(400)),
                ("USDC_ETH", usd(1)),
                ("USDC_POL", usd(1)),
                ("USDC_SOL", usd(1)),
            ]
            .into_iter()
            .map(|(c, r)| (c.to_string(), r))
            .collect(),
        }
    }
}

impl RateSource for FixedRates {
    fn name(&self) -> &str {
        "fixed"
    }

    fn micro_usd_per_unit(&self, code: &str) -> Result<u128, MoneyError> {
        self.rates
            .get(code)
            .copied()
            .ok_or_else(|| MoneyError::NoRate {
                source_name: self.name().into(),
                code: code.into(),
            })
    }
}

/// Converts a micro-USD price into `code`, rounding *up* to the next minor
/// unit so the provider is never paid less than its quote.
pub fn convert_usd(
    micro_usd: u128,
    code: &str,
    rates: &dyn RateSource,
) -> Result<Amount, MoneyError> {
    let c = currency(code)?;
    let rate = rates.micro_usd_per_unit(code)?;
    if rate == 0 {
        return Err(MoneyError::NoRate {
            source_name: rates.name().into(),
            code: code.into(),
        });
    }
    let numerator = micro_usd
        .checked_mul(pow10(c.decimals)?)
        .ok_or_else(|| MoneyError::Overflow(format!("{micro_usd} micro-USD in {code}")))?;
    Ok(Amount {
        minor: numerator.div_ceil(rate),
        currency: c.code,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_are_exact_inverses() {
        for (text, code, minor) in [
            ("0.00012345", "BTC", 12_345u128),
            ("1", "ETH", 1_000_000_000_000_000_000),
            ("1.5", "SOL", 1_500_000_000),
            ("0.000001", "USDC_POL", 1),
            ("12.34", "USD", 12_340_000),
            (".5", "BCH", 50_000_000),
        ] {
            let a = Amount::parse(text, code).unwrap();
            assert_eq!(a.minor, minor, "{text} {code}");
            let shown = a.to_string();
            let back = Amount::parse(shown.split(' ').next().unwrap(), code).unwrap();
            assert_eq!(back, a, "{shown}");
        }
        assert_eq!(
            Amount::parse("0.00012345", "BTC").unwrap().to_string(),
            "0.00012345 BTC"
        );
        assert_eq!(Amount::parse("3.0", "USD").unwrap().to_string(), "3 USD");
    }

    #[test]
    fn bad_amounts_and_codes_are_named() {
        for text in ["", ".", "1.2.3", "-1", "1e5", "0.123456789", " 1", "1,5"] {
            let err = Amount::parse(text, "BTC").unwrap_err();
            assert!(
                matches!(err, MoneyError::BadAmount { .. }),
                "{text:?}: {err}"
            );
        }
        let err = Amount::parse("1", "DOGE").unwrap_err().to_string();
        assert!(err.contains("DOGE") && err.contains("USDC_SOL"), "{err}");
        let err = Amount::parse("340282366920938463463375", "ETH").unwrap_err();
        assert!(matches!(err, MoneyError::Overflow(_)), "{err}");
    }

    #[test]
    fn conversion_rounds_up_never_down() {
        let rates = FixedRates::default();
        // 250 micro-USD at 60,000 USD/BTC = 0.000000004166.. BTC -> 1 satoshi.
        assert_eq!(convert_usd(250, "BTC", &rates).unwrap().minor, 1);
        // 3 USD at 3,000 USD/ETH = 0.001 ETH exactly.
        assert_eq!(
            convert_usd(3_000_000, "ETH", &rates).unwrap().minor,
            1_000_000_000_000_000
        );
        // USDC is 1:1 with micro-USD.
        assert_eq!(
            convert_usd(1_234_567, "USDC_SOL", &rates).unwrap().minor,
            1_234_567
        );
        // The converted amount is worth at least the quote, and less than one
        // minor unit more.
        for usd in [1u128, 7, 999, 123_456, 10_000_000] {
            for c in CURRENCIES {
                let rate = rates.micro_usd_per_unit(c.code).unwrap();
                let minor = convert_usd(usd, c.code, &rates).unwrap().minor;
                let scale = 10u128.pow(u32::from(c.decimals));
                assert!(minor * rate >= usd * scale, "{usd} -> {minor} {}", c.code);
                assert!(
                    minor == 0 || (minor - 1) * rate < usd * scale,
                    "{usd} -> {minor} {}",
                    c.code
                );
            }
        }
    }

    #[test]
    fn service_answers_are_read_exactly_and_never_rounded_up() {
        assert_eq!(to_decimal(150_000_000, 8), "1.5");
        assert_eq!(to_decimal(1, 18), "0.000000000000000001");
        assert_eq!(
            to_decimal(u128::from(u64::MAX), 18),
            "18.446744073709551615"
        );
        assert_eq!(to_decimal(2_000_000, 6), "2");
        assert_eq!(to_decimal(0, 6), "0");
        assert_eq!(from_decimal_truncating("1.5", 8), Some(150_000_000));
        assert_eq!(from_decimal_truncating("0.000000000000000001", 18), Some(1));
        assert_eq!(
            from_decimal_truncating("18.446744073709551615", 18),
            Some(u64::MAX)
        );
        assert_eq!(from_decimal_truncating("18.446744073709551616", 18), None);
        assert_eq!(from_decimal_truncating("2", 6), Some(2_000_000));
        assert_eq!(from_decimal_truncating("0.0000019", 6), Some(1));
        assert_eq!(from_decimal_truncating("-1", 6), None);
        assert_eq!(from_decimal_truncating("1e5", 6), None);
        assert_eq!(from_decimal_truncating(".5", 6), None);
    }

    #[test]
    fn accounts_compare_exactly_except_evm_hex_case() {
        assert!(same_account("0xAbC123", "0xabc123"));
        assert!(same_account(" acct ", "acct"));
        assert!(
            !same_account("Acct", "acct"),
            "non-hex accounts are case-sensitive"
        );
        assert!(!same_account("", ""));
        assert!(!same_account("0x", "0X"));
        assert!(!same_account("0xabc", "0xabd"));
    }

    #[test]
    fn a_rate_source_without_the_currency_says_so() {
        let rates = FixedRates::new([("BTC".to_string(), 1)]).unwrap();
        let err = convert_usd(1, "ETH", &rates).unwrap_err().to_string();
        assert!(err.contains("fixed") && err.contains("ETH"), "{err}");
        assert!(FixedRates::new([("XRP".to_string(), 1)]).is_err());
    }
}
