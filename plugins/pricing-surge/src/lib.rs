//! Surge pricing plugin: the flat price of `pricing-flat`, multiplied by a
//! surge multiplier that grows with the provider's queue and load.
//!
//! Base price (all amounts in minor units of `currency`, default 0):
//! `per_input_token`, `per_output_token`, `per_second`, `minimum`;
//! `currency` (default `USD`, i.e. micro-dollars) and `valid_for_secs` (default 60).
//! The base is `input + output + time`, topped up to `minimum`.
//!
//! Surge (all in permille, 1000 = 1×):
//!
//! ```text
//! multiplier = 1000
//!            + queue_depth * surge_per_queued_job_permille
//!            + surge_at_full_load_permille * load_permille / 1000
//! multiplier = min(multiplier, max_multiplier_permille)
//! price      = ceil(base * multiplier / 1000)
//! ```
//!
//! `surge_per_queued_job_permille` and `surge_at_full_load_permille` default
//! to 0 (no surge); `max_multiplier_permille` defaults to 3000 (3×) and must
//! be at least 1000, so the multiplier never drops below 1×. The load term is
//! kept exact (no intermediate rounding, wide integers); only the final
//! price is rounded, up.
//!
//! The breakdown lists `input`, `output`, `time`, `minimum` (the top-up to the
//! minimum charge) and `surge` (what the multiplier added), and always sums to
//! the price. The quote is a pure, integer-only function of the request and
//! the config; overflow is an error, never a wrap.

use infernet_plugin_api::{config, export_pricing, Error, Pricing, Quote, QuoteRequest, RateCard};

/// The pricing policy; it keeps no state between quotes.
struct SurgePricing;

/// The surge settings read from the plugin's config table (the base price
/// is the SDK's [`RateCard`]).
struct Surge {
    per_queued_job_permille: u64,
    at_full_load_permille: u64,
    max_multiplier_permille: u64,
}

/// 1× in permille.
const ONE_X: u64 = 1000;

impl Surge {
    fn from_config() -> Result<Self, Error> {
        let max_multiplier_permille = config::parse("max_multiplier_permille")?.unwrap_or(3000);
        if max_multiplier_permille < ONE_X {
            return Err(Error::invalid(format!(
                "config key `max_multiplier_permille` is {max_multiplier_permille}, \
                 it must be at least 1000 (1×): surge never lowers a price"
            )));
        }
        Ok(Surge {
            per_queued_job_permille: config::parse("surge_per_queued_job_permille")?.unwrap_or(0),
            at_full_load_permille: config::parse("surge_at_full_load_permille")?.unwrap_or(0),
            max_multiplier_permille,
        })
    }

    /// The capped multiplier in parts per million (1_000_000 = 1×), so the
    /// load term `surge_at_full_load_permille * load_permille / 1000` needs
    /// no rounding. Computed in u128, where none of the terms can overflow
    /// (each is below 2^107), so the cap sees the exact value.
    fn multiplier_ppm(&self, request: &QuoteRequest) -> u128 {
        let max_ppm = u128::from(self.max_multiplier_permille) * 1000;
        let queue_ppm =
            u128::from(request.queue_depth) * u128::from(self.per_queued_job_permille) * 1000;
        let load_ppm = u128::from(self.at_full_load_permille) * u128::from(request.load_permille);
        (u128::from(ONE_X) * 1000 + queue_ppm + load_ppm).min(max_ppm)
    }
}

impl Pricing for SurgePricing {
    fn new() -> Self {
        SurgePricing
    }

    fn quote(&mut self, request: QuoteRequest) -> Result<Quote, Error> {
        let card = RateCard::from_config()?;
        let surge = Surge::from_config()?;
        let base = card.charge(&request)?;

        // ceil(base * multiplier_ppm / 1_000_000); the product can exceed
        // u128 only with an absurd cap, and the price must fit in u64.
        let multiplier_ppm = surge.multiplier_ppm(&request);
        let total = u128::from(base.total)
            .checked_mul(multiplier_ppm)
            .map(|product| product.div_ceil(1_000_000))
            .and_then(|total| u64::try_from(total).ok())
            .ok_or_else(|| {
                Error::invalid(format!(
                    "price overflow applying the surge multiplier ({}‰) to a base of {}",
                    multiplier_ppm / 1000,
                    base.total
                ))
            })?;
        // The multiplier is at least 1×, so the surge is never negative and
        // input + output + time + minimum + surge == total.
        let mut breakdown = base.breakdown();
        breakdown.push(("surge".to_string(), total - base.total));
        Ok(card.quote(total, breakdown))
    }
}

export_pricing!(SurgePricing);
