//! Surge pricing plugin (skeleton, being written).
use infernet_plugin_api::{export_pricing, Error, Pricing, Quote, QuoteRequest};
struct Surge;
impl Pricing for Surge {
    fn new() -> Self { Surge }
    fn quote(&mut self, _request: QuoteRequest) -> Result<Quote, Error> { Err(Error::unsupported("not yet")) }
}
export_pricing!(Surge);
