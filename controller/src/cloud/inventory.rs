//! What the last listing of each account showed, and the views built from
//! it: every instance — Metrom's, orphans, foreign — with state, type,
//! uptime and estimated cost per hour.

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;
use metrom_protocol::messages::api::{CloudInstanceView, CloudInventoryView};
use metrom_protocol::messages::env::EnvState;

use super::provider::{Instance, TAG_CONTROLLER, TAG_ENV, TAG_NAME, TAG_OWNER};
use crate::store::{CloudAccountRecord, EnvRecord};

/// The listing of every account (memory only; rebuilt by the next sync).
#[derive(Debug, Default)]
pub struct Inventory {
    pub accounts: BTreeMap<String, AccountListing>,
}

#[derive(Debug, Default, Clone)]
pub struct AccountListing {
    /// Last listing of every instance of the region.
    pub full_at: Option<Timestamp>,
    /// Last successful call of any kind.
    pub checked_at: Option<Timestamp>,
    /// Why the last call failed, until one succeeds.
    pub error: Option<String>,
    pub instances: Vec<Instance>,
}

impl Inventory {
    /// Records a listing: all instances, or only this controller's (which
    /// replace this controller's in the last full listing).
    pub fn record(&mut self, account: &str, controller: &str, full: bool, list: Vec<Instance>) {
        let now = Timestamp::now();
        let a = self.accounts.entry(account.to_string()).or_default();
        if full {
            a.instances = list;
            a.full_at = Some(now);
        } else {
            a.instances
                .retain(|i| i.tag(TAG_CONTROLLER) != Some(controller));
            a.instances.extend(list);
            a.instances.sort_by(|x, y| x.id.cmp(&y.id));
        }
        a.checked_at = Some(now);
        a.error = None;
    }

    pub fn failed(&mut self, account: &str, error: &str) {
        self.accounts.entry(account.to_string()).or_default().error = Some(error.to_string());
    }
}

/// How an instance relates to this controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// A live environment owns it.
    Metrom,
    /// Tagged as this controller's, but no live environment owns it.
    Orphan,
    /// Not this controller's.
    Foreign,
}

impl Ownership {
    pub fn as_str(&self) -> &'static str {
        match self {
            Ownership::Metrom => "metrom",
            Ownership::Orphan => "orphan",
            Ownership::Foreign => "foreign",
        }
    }
}

/// Pure: whose an instance is. `envs` are environments by id.
pub fn ownership(i: &Instance, controller: &str, envs: &HashMap<String, &EnvRecord>) -> Ownership {
    if i.tag(TAG_CONTROLLER) != Some(controller) {
        return Ownership::Foreign;
    }
    match i.tag(TAG_ENV).and_then(|id| envs.get(id)) {
        Some(e) if e.state != EnvState::Deleted => Ownership::Metrom,
        _ => Ownership::Orphan,
    }
}

/// The `cloud instances` view.
pub fn view(
    inventory: &Inventory,
    accounts: &[CloudAccountRecord],
    envs: &[EnvRecord],
    controller: &str,
    currency: &str,
    prices: &BTreeMap<String, f64>,
    now: Timestamp,
) -> CloudInventoryView {
    let by_id: HashMap<String, &EnvRecord> = envs.iter().map(|e| (e.id.to_string(), e)).collect();
    let mut instances = Vec::new();
    let mut errors = Vec::new();
    let mut synced_at: Option<Timestamp> = None;
    let mut never = false;
    for a in accounts {
        let Some(listing) = inventory.accounts.get(&a.name) else {
            never = true;
            continue;
        };
        if let Some(e) = &listing.error {
            errors.push(e.clone());
        }
        match listing.full_at {
            Some(t) => synced_at = Some(synced_at.map_or(t, |s| s.min(t))),
            None => never = true,
        }
        for i in &listing.instances {
            let own = ownership(i, controller, &by_id);
            let env = i.tag(TAG_ENV).and_then(|id| by_id.get(id));
            let hourly = prices.get(&i.instance_type).copied();
            let uptime_secs = match (i.state.billed(), i.launched_at) {
                (true, Some(t)) => Some(now.duration_since(t).as_secs().max(0) as u64),
                _ => None,
            };
            instances.push(CloudInstanceView {
                account: a.name.clone(),
                provider: a.provider.clone(),
                region: a.region.clone(),
                instance_id: i.id.clone(),
                state: i.state.as_str().to_string(),
                instance_type: i.instance_type.clone(),
                image: i.image.clone(),
                launched_at: i.launched_at,
                uptime_secs,
                hourly,
                cost_per_hour: hourly.map(|h| if i.state.billed() { h } else { 0.0 }),
                ownership: own.as_str().to_string(),
                env: match own {
                    Ownership::Metrom => env.map(|e| e.name.clone()),
                    _ => None,
                },
                env_id: i.tag(TAG_ENV).map(String::from),
                owner: i.tag(TAG_OWNER).map(String::from),
                name: i.tag(TAG_NAME).map(String::from),
                controller: i
                    .tag(TAG_CONTROLLER)
                    .filter(|c| *c != controller)
                    .map(String::from),
            });
        }
    }
    let total_per_hour = instances.iter().filter_map(|i| i.cost_per_hour).sum();
    CloudInventoryView {
        instances,
        synced_at: if never { None } else { synced_at },
        errors,
        currency: currency.to_string(),
        total_per_hour,
        controller: controller.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::provider::InstanceState;

    fn inst(id: &str, tags: &[(&str, &str)]) -> Instance {
        Instance {
            id: id.into(),
            state: InstanceState::Running,
            instance_type: "t3.micro".into(),
            image: "ami-1".into(),
            launched_at: None,
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            private_ip: None,
            public_ip: None,
        }
    }

    #[test]
    fn instances_are_ours_orphans_or_foreign() {
        let envs = HashMap::new();
        assert_eq!(ownership(&inst("a", &[]), "c1", &envs), Ownership::Foreign);
        assert_eq!(
            ownership(&inst("b", &[(TAG_CONTROLLER, "c2")]), "c1", &envs),
            Ownership::Foreign
        );
        assert_eq!(
            ownership(
                &inst("c", &[(TAG_CONTROLLER, "c1"), (TAG_ENV, "e-unknown")]),
                "c1",
                &envs
            ),
            Ownership::Orphan
        );
    }

    #[test]
    fn a_partial_listing_replaces_only_our_instances() {
        let mut inv = Inventory::default();
        inv.record(
            "a",
            "c1",
            true,
            vec![inst("f", &[]), inst("o", &[(TAG_CONTROLLER, "c1")])],
        );
        inv.record("a", "c1", false, vec![inst("n", &[(TAG_CONTROLLER, "c1")])]);
        let ids: Vec<_> = inv.accounts["a"]
            .instances
            .iter()
            .map(|i| i.id.as_str())
            .collect();
        assert_eq!(ids, ["f", "n"]);
    }
}
