//! A job's verification policy, as the SDK, the CLI (`--verify`) and the
//! config's `[verify] policy` spell it.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// Most replicas one job may ask for.
pub const MAX_REPLICAS: u32 = 8;

/// How a client checks a job's result.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum VerifyPolicy {
    /// Trust the provider's signed result.
    #[default]
    None,
    /// Run the job on `k` different providers and compare; a mismatch is
    /// disputed (bisection over the traces, a referee rules).
    Replicate(u32),
    /// With probability `p`, run it on a second provider too and compare.
    SpotCheck(f64),
    /// A zk proof in this system (`groth16`).
    Proof(String),
}

impl VerifyPolicy {
    /// Providers the job runs on when it is checked (`spot-check`: when
    /// its draw comes up).
    pub fn replicas(&self) -> u32 {
        match self {
            VerifyPolicy::Replicate(k) => *k,
            VerifyPolicy::SpotCheck(_) => 2,
            _ => 1,
        }
    }
}

impl fmt::Display for VerifyPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyPolicy::None => f.write_str("none"),
            VerifyPolicy::Replicate(k) => write!(f, "replicate({k})"),
            VerifyPolicy::SpotCheck(p) => write!(f, "spot-check({p})"),
            VerifyPolicy::Proof(s) => write!(f, "proof({s})"),
        }
    }
}

impl FromStr for VerifyPolicy {
    type Err = String;

    /// `none`, `replicate(K)`, `spot-check(P)`, `proof` or `proof(SYSTEM)`
    /// (`replicate:K` and `spot-check:P` too).
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (name, arg) = match s.split_once(['(', ':']) {
            Some((n, rest)) => (n.trim(), Some(rest.trim().trim_end_matches(')').trim())),
            None => (s, None),
        };
        let usage = "expected `none`, `replicate(K)` with 2 <= K <= 8, `spot-check(P)` with 0 < P <= 1, or `proof(groth16)` / `proof(groth16-baked)`";
        match (name, arg) {
            ("none", None) => Ok(VerifyPolicy::None),
            ("replicate", Some(k)) => match k.parse::<u32>() {
                Ok(k) if (2..=MAX_REPLICAS).contains(&k) => Ok(VerifyPolicy::Replicate(k)),
                _ => Err(format!(
                    "`{s}`: the replica count must be 2 to {MAX_REPLICAS}; {usage}"
                )),
            },
            ("spot-check", Some(p)) => match p.parse::<f64>() {
                Ok(p) if p > 0.0 && p <= 1.0 => Ok(VerifyPolicy::SpotCheck(p)),
                _ => Err(format!("`{s}`: the probability must be in (0, 1]; {usage}")),
            },
            ("proof", None) => Ok(VerifyPolicy::Proof("groth16".into())),
            ("proof", Some(sys)) if super::PROOF_SYSTEMS.contains(&sys) => {
                Ok(VerifyPolicy::Proof(sys.into()))
            }
            _ => Err(format!("unknown verification policy `{s}`: {usage}")),
        }
    }
}

impl Serialize for VerifyPolicy {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for VerifyPolicy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_and_print_back() {
        for (text, p) in [
            ("none", VerifyPolicy::None),
            ("replicate(2)", VerifyPolicy::Replicate(2)),
            ("replicate:3", VerifyPolicy::Replicate(3)),
            ("spot-check(0.1)", VerifyPolicy::SpotCheck(0.1)),
            ("proof", VerifyPolicy::Proof("groth16".into())),
            (
                "proof(groth16-baked)",
                VerifyPolicy::Proof("groth16-baked".into()),
            ),
        ] {
            let parsed: VerifyPolicy = text.parse().unwrap();
            assert_eq!(parsed, p, "{text}");
            assert_eq!(parsed.to_string().parse::<VerifyPolicy>().unwrap(), p);
        }
        for bad in [
            "replicate(1)",
            "replicate(9)",
            "spot-check(0)",
            "spot-check(1.5)",
            "proof(snark)",
            "trust-me",
        ] {
            let e = bad.parse::<VerifyPolicy>().unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
    }
}
