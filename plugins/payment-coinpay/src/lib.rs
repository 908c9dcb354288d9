//! Payment adapter (skeleton, being written).
use infernet_plugin_api::{export_payment, CurrencyInfo, Error, Escrow, EscrowRequest, Payment};
struct Adapter;
impl Payment for Adapter {
    fn new() -> Self { Adapter }
    fn currencies(&mut self) -> Vec<CurrencyInfo> { Vec::new() }
    fn create_escrow(&mut self, _r: EscrowRequest) -> Result<Escrow, Error> { Err(Error::unsupported("not yet")) }
    fn status(&mut self, _id: String) -> Result<Escrow, Error> { Err(Error::unsupported("not yet")) }
    fn release(&mut self, _id: String) -> Result<Escrow, Error> { Err(Error::unsupported("not yet")) }
    fn refund(&mut self, _id: String) -> Result<Escrow, Error> { Err(Error::unsupported("not yet")) }
    fn dispute(&mut self, _id: String, _reason: String) -> Result<Escrow, Error> { Err(Error::unsupported("not yet")) }
}
export_payment!(Adapter);
