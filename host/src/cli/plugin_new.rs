//! `infernet plugin new <name> --kind backend|pricing|payment`: a plugin
//! crate that builds for wasm32-wasip2 and loads as it comes (templates in
//! `templates/`), with the commands to build, pack and configure it.

use anyhow::{bail, Context, Result};
use infernet_host::runtime::manifest::PluginKind;
use std::path::{Path, PathBuf};

const BACKEND: &str = include_str!("templates/backend.rs.tmpl");
const PRICING: &str = include_str!("templates/pricing.rs.tmpl");
const PAYMENT: &str = include_str!("templates/payment.rs.tmpl");

/// Checks a plugin name: lower-case letters, digits and `-`, starting with
/// a letter, at most 64 bytes (it becomes a crate and a package name).
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !ok {
        bail!("plugin name `{name}`: use lower-case letters, digits and `-`, starting with a letter (at most 64), e.g. `my-backend`");
    }
    Ok(())
}

/// Where the crate's `infernet-plugin-api` dependency comes from: `sdk`,
/// else this checkout's `plugin-api/` when the binary was built from one,
/// else the registry version.
fn sdk_dependency(sdk: Option<&Path>) -> Result<String> {
    let path = match sdk {
        Some(p) => Some(
            std::fs::canonicalize(p)
                .with_context(|| format!("--sdk {}: no such directory", p.display()))?,
        ),
        None => {
            let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-api");
            std::fs::canonicalize(built_from).ok()
        }
    };
    Ok(match path {
        Some(p) if p.join("Cargo.toml").exists() => {
            format!(
                "infernet-plugin-api = {{ path = {:?} }}",
                p.display().to_string()
            )
        }
        Some(p) => bail!(
            "{} has no Cargo.toml: point --sdk at the plugin-api crate",
            p.display()
        ),
        None => format!(
            "infernet-plugin-api = \"{}\"",
            infernet_host::runtime::version::host_wit_version()
        ),
    })
}

/// Writes the crate to `dir/name` and prints what to do next.
pub fn new_plugin(name: &str, kind: PluginKind, dir: &Path, sdk: Option<&Path>) -> Result<PathBuf> {
    check_name(name)?;
    let root = dir.join(name);
    if root.exists() {
        bail!(
            "{} already exists; pick another name or --dir",
            root.display()
        );
    }
    let (template, kind_name) = match kind {
        PluginKind::Backend => (BACKEND, "backend"),
        PluginKind::Pricing => (PRICING, "pricing"),
        PluginKind::Payment => (PAYMENT, "payment"),
    };
    let manifest = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
{sdk}

# Its own workspace, wherever it is put.
[workspace]

[profile.release]
opt-level = 3
lto = true
codegen-units = 1
strip = true
"#,
        sdk = sdk_dependency(sdk)?
    );
    let crate_name = name.replace('-', "_");
    let readme = format!(
        "# {name}\n\nAn Infernet {kind_name} plugin.\n\n```sh\nrustup target add wasm32-wasip2\ncargo build --release --target wasm32-wasip2\ninfernet plugin pack target/wasm32-wasip2/release/{crate_name}.wasm --out dist/{name} --name {name}\ninfernet plugin inspect dist/{name}\n```\n\nThen name `dist/{name}` in the node config (`[[backend]] plugin = ...`,\n`[pricing] plugin = ...` or `[[payment]] plugin = ...`). The guide is the\nSDK's README (`plugin-api/README.md`).\n"
    );
    std::fs::create_dir_all(root.join("src"))
        .with_context(|| format!("creating {}", root.display()))?;
    std::fs::write(root.join("Cargo.toml"), manifest)?;
    std::fs::write(root.join("src/lib.rs"), template.replace("{{name}}", name))?;
    std::fs::write(root.join("README.md"), readme)?;
    std::fs::write(root.join(".gitignore"), "/target\n/dist\n")?;
    Ok(root)
}
