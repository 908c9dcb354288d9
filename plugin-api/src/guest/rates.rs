//! The rate card most pricing policies start from: a price per input token,
//! per output token and per second of estimated run time, topped up to a
//! minimum charge. Integers only; an overflow is an error, never a wrap.

use crate::{config, Error, Money, Quote, QuoteRequest};

/// Rates read from the plugin's config table. All amounts are minor units
/// of `currency` (for `USD`, the quote unit, micro-dollars).
///
/// | config key | meaning | default |
/// |---|---|---|
/// | `per_input_token` | charge per prompt token | 0 |
/// | `per_output_token` | charge per output token the client may receive | 0 |
/// | `per_second` | charge per second of estimated run time (rounded up) | 0 |
/// | `minimum` | the least a job costs | one input plus one output token |
/// | `currency` | the quote's currency code | `USD` |
/// | `valid_for_secs` | how long the quote holds | 60 |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateCard {
    pub per_input_token: u64,
    pub per_output_token: u64,
    pub per_second: u64,
    pub minimum: u64,
    pub currency: String,
    pub valid_for_secs: u32,
}

/// What a request costs on a [`RateCard`], item by item.
///
/// `input + output + time + minimum_top_up == total` always holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charge {
    pub input: u64,
    pub output: u64,
    pub time: u64,
    /// What tops `input + output + time` up to the card's minimum (0 when above it).
    pub minimum_top_up: u64,
    pub total: u64,
}

impl RateCard {
    /// Reads the card from the config keys in the table above; a malformed
    /// value or an empty `currency` is an `invalid-input` error naming the key.
    pub fn from_config() -> Result<Self, Error> {
        let currency = config::get("currency")
            .map(|c| c.trim().to_string())
            .unwrap_or_else(|| "USD".to_string());
        if currency.is_empty() {
            return Err(Error::invalid("config key `currency` is empty"));
        }
        let per_input_token: u64 = config::parse("per_input_token")?.unwrap_or(0);
        let per_output_token: u64 = config::parse("per_output_token")?.unwrap_or(0);
        let smallest = default_minimum(per_input_token, per_output_token);
        Ok(RateCard {
            per_input_token,
            per_output_token,
            per_second: config::parse("per_second")?.unwrap_or(0),
            minimum: config::parse("minimum")?.unwrap_or(smallest),
            currency,
            valid_for_secs: config::parse("valid_for_secs")?.unwrap_or(60),
        })
    }

    /// Prices `request`: `input_tokens * per_input_token`,
    /// `max_output_tokens * per_output_token`,
    /// `ceil(estimated_ms * per_second / 1000)`, topped up to `minimum`.
    pub fn charge(&self, request: &QuoteRequest) -> Result<Charge, Error> {
        let input = mul(
            u64::from(request.input_tokens),
            self.per_input_token,
            "input",
        )?;
        let output = mul(
            u64::from(request.max_output_tokens),
            self.per_output_token,
            "output",
        )?;
        let time = mul(request.estimated_ms, self.per_second, "time")?.div_ceil(1000);
        let subtotal = add(add(input, output, "output")?, time, "time")?;
        Ok(Charge {
            input,
            output,
            time,
            minimum_top_up: self.minimum.saturating_sub(subtotal),
            total: subtotal.max(self.minimum),
        })
    }

    /// A quote for `price` minor units of the card's currency, valid for
    /// the card's `valid_for_secs`, with `breakdown` as its itemisation.
    pub fn quote(&self, price: u64, breakdown: Vec<(String, u64)>) -> Quote {
        Quote {
            price: Money::new(price, &self.currency),
            valid_for_secs: self.valid_for_secs,
            breakdown,
        }
    }
}

impl Charge {
    /// The items `input`, `output`, `time` and `minimum`, which sum to `total`.
    pub fn breakdown(&self) -> Vec<(String, u64)> {
        vec![
            ("input".to_string(), self.input),
            ("output".to_string(), self.output),
            ("time".to_string(), self.time),
            ("minimum".to_string(), self.minimum_top_up),
        ]
    }
}

/// The `minimum` of a card that configures none: what the smallest job
/// (one input and one output token) costs. A provider that set any
/// per-token price never quotes a job for nothing, unless it says so with
/// `minimum = 0`.
pub fn default_minimum(per_input_token: u64, per_output_token: u64) -> u64 {
    per_input_token.saturating_add(per_output_token)
}

/// `a * b`, or an error naming what overflowed.
fn mul(a: u64, b: u64, what: &str) -> Result<u64, Error> {
    a.checked_mul(b)
        .ok_or_else(|| Error::invalid(format!("price overflow computing the {what} charge")))
}

/// `a + b`, or an error naming what overflowed.
fn add(a: u64, b: u64, what: &str) -> Result<u64, Error> {
    a.checked_add(b)
        .ok_or_else(|| Error::invalid(format!("price overflow adding the {what} charge")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(input_tokens: u32, max_output_tokens: u32) -> QuoteRequest {
        QuoteRequest {
            model: "m".into(),
            input_tokens,
            max_output_tokens,
            estimated_ms: 0,
            queue_depth: 0,
            load_permille: 0,
        }
    }

    #[test]
    fn a_priced_card_without_a_minimum_never_charges_nothing() {
        let card = RateCard {
            per_input_token: 1,
            per_output_token: 5,
            per_second: 0,
            minimum: default_minimum(1, 5),
            currency: "USD".into(),
            valid_for_secs: 60,
        };
        let empty = card.charge(&request(0, 0)).unwrap();
        assert_eq!(empty.total, 6);
        assert_eq!(empty.minimum_top_up, 6);
        // Above the minimum it is the plain sum.
        assert_eq!(card.charge(&request(10, 10)).unwrap().total, 60);
        // A free card stays free.
        assert_eq!(default_minimum(0, 0), 0);
    }
}
