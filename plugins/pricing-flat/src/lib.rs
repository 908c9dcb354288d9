//! Flat-rate pricing plugin: a fixed price per input token, per output token
//! and per second of estimated run time, with an optional minimum charge.
//!
//! Config keys (all amounts in minor units of `currency`, default 0):
//! `per_input_token`, `per_output_token`, `per_second`, `minimum`;
//! `currency` (default `USD`, i.e. micro-dollars) and `valid_for_secs` (default 60).
//! The quote is a pure function of the request and the config.

use infernet_plugin_api::{config, export_pricing, Error, Money, Pricing, Quote, QuoteRequest};

/// The pricing policy; it keeps no state between quotes.
struct FlatPricing;

/// Settings read from the plugin's config table.
struct Rates {
    per_input_token: u64,
    per_output_token: u64,
    per_second: u64,
    minimum: u64,
    currency: String,
    valid_for_secs: u32,
}

impl Rates {
    fn from_config() -> Result<Self, Error> {
        let currency = config::get("currency")
            .map(|c| c.trim().to_string())
            .unwrap_or_else(|| "USD".to_string());
        if currency.is_empty() {
            return Err(Error::invalid("config key `currency` is empty"));
        }
        Ok(Rates {
            per_input_token: config::parse("per_input_token")?.unwrap_or(0),
            per_output_token: config::parse("per_output_token")?.unwrap_or(0),
            per_second: config::parse("per_second")?.unwrap_or(0),
            minimum: config::parse("minimum")?.unwrap_or(0),
            currency,
            valid_for_secs: config::parse("valid_for_secs")?.unwrap_or(60),
        })
    }
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

impl Pricing for FlatPricing {
    fn new() -> Self {
        FlatPricing
    }

    fn quote(&mut self, request: QuoteRequest) -> Result<Quote, Error> {
        let rates = Rates::from_config()?;
        let input = mul(
            u64::from(request.input_tokens),
            rates.per_input_token,
            "input",
        )?;
        let output = mul(
            u64::from(request.max_output_tokens),
            rates.per_output_token,
            "output",
        )?;
        // ceil(estimated_ms * per_second / 1000)
        let time = mul(request.estimated_ms, rates.per_second, "time")?.div_ceil(1000);
        let subtotal = add(add(input, output, "output")?, time, "time")?;
        // The `minimum` entry is what tops the subtotal up to the minimum charge,
        // so the breakdown always sums to the price.
        let top_up = rates.minimum.saturating_sub(subtotal);
        let total = subtotal.max(rates.minimum);
        Ok(Quote {
            price: Money::new(total, &rates.currency),
            valid_for_secs: rates.valid_for_secs,
            breakdown: vec![
                ("input".to_string(), input),
                ("output".to_string(), output),
                ("time".to_string(), time),
                ("minimum".to_string(), top_up),
            ],
        })
    }
}

export_pricing!(FlatPricing);
