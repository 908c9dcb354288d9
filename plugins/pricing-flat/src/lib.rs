//! Flat-rate pricing plugin: a fixed price per input token, per output token
//! and per second of estimated run time, with an optional minimum charge.
//!
//! Config keys (all amounts in minor units of `currency`, default 0):
//! `per_input_token`, `per_output_token`, `per_second`, `minimum`;
//! `currency` (default `USD`, i.e. micro-dollars) and `valid_for_secs` (default 60).
//! The quote is a pure function of the request and the config: the SDK's
//! [`RateCard`], whose breakdown (`input`, `output`, `time`, `minimum`)
//! always sums to the price.

use infernet_plugin_api::{export_pricing, Error, Pricing, Quote, QuoteRequest, RateCard};

/// The pricing policy; it keeps no state between quotes.
struct FlatPricing;

impl Pricing for FlatPricing {
    fn new() -> Self {
        FlatPricing
    }

    fn quote(&mut self, request: QuoteRequest) -> Result<Quote, Error> {
        let card = RateCard::from_config()?;
        let charge = card.charge(&request)?;
        Ok(card.quote(charge.total, charge.breakdown()))
    }
}

export_pricing!(FlatPricing);
