//! `infernet plugin ...`: package, sign, verify and inspect plugin components.

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use infernet_host::runtime::manifest::{
    generate_key, parse_secret_key, sha256_hex, Manifest, Package, PluginKind, MANIFEST_FILE,
};
use infernet_host::runtime::{version, Runtime};
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Make a new plugin crate that builds for wasm32-wasip2 and loads as it
    /// comes (a backend that echoes tokens, flat pricing, or a payment
    /// adapter skeleton), with a README saying how to build, pack and use it.
    New {
        /// The plugin's name (lower-case letters, digits, `-`).
        name: String,
        /// `backend`, `pricing` or `payment`.
        #[arg(long, value_parser = parse_kind, default_value = "backend")]
        kind: PluginKind,
        /// Directory to create `<name>/` in.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The plugin-api crate to depend on by path (default: the checkout
        /// this binary was built from, else the registry's version).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Generate an ed25519 publisher key pair (secret to FILE, public to FILE.pub).
    Keygen {
        /// Where to write the secret key (hex).
        #[arg(long)]
        out: PathBuf,
    },
    /// Make a package directory from a built component: copies the wasm and writes the manifest.
    Pack {
        /// The component (`target/wasm32-wasip2/release/*.wasm`).
        wasm: PathBuf,
        /// Output package directory.
        #[arg(long)]
        out: PathBuf,
        /// Plugin name (default: the output directory's name).
        #[arg(long)]
        name: Option<String>,
        /// Plugin version.
        #[arg(long, default_value = "0.1.0")]
        version: semver::Version,
        /// Sign with this secret key file.
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Sign a package's manifest with a publisher secret key.
    Sign {
        /// Package directory or manifest.
        package: PathBuf,
        /// Secret key file from `keygen`.
        #[arg(long)]
        key: PathBuf,
    },
    /// Check a package's hash and signature (against --publisher when given).
    Verify {
        /// Package directory or manifest.
        package: PathBuf,
        /// Hex public key the signature must be by.
        #[arg(long)]
        publisher: Option<String>,
    },
    /// Print name, version, kind/world, targeted WIT version and imports.
    Inspect {
        /// Package directory, manifest, or a bare `.wasm`.
        target: PathBuf,
    },
}

pub fn run(cmd: PluginCommand) -> Result<()> {
    match cmd {
        PluginCommand::Keygen { out } => {
            let key = generate_key();
            infernet_host::private::write_private(&out, hex::encode(key.to_bytes()).as_bytes())
                .with_context(|| format!("writing {}", out.display()))?;
            let public = hex::encode(key.verifying_key().to_bytes());
            let pub_path = PathBuf::from(format!("{}.pub", out.display()));
            std::fs::write(&pub_path, &public)?;
            println!("secret key: {}\npublic key: {public}\n(pin it in node.toml as publisher_key = \"{public}\")", out.display());
            Ok(())
        }
        PluginCommand::Pack {
            wasm,
            out,
            name,
            version,
            key,
        } => pack(&wasm, &out, name, version, key.as_deref()),
        PluginCommand::Sign { package, key } => {
            let (mut manifest, file) = Manifest::read(&package)?;
            let secret = read_key(&key)?;
            Package::open(&package, None)
                .context("refusing to sign a package whose wasm does not match its manifest")?;
            manifest.sign(&secret);
            manifest.write(&file)?;
            println!(
                "signed {} by {}",
                file.display(),
                hex::encode(secret.verifying_key().to_bytes())
            );
            Ok(())
        }
        PluginCommand::Verify { package, publisher } => {
            let p = Package::open(&package, publisher.as_deref())?;
            let signer = p
                .manifest
                .signature
                .as_ref()
                .map(|s| s.publisher.as_str())
                .unwrap_or("unsigned");
            println!(
                "ok: {} {} sha256 {} ({signer})",
                p.manifest.name, p.manifest.version, p.manifest.sha256
            );
            Ok(())
        }
        PluginCommand::Inspect { target } => inspect(&target),
        PluginCommand::New {
            name,
            kind,
            dir,
            sdk,
        } => {
            let root = super::plugin_new::new_plugin(&name, kind, &dir, sdk.as_deref())?;
            println!(
                "created {kind} plugin `{name}` in {}\nbuild:  cd {} && cargo build --release --target wasm32-wasip2\nthen see its README.md to pack it and name it in a node config",
                root.display(),
                root.display()
            );
            Ok(())
        }
    }
}

pub(crate) fn read_key(path: &Path) -> Result<ed25519_dalek::SigningKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading key {}", path.display()))?;
    parse_secret_key(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn scratch_runtime() -> Result<Runtime> {
    let dir = std::env::temp_dir().join("infernet-inspect-cache");
    Runtime::new(&dir)
}

fn pack(
    wasm: &Path,
    out: &Path,
    name: Option<String>,
    version: semver::Version,
    key: Option<&Path>,
) -> Result<()> {
    let bytes = std::fs::read(wasm).with_context(|| format!("reading {}", wasm.display()))?;
    let name = match name {
        Some(n) => n,
        None => out
            .file_name()
            .and_then(|n| n.to_str())
            .context("cannot derive a name from --out; pass --name")?
            .to_string(),
    };
    let compiling = super::progress::spinner(format!("compiling {name}"), false);
    let facts = scratch_runtime()?.inspect_bytes(&name, &bytes);
    compiling.finish_and_clear();
    let facts = facts?;
    let Some(kind) = facts.kind else {
        bail!(
            "{} exports none of the infernet plugin worlds (exports: {:?})",
            wasm.display(),
            facts.exports
        );
    };
    let Some(wit) = facts.wit_versions.first().cloned() else {
        bail!("{} names no infernet:plugin version", wasm.display());
    };
    std::fs::create_dir_all(out)?;
    let file_name = format!("{name}.wasm");
    std::fs::write(out.join(&file_name), &bytes)?;
    let mut manifest = Manifest {
        name,
        version,
        kind,
        wit,
        wasm: file_name,
        sha256: sha256_hex(&bytes),
        signature: None,
    };
    if let Some(key) = key {
        manifest.sign(&read_key(key)?);
    }
    manifest.write(&out.join(MANIFEST_FILE))?;
    println!("packed {} ({kind}) into {}", manifest.name, out.display());
    Ok(())
}

fn inspect(target: &Path) -> Result<()> {
    let (manifest, bytes, label) = if target.extension().is_some_and(|e| e == "wasm") {
        (
            None,
            std::fs::read(target).with_context(|| format!("reading {}", target.display()))?,
            target.display().to_string(),
        )
    } else {
        let p = Package::open(target, None)?;
        (
            Some(p.manifest.clone()),
            p.wasm,
            p.wasm_path.display().to_string(),
        )
    };
    let compiling = super::progress::spinner(format!("compiling {label}"), false);
    let facts = scratch_runtime()?.inspect_bytes(&label, &bytes);
    compiling.finish_and_clear();
    let facts = facts?;
    if let Some(m) = &manifest {
        println!("name:      {}", m.name);
        println!("version:   {}", m.version);
        println!("sha256:    {}", m.sha256);
        println!(
            "signed by: {}",
            m.signature
                .as_ref()
                .map(|s| s.publisher.as_str())
                .unwrap_or("(unsigned)")
        );
    } else {
        println!("file:      {label}");
        println!("sha256:    {}", sha256_hex(&bytes));
    }
    let kind = facts
        .kind
        .map(|k: PluginKind| format!("{k} (world infernet:plugin/{k})"))
        .unwrap_or_else(|| "unknown".into());
    println!("kind:      {kind}");
    let wit: Vec<String> = facts.wit_versions.iter().map(|v| v.to_string()).collect();
    let host = version::contracts();
    let served = match version::serving(&host, &facts.wit_versions) {
        Some(v) => format!("served by this host's @{v}"),
        None => format!(
            "INCOMPATIBLE: this host implements @{}",
            version::list(&host)
        ),
    };
    println!("wit:       infernet:plugin@{} ({served})", wit.join(", "));
    println!("imports:");
    for i in &facts.imports {
        println!("  {i}");
    }
    println!("exports:");
    for e in &facts.exports {
        println!("  {e}");
    }
    Ok(())
}

fn parse_kind(s: &str) -> Result<PluginKind, String> {
    match s {
        "backend" => Ok(PluginKind::Backend),
        "pricing" => Ok(PluginKind::Pricing),
        "payment" => Ok(PluginKind::Payment),
        other => Err(format!("`{other}`: use backend, pricing or payment")),
    }
}
