//! The traits a plugin implements and the macros that export them.
//!
//! Each macro keeps one instance of the plugin type per component instance
//! (created on first use with `new()`), so a backend can cache what it loaded
//! between jobs. The host runs one call at a time per instance.

use crate::{
    BackendInfo, CurrencyInfo, Error, Escrow, EscrowRequest, JobRequest, JobResult, Quote,
    QuoteRequest,
};

/// An execution backend: runs jobs through host tensor kernels.
pub trait Backend: 'static {
    /// Creates the plugin instance (called once per component instance).
    fn new() -> Self
    where
        Self: Sized;
    /// Name, version, tasks and architectures this backend serves.
    fn describe(&self) -> BackendInfo;
    /// Runs one job. Stream partial output with [`crate::progress::emit_token`].
    fn execute(&mut self, job: JobRequest) -> Result<JobResult, Error>;
}

/// A pricing policy. Must be deterministic: same request and config, same quote.
pub trait Pricing: 'static {
    /// Creates the plugin instance.
    fn new() -> Self
    where
        Self: Sized;
    /// Prices a job; read settings with [`crate::config`].
    fn quote(&mut self, request: QuoteRequest) -> Result<Quote, Error>;
}

/// A payment adapter holding money in escrow.
pub trait Payment: 'static {
    /// Creates the plugin instance.
    fn new() -> Self
    where
        Self: Sized;
    /// Currencies this adapter can move.
    fn currencies(&mut self) -> Vec<CurrencyInfo>;
    /// Creates an escrow for a job.
    fn create_escrow(&mut self, request: EscrowRequest) -> Result<Escrow, Error>;
    /// The escrow's current state, including an escrow this adapter did
    /// not create (a provider confirming its client's escrow): read it from
    /// the payment service and report its `beneficiary` exactly as the
    /// service records it. The host compares that with its own account
    /// before it runs paid work; never fill it in from your own config.
    fn status(&mut self, id: String) -> Result<Escrow, Error>;
    /// Releases funds to the beneficiary (idempotent).
    fn release(&mut self, id: String) -> Result<Escrow, Error>;
    /// Refunds the depositor (idempotent).
    fn refund(&mut self, id: String) -> Result<Escrow, Error>;
    /// Opens a dispute.
    fn dispute(&mut self, id: String, reason: String) -> Result<Escrow, Error>;
    /// Verifies and applies a webhook from the payment provider.
    fn handle_webhook(
        &mut self,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> Result<Escrow, Error> {
        let _ = (headers, body);
        Err(Error::unsupported("this adapter takes no webhooks"))
    }
}

/// Runs `f` on the lazily created plugin instance in `slot`.
#[doc(hidden)]
pub fn with_instance<T, R>(
    slot: &'static std::thread::LocalKey<core::cell::RefCell<Option<T>>>,
    new: fn() -> T,
    f: impl FnOnce(&mut T) -> R,
) -> R {
    slot.with(|cell| {
        let mut guard = cell.borrow_mut();
        let instance = guard.get_or_insert_with(new);
        f(instance)
    })
}

/// Exports a [`Backend`] implementation as the component's `backend` world.
#[macro_export]
macro_rules! export_backend {
    ($ty:ty) => {
        const _: () = {
            ::std::thread_local! {
                static INSTANCE: ::core::cell::RefCell<Option<$ty>> = const { ::core::cell::RefCell::new(None) };
            }
            struct Exported;
            impl $crate::bindings::backend::exports::infernet::plugin::backend_api::Guest for Exported {
                fn describe() -> $crate::BackendInfo {
                    $crate::__with_instance(&INSTANCE, <$ty as $crate::Backend>::new, |b| $crate::Backend::describe(b))
                }
                fn execute(job: $crate::JobRequest) -> ::core::result::Result<$crate::JobResult, $crate::Error> {
                    $crate::__with_instance(&INSTANCE, <$ty as $crate::Backend>::new, |b| $crate::Backend::execute(b, job))
                }
            }
            $crate::bindings::backend::export_backend_world!(Exported with_types_in $crate::bindings::backend);
        };
    };
}

/// Exports a [`Pricing`] implementation as the component's `pricing` world.
#[macro_export]
macro_rules! export_pricing {
    ($ty:ty) => {
        const _: () = {
            ::std::thread_local! {
                static INSTANCE: ::core::cell::RefCell<Option<$ty>> = const { ::core::cell::RefCell::new(None) };
            }
            struct Exported;
            impl $crate::bindings::pricing::exports::infernet::plugin::pricing_api::Guest for Exported {
                fn price(request: $crate::QuoteRequest) -> ::core::result::Result<$crate::Quote, $crate::Error> {
                    $crate::__with_instance(&INSTANCE, <$ty as $crate::Pricing>::new, |p| $crate::Pricing::quote(p, request))
                }
            }
            $crate::bindings::pricing::export_pricing_world!(Exported with_types_in $crate::bindings::pricing);
        };
    };
}

/// Exports a [`Payment`] implementation as the component's `payment` world.
#[macro_export]
macro_rules! export_payment {
    ($ty:ty) => {
        const _: () = {
            ::std::thread_local! {
                static INSTANCE: ::core::cell::RefCell<Option<$ty>> = const { ::core::cell::RefCell::new(None) };
            }
            struct Exported;
            impl $crate::bindings::payment::exports::infernet::plugin::payment_api::Guest for Exported {
                fn currencies() -> Vec<$crate::CurrencyInfo> {
                    $crate::__with_instance(&INSTANCE, <$ty as $crate::Payment>::new, |p| $crate::Payment::currencies(p))
                }
                fn create_escrow(request: $crate::EscrowRequest) -> ::core::result::Result<$crate::Escrow, $crate::Error> {
                    $crate::__with_instance(&INSTANCE, <$ty as $crate::Payment>::new, |p| $crate::Payment::create_escrow(p, request))
                }
                fn status(id: String) -> ::core::result::Result<$crate::Escrow, $crate::Error> {
                    $crate::__with_instance(&INSTANCE, <$ty as $crate::Payment>::new, |p| $crate::Payment::status(p, id))
                }
                fn release(id: String) -> ::core::result::Result<$crate::Escrow, $crate::Error> {
                    $crate::__with_instance(&INSTANCE, <$ty as $crate::Payment>::new, |p| $crate::Payment::release(p, id))
                }
                fn refund(id: String) -> ::core::result::Result<$crate::Escrow, $crate::Error> {
                    $crate::__with_instance(&INSTANCE, <$ty as $crate::Payment>::new, |p| $crate::Payment::refund(p, id))
                }
                fn dispute(id: String, reason: String) -> ::core::result::Result<$crate::Escrow, $crate::Error> {
                    $crate::__with_instance(&INSTANCE, <$ty as $crate::Payment>::new, |p| $crate::Payment::dispute(p, id, reason))
                }
                fn handle_webhook(headers: Vec<(String, String)>, body: Vec<u8>) -> ::core::result::Result<$crate::Escrow, $crate::Error> {
                    $crate::__with_instance(&INSTANCE, <$ty as $crate::Payment>::new, |p| $crate::Payment::handle_webhook(p, headers, body))
                }
            }
            $crate::bindings::payment::export_payment_world!(Exported with_types_in $crate::bindings::payment);
        };
    };
}
