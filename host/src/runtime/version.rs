//! Which `infernet:plugin` version a component targets, and which of the
//! host's contract versions serves it.
//!
//! The version is read from the component's own imports and exports (names
//! like `infernet:plugin/tensor@0.1.0`), not from its manifest, so a lying
//! manifest cannot smuggle in an incompatible component. The host
//! implements several contract versions (one host module each, in
//! `worlds`); a component is served by the one that satisfies its version
//! under a caret requirement (same major, or same minor while 0.x) and is
//! not older than it.

use super::manifest::PluginKind;
use semver::{Version, VersionReq};
use wasmtime::component::Component;
use wasmtime::Engine;

/// WIT package name of the contract.
pub const WIT_PACKAGE: &str = "infernet:plugin";

/// The contract versions this host implements, oldest first. Each has a
/// module in `worlds` (`since_v0_1_0`, `since_v0_2_0`, which serves the
/// whole 0.2 line: 0.2.1 to 0.2.4 only added, see ARCHITECTURE).
pub fn contracts() -> Vec<Version> {
    vec![Version::new(0, 1, 0), Version::new(0, 2, 4)]
}

/// The newest contract version: what `infernet-plugin-api` builds against.
pub fn host_wit_version() -> Version {
    Version::new(0, 2, 4)
}

/// The one version of `accepted` that serves every contract version a
/// component names (normally it names exactly one); `None` when none does,
/// or when its names would need two different host versions.
pub fn serving(accepted: &[Version], component: &[Version]) -> Option<Version> {
    let mut found: Option<&Version> = None;
    for v in component {
        let host = accepted.iter().find(|h| compatible(h, v))?;
        if *found.get_or_insert(host) != host {
            return None;
        }
    }
    found.cloned()
}

/// `0.1.0, 0.2.4`.
pub fn list(versions: &[Version]) -> String {
    versions
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a component's type says about it.
#[derive(Debug, Clone)]
pub struct ComponentFacts {
    /// Distinct `infernet:plugin` versions it names (normally exactly one).
    pub wit_versions: Vec<Version>,
    /// The world it implements, from its exports.
    pub kind: Option<PluginKind>,
    /// Import names, in order.
    pub imports: Vec<String>,
    /// Export names, in order.
    pub exports: Vec<String>,
}

/// Splits `infernet:plugin/iface@1.2.3` into (`iface`, version).
pub fn parse_contract_name(name: &str) -> Option<(&str, Option<Version>)> {
    let rest = name.strip_prefix(WIT_PACKAGE)?.strip_prefix('/')?;
    match rest.split_once('@') {
        Some((iface, v)) => Some((iface, Version::parse(v).ok())),
        None => Some((rest, None)),
    }
}

/// Reads imports, exports, contract versions and kind from a component's type.
pub fn inspect(engine: &Engine, component: &Component) -> ComponentFacts {
    let ty = component.component_type();
    let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
    let exports: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    let mut wit_versions = Vec::new();
    let mut kind = None;
    for name in imports.iter().chain(exports.iter()) {
        if let Some((iface, Some(v))) = parse_contract_name(name) {
            if !wit_versions.contains(&v) {
                wit_versions.push(v);
            }
            let _ = iface;
        }
    }
    for name in &exports {
        if let Some((iface, _)) = parse_contract_name(name) {
            kind = match iface {
                "backend-api" => Some(PluginKind::Backend),
                "pricing-api" => Some(PluginKind::Pricing),
                "payment-api" => Some(PluginKind::Payment),
                _ => kind,
            };
        }
    }
    ComponentFacts {
        wit_versions,
        kind,
        imports,
        exports,
    }
}

/// True when a host implementing `host` can run a component built for `component`.
pub fn compatible(host: &Version, component: &Version) -> bool {
    match VersionReq::parse(&format!("^{component}")) {
        Ok(req) => req.matches(host),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caret_compatibility() {
        let v = |s: &str| Version::parse(s).unwrap();
        assert!(compatible(&v("0.1.0"), &v("0.1.0")));
        assert!(
            compatible(&v("0.1.3"), &v("0.1.0")),
            "older patch of 0.1 loads"
        );
        assert!(
            !compatible(&v("0.1.0"), &v("0.1.3")),
            "newer than host is refused"
        );
        assert!(!compatible(&v("0.1.0"), &v("0.2.0")));
        assert!(!compatible(&v("0.1.0"), &v("1.0.0")));
        assert!(
            compatible(&v("1.4.0"), &v("1.2.0")),
            "older minor of 1.x loads"
        );
        assert!(!compatible(&v("2.0.0"), &v("1.2.0")));
    }

    #[test]
    fn each_component_version_is_served_by_one_host_version() {
        let v = |s: &str| Version::parse(s).unwrap();
        let host = contracts();
        assert_eq!(serving(&host, &[v("0.1.0")]), Some(v("0.1.0")));
        assert_eq!(
            serving(&host, &[v("0.2.0")]),
            Some(v("0.2.4")),
            "0.2.1 to 0.2.4 only added"
        );
        assert_eq!(serving(&host, &[v("0.2.1")]), Some(v("0.2.4")));
        assert_eq!(serving(&host, &[v("0.2.2")]), Some(v("0.2.4")));
        assert_eq!(serving(&host, &[v("0.2.3")]), Some(v("0.2.4")));
        assert_eq!(serving(&host, &[v("0.2.4")]), Some(v("0.2.4")));
        assert_eq!(serving(&host, &[v("0.2.5")]), None, "newer than the host");
        assert_eq!(serving(&host, &[v("0.3.0")]), None);
        assert_eq!(
            serving(&host, &[v("0.1.1")]),
            None,
            "newer than the frozen 0.1.0"
        );
        assert_eq!(
            serving(&host, &[v("0.1.0"), v("0.2.0")]),
            None,
            "one component cannot mix contracts"
        );
        assert_eq!(serving(&[v("0.1.0")], &[v("0.2.0")]), None);
        assert_eq!(list(&host), "0.1.0, 0.2.4");
    }

    #[test]
    fn parses_names() {
        let (iface, v) = parse_contract_name("infernet:plugin/tensor@0.1.0").unwrap();
        assert_eq!(iface, "tensor");
        assert_eq!(v.unwrap(), Version::new(0, 1, 0));
        assert!(parse_contract_name("wasi:io/streams@0.2.0").is_none());
    }
}
