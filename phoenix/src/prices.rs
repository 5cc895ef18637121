//! The `[prices]` table of a `phoenix.toml`: what servers cost per hour by
//! flavor, so that `phoenix status` and `phoenix reap` can say what
//! rollback capacity costs and what reaping saves.
//!
//! ```toml
//! [prices]
//! currency = "USD"
//! stopped = 0.005                 # per hour, a stopped server without a price of its own
//!
//! [prices.flavors]
//! "general1-2" = 0.08             # per hour while running
//! "m5.large" = { running = 0.096, stopped = 0.012 }
//! ```

use std::collections::BTreeMap;

use phoenix_core::cost::{FlavorPrice, PriceTable};
use serde::Deserialize;

/// The `[prices]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PricesSection {
    /// The currency every price is in (`USD`, `EUR`, …).
    pub currency: String,
    /// Per hour for a stopped server whose flavor names no stopped price
    /// (default 0).
    #[serde(default)]
    pub stopped: f64,
    /// Flavor → price per hour.
    #[serde(default)]
    pub flavors: BTreeMap<String, FlavorEntry>,
}

/// One flavor's price: a number (per hour while running) or a table with
/// `running` and optionally `stopped`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum FlavorEntry {
    /// Per hour while running.
    Running(f64),
    /// Both prices.
    Both {
        /// Per hour while running.
        running: f64,
        /// Per hour while stopped.
        #[serde(default)]
        stopped: Option<f64>,
    },
}

impl PricesSection {
    /// The price table for [`phoenix_core::cost`].
    pub fn table(&self) -> PriceTable {
        let mut t = PriceTable::new(self.currency.clone()).with_stopped_default(self.stopped);
        for (flavor, entry) in &self.flavors {
            let price = match *entry {
                FlavorEntry::Running(r) => FlavorPrice::running(r),
                FlavorEntry::Both { running, stopped } => FlavorPrice {
                    running_per_hour: running,
                    stopped_per_hour: stopped,
                },
            };
            t = t.with_flavor(flavor.clone(), price);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use phoenix_core::cost::PowerState;

    #[test]
    fn both_forms_of_a_flavor_price_parse() {
        let s: PricesSection = toml::from_str(
            r#"
currency = "EUR"
stopped = 0.5
[flavors]
small = 1.25
big = { running = 4.0, stopped = 0.25 }
"#,
        )
        .unwrap();
        let t = s.table();
        assert_eq!(t.currency, "EUR");
        assert_eq!(t.per_hour(Some("small"), PowerState::Running), Some(1.25));
        assert_eq!(t.per_hour(Some("small"), PowerState::Stopped), Some(0.5));
        assert_eq!(t.per_hour(Some("big"), PowerState::Stopped), Some(0.25));
        assert!(toml::from_str::<PricesSection>("currency = \"USD\"\nrate = 1").is_err());
    }

    const FILE: &str = r#"
[providers.laptop]
kind = "local"
[balancers.front]
kind = "embedded"
[deployments.shop]
environment = "local"
provider = "laptop"
[deployments.shop.roles.web]
desired = 2
balancer = "front"
flavor = "small"
"#;

    #[test]
    fn a_phoenix_toml_carries_prices_and_a_negative_one_is_refused() {
        let path = std::path::Path::new("phoenix.toml");
        let good = format!("{FILE}[prices]\ncurrency = \"USD\"\nflavors = {{ small = 0.5 }}\n");
        let file = crate::file::StackFile::parse(path, &good).unwrap();
        let table = file.prices.unwrap().table();
        assert_eq!(
            table.per_hour(Some("small"), PowerState::Running),
            Some(0.5)
        );
        let bad = format!("{FILE}[prices]\ncurrency = \"USD\"\nflavors = {{ small = -1.0 }}\n");
        let e = crate::file::StackFile::parse(path, &bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("prices.small.running_per_hour"), "{e}");
    }
}
