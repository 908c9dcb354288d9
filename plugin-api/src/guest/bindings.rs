//! Raw wit-bindgen output, one module per world. Plugin authors should not
//! need anything in here: the crate root re-exports what they use.

/// The `backend` world: tensor kernels, models, log and progress imports;
/// (0.2.3) config and `wasi:http`. The other worlds reuse its types.
pub mod backend {
    wit_bindgen::generate!({
        world: "backend",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "export_backend_world",
        default_bindings_module: "::infernet_plugin_api::bindings::backend",
        generate_all,
    });
}

/// The `pricing` world: log and config imports, `pricing-api` export.
pub mod pricing {
    wit_bindgen::generate!({
        world: "pricing",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "export_pricing_world",
        default_bindings_module: "::infernet_plugin_api::bindings::pricing",
        with: {
            "infernet:plugin/types@0.2.4": crate::bindings::backend::infernet::plugin::types,
            "infernet:plugin/log@0.2.4": crate::bindings::backend::infernet::plugin::log,
            "infernet:plugin/config@0.2.4": crate::bindings::backend::infernet::plugin::config,
        },
        generate_all,
    });
}

/// The `payment` world: wasi:http, config, kv and log imports, `payment-api` export.
pub mod payment {
    wit_bindgen::generate!({
        world: "payment",
        path: "wit",
        pub_export_macro: true,
        export_macro_name: "export_payment_world",
        default_bindings_module: "::infernet_plugin_api::bindings::payment",
        with: {
            "infernet:plugin/types@0.2.4": crate::bindings::backend::infernet::plugin::types,
            "infernet:plugin/log@0.2.4": crate::bindings::backend::infernet::plugin::log,
            "infernet:plugin/config@0.2.4": crate::bindings::backend::infernet::plugin::config,
            "wasi:http/types@0.2.12": crate::bindings::backend::wasi::http::types,
            "wasi:http/outgoing-handler@0.2.12": crate::bindings::backend::wasi::http::outgoing_handler,
            "wasi:io/error@0.2.12": crate::bindings::backend::wasi::io::error,
            "wasi:io/poll@0.2.12": crate::bindings::backend::wasi::io::poll,
            "wasi:io/streams@0.2.12": crate::bindings::backend::wasi::io::streams,
            "wasi:clocks/monotonic-clock@0.2.12": crate::bindings::backend::wasi::clocks::monotonic_clock,
        },
        generate_all,
    });
}
