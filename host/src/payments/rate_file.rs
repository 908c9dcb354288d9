//! A rate source read from a file that something else keeps fresh (a cron
//! job pulling a price feed, an operator): a JSON object of micro-USD per
//! whole unit, `{"ETH": 3000000000, "BTC": 60000000000}`. The file is read
//! at every conversion (one small read per job, so a new price applies to
//! the next job, whatever the filesystem's timestamp resolution), and
//! refused once it is older than the configured maximum age, so a dead
//! feed stops conversions instead of paying at yesterday's price.

use super::currency::{currency, MoneyError, RateSource};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Rates from a JSON file; see the module docs.
#[derive(Debug)]
pub struct FileRates {
    path: PathBuf,
    name: String,
    max_age: Option<Duration>,
}

impl FileRates {
    /// Opens the file and reads it once, so a missing or malformed file is
    /// an error at start; `max_age` (`None`: no limit) is checked on every
    /// conversion.
    pub fn open(path: &Path, max_age: Option<Duration>) -> Result<FileRates, MoneyError> {
        let rates = FileRates {
            path: path.to_owned(),
            name: format!("file {}", path.display()),
            max_age,
        };
        rates.table()?;
        Ok(rates)
    }

    fn error(&self, message: impl Into<String>) -> MoneyError {
        MoneyError::RateSource {
            source_name: self.name.clone(),
            message: message.into(),
        }
    }

    /// The file's table, read now.
    fn table(&self) -> Result<BTreeMap<String, u128>, MoneyError> {
        let text = std::fs::read_to_string(&self.path).map_err(|e| {
            self.error(format!(
                "cannot read it ({e}); write the rates there or set [client] rate_source = \"fixed\""
            ))
        })?;
        self.parse(&text)
    }

    fn parse(&self, text: &str) -> Result<BTreeMap<String, u128>, MoneyError> {
        let raw: BTreeMap<String, serde_json::Value> = serde_json::from_str(text).map_err(|e| {
            self.error(format!(
                "not a JSON object of micro-USD per whole unit ({e}); expected e.g. {{\"ETH\": 3000000000}}"
            ))
        })?;
        let mut table = BTreeMap::new();
        for (code, value) in raw {
            currency(&code).map_err(|e| self.error(e.to_string()))?;
            let rate = value.as_u64().filter(|r| *r > 0).ok_or_else(|| {
                self.error(format!(
                    "the rate of {code} is {value}; it must be a positive whole number of micro-USD"
                ))
            })?;
            table.insert(code, u128::from(rate));
        }
        Ok(table)
    }

    /// Refuses a file older than the maximum age.
    fn check_age(&self) -> Result<(), MoneyError> {
        let Some(max_age) = self.max_age else {
            return Ok(());
        };
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .map_err(|e| {
                self.error(format!(
                    "cannot read it ({e}); write the rates there or set [client] rate_source = \"fixed\""
                ))
            })?;
        let age = SystemTime::now()
            .duration_since(modified)
            .unwrap_or(Duration::ZERO);
        if age > max_age {
            return Err(self.error(format!(
                "last written {} s ago, older than [client] rates_max_age_secs = {}: \
                 refresh the file (or raise the limit)",
                age.as_secs(),
                max_age.as_secs()
            )));
        }
        Ok(())
    }
}

impl RateSource for FileRates {
    fn name(&self) -> &str {
        &self.name
    }

    fn micro_usd_per_unit(&self, code: &str) -> Result<u128, MoneyError> {
        self.check_age()?;
        self.table()?
            .get(code)
            .copied()
            .ok_or_else(|| MoneyError::NoRate {
                source_name: self.name.clone(),
                code: code.into(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payments::convert_usd;
    use std::fs::{File, FileTimes};

    fn write(path: &Path, text: &str, modified: SystemTime) {
        std::fs::write(path, text).unwrap();
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_times(FileTimes::new().set_modified(modified))
            .unwrap();
    }

    #[test]
    fn converts_at_the_files_rate_and_follows_its_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rates.json");
        let t0 = SystemTime::now() - Duration::from_secs(10);
        write(&path, r#"{"ETH": 2500000000, "USDC_POL": 1000000}"#, t0);
        let rates = FileRates::open(&path, Some(Duration::from_secs(60))).unwrap();
        // 1 USD at 2,500 USD/ETH = 0.0004 ETH = 4e14 wei
        let a = convert_usd(1_000_000, "ETH", &rates).unwrap();
        assert_eq!(a.minor, 400_000_000_000_000);
        assert_eq!(
            convert_usd(1_000_000, "USDC_POL", &rates).unwrap().minor,
            1_000_000
        );
        let err = convert_usd(1_000_000, "BTC", &rates)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no USD rate for `BTC`"), "{err}");

        // A new price is picked up without a restart.
        write(&path, r#"{"ETH": 4000000000}"#, t0 + Duration::from_secs(5));
        assert_eq!(
            convert_usd(1_000_000, "ETH", &rates).unwrap().minor,
            250_000_000_000_000
        );
    }

    #[test]
    fn a_stale_file_stops_conversions_until_refreshed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rates.json");
        let old = SystemTime::now() - Duration::from_secs(7200);
        write(&path, r#"{"ETH": 3000000000}"#, old);
        let rates = FileRates::open(&path, Some(Duration::from_secs(3600))).unwrap();
        let err = convert_usd(1_000_000, "ETH", &rates)
            .unwrap_err()
            .to_string();
        assert!(err.contains("rates_max_age_secs = 3600"), "{err}");
        assert!(err.contains("refresh the file"), "{err}");
        // without a limit the same file converts
        let unlimited = FileRates::open(&path, None).unwrap();
        assert!(convert_usd(1_000_000, "ETH", &unlimited).is_ok());
        // refreshed: converts again
        write(&path, r#"{"ETH": 3000000000}"#, SystemTime::now());
        assert!(convert_usd(1_000_000, "ETH", &rates).is_ok());
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rates.json");
        let missing = FileRates::open(&path, None).unwrap_err().to_string();
        assert!(missing.contains("rates.json"), "{missing}");
        assert!(missing.contains("rate_source = \"fixed\""), "{missing}");
        let now = SystemTime::now();
        for (text, needle) in [
            ("[1, 2]", "not a JSON object"),
            (r#"{"DOGE": 1}"#, "unknown currency `DOGE`"),
            (r#"{"ETH": 0}"#, "the rate of ETH is 0"),
            (r#"{"ETH": -3}"#, "the rate of ETH is -3"),
            (r#"{"ETH": 2500.5}"#, "the rate of ETH is 2500.5"),
            (r#"{"ETH": "3000"}"#, "positive whole number"),
        ] {
            write(&path, text, now);
            let err = FileRates::open(&path, None).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }

        // A file broken after start: conversions fail, naming the file,
        // until it is fixed; nothing is converted at a half-written price.
        write(
            &path,
            r#"{"ETH": 3000000000}"#,
            now - Duration::from_secs(5),
        );
        let rates = FileRates::open(&path, None).unwrap();
        write(&path, r#"{"ETH": 30"#, now);
        let err = convert_usd(1_000_000, "ETH", &rates)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a JSON object"), "{err}");
        write(
            &path,
            r#"{"ETH": 3000000000}"#,
            now + Duration::from_secs(1),
        );
        assert!(convert_usd(1_000_000, "ETH", &rates).is_ok());
    }
}
