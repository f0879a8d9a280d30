//! The read-only catalogs (regions and plans) and the rules that need them. The server loads the
//! catalog from its config; the provider reads it through the API. Both call these functions.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::domain::{AdditionalUsers, BillingPeriod, PlanTier, RegionCode, RuleError, SupportTier, VolumeSizeGb};

/// A hosting region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Region {
    /// Region code, e.g. `us-east-1`.
    pub code: String,
    /// Human-readable name.
    pub name: String,
    /// ISO 3166-1 alpha-2 country code of the data centre.
    pub country: String,
    /// Whether new homeservers can be created here. R1: only available US regions are.
    pub available: bool,
}

/// Hardware limits that come with a plan (R5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceLimits {
    /// CPU allowance in millicores.
    pub cpu_millicores: u32,
    /// Memory allowance in MiB.
    pub memory_mb: u32,
    /// Largest volume a homeserver on this plan may have, in GB.
    pub storage_gb: u32,
}

/// A plan tier from the catalog (R5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Tier key, e.g. `silver`.
    pub tier: PlanTier,
    /// Display name, e.g. `Silver`.
    pub name: String,
    /// Monthly active users included (R5, R6).
    pub mau: u32,
    /// Price per MAU per month in US cents; Additional Users cost the same (R10).
    pub price_per_mau_cents: u32,
    /// Resource limits (R5).
    pub limits: ResourceLimits,
    /// Support tier (R5).
    pub support_tier: SupportTier,
    /// Whether end-to-end encryption by default may be turned off on this plan (R22).
    pub e2ee_can_be_disabled: bool,
}

/// Whether a change of tier is an upgrade (at once) or a downgrade (at the anniversary), R11.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanChange {
    Same,
    Upgrade,
    Downgrade,
}

impl Plan {
    /// R11: what one MAU (or one Additional User, R10) costs for a whole billing period, paid in
    /// advance, in US cents. A year costs twelve months.
    pub fn price_per_mau_per_period_cents(&self, period: BillingPeriod) -> i64 {
        let months = match period {
            BillingPeriod::Monthly => 1,
            BillingPeriod::Annual => 12,
        };
        i64::from(self.price_per_mau_cents) * months
    }

    /// R5/R8/R10: the MAU cap is the plan's MAU plus Additional Users.
    pub fn mau_cap(&self, additional_users: AdditionalUsers) -> u32 {
        self.mau.saturating_add(additional_users.get())
    }

    /// The plan's storage limit bounds the volume size.
    pub fn check_volume_size(&self, size: VolumeSizeGb) -> Result<(), RuleError> {
        if size.get() > self.limits.storage_gb {
            return Err(RuleError::new(format!(
                "R5: volume size {} GB exceeds the {} plan's storage limit of {} GB",
                size.get(),
                self.tier,
                self.limits.storage_gb
            )));
        }
        Ok(())
    }

    // R22
    pub fn check_encryption_by_default(&self, enabled: bool) -> Result<(), RuleError> {
        if !enabled && !self.e2ee_can_be_disabled {
            return Err(RuleError::new(format!(
                "R22: the {} plan keeps end-to-end encryption on by default; encryption_by_default = false needs a plan that allows it",
                self.tier
            )));
        }
        Ok(())
    }

    /// R12: at 100% of its storage a homeserver is blocked until its volume is grown or its
    /// plan upgraded. Whether the volume is full is the node agent's finding (it holds the
    /// volume's reserve); the plan's limit is decided here.
    pub fn storage_block(&self, used_bytes: u64, size_bytes: u64, volume_full: bool) -> Option<StorageBlock> {
        let limit_bytes = u64::from(self.limits.storage_gb) * GIB;
        if used_bytes >= limit_bytes {
            return Some(StorageBlock::PlanLimit { used_bytes, limit_bytes });
        }
        volume_full.then_some(StorageBlock::VolumeFull { used_bytes, size_bytes })
    }

    /// R11: a plan with more MAU (or, at equal MAU, a higher price) is an upgrade.
    pub fn change_to(&self, target: &Plan) -> PlanChange {
        use std::cmp::Ordering::*;
        match (target.mau, target.price_per_mau_cents).cmp(&(self.mau, self.price_per_mau_cents)) {
            Equal if target.tier == self.tier => PlanChange::Same,
            Greater | Equal => PlanChange::Upgrade,
            Less => PlanChange::Downgrade,
        }
    }
}

/// One GiB: volume sizes and storage limits count in GiB.
pub const GIB: u64 = 1 << 30;

/// R12: why a homeserver is at 100% of its storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageBlock {
    /// The volume is full: growing it unblocks the homeserver.
    VolumeFull { used_bytes: u64, size_bytes: u64 },
    /// It holds as much as its plan allows: an upgrade unblocks it.
    PlanLimit { used_bytes: u64, limit_bytes: u64 },
}

impl StorageBlock {
    /// What users and the customer read (also Synapse's `hs_disabled_message`).
    pub fn message(&self) -> String {
        let mib = |b: u64| b / (1 << 20);
        match self {
            StorageBlock::VolumeFull { used_bytes, size_bytes } => format!(
                "R12: this homeserver's storage is full ({} of {} MiB used); it is blocked until its volume is grown.",
                mib(*used_bytes),
                mib(*size_bytes)
            ),
            StorageBlock::PlanLimit { used_bytes, limit_bytes } => format!(
                "R12: this homeserver holds {} MiB, its plan's storage limit of {} MiB; it is blocked until the plan is upgraded.",
                mib(*used_bytes),
                mib(*limit_bytes)
            ),
        }
    }
}

/// R8: reserved users hold slots inside the MAU cap, so there can never be more of them than
/// the cap.
pub fn check_reserved_within_cap(reserved: u64, cap: u32) -> Result<(), RuleError> {
    if reserved > u64::from(cap) {
        return Err(RuleError::new(format!(
            "R8: {reserved} reserved users would exceed the MAU cap of {cap}; reserved users hold slots inside the cap"
        )));
    }
    Ok(())
}

/// The regions and plans a deployment offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    pub regions: Vec<Region>,
    pub plans: Vec<Plan>,
    /// The current version of the customer terms, recorded per homeserver at creation (R20).
    pub terms_version: String,
}

impl Catalog {
    // R1
    pub fn available_region(&self, code: &RegionCode) -> Result<&Region, RuleError> {
        let region = self.regions.iter().find(|r| r.code == code.as_str()).ok_or_else(|| {
            RuleError::new(format!(
                "R1: region `{code}` is not in the catalog; available: {}",
                self.available_region_codes().join(", ")
            ))
        })?;
        if region.country != "US" {
            return Err(RuleError::new(format!("R1: region `{code}` is not in the US")));
        }
        if !region.available {
            return Err(RuleError::new(format!(
                "R1: region `{code}` is not available yet; available: {}",
                self.available_region_codes().join(", ")
            )));
        }
        Ok(region)
    }

    pub fn available_region_codes(&self) -> Vec<&str> {
        self.regions
            .iter()
            .filter(|r| r.available && r.country == "US")
            .map(|r| r.code.as_str())
            .collect()
    }

    pub fn plan(&self, tier: &PlanTier) -> Result<&Plan, RuleError> {
        self.plans.iter().find(|p| &p.tier == tier).ok_or_else(|| {
            let tiers: Vec<&str> = self.plans.iter().map(|p| p.tier.as_str()).collect();
            RuleError::new(format!("R5: plan `{tier}` is not in the catalog; plans: {}", tiers.join(", ")))
        })
    }

    /// Checks a catalog loaded from configuration, so a bad file fails at start-up.
    pub fn check(&self) -> Result<(), RuleError> {
        if self.plans.is_empty() {
            return Err(RuleError::new("the catalog lists no plans"));
        }
        for r in self.regions.iter().filter(|r| r.available) {
            // International or future regions may be listed, but only as unavailable (R1).
            RegionCode::parse(&r.code)?;
            if r.country != "US" {
                return Err(RuleError::new(format!("R1: available region `{}` must be in the US", r.code)));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(tier: &str, mau: u32, price: u32) -> Plan {
        Plan {
            tier: PlanTier::parse(tier).unwrap(),
            name: tier.into(),
            mau,
            price_per_mau_cents: price,
            limits: ResourceLimits { cpu_millicores: 1000, memory_mb: 1024, storage_gb: 10 },
            support_tier: SupportTier::BestEffort,
            e2ee_can_be_disabled: false,
        }
    }

    #[test]
    fn r10_cap_is_mau_plus_additional_users() {
        let p = plan("silver", 50, 100);
        assert_eq!(p.mau_cap(AdditionalUsers::parse(10).unwrap()), 60);
    }

    #[test]
    fn r12_a_full_volume_or_the_plans_limit_blocks() {
        let p = plan("nickel", 10, 100);
        let size = GIB;
        assert_eq!(p.storage_block(100 << 20, size, false), None);
        // The node agent says the volume is full.
        let used = size - (5 << 20);
        assert_eq!(p.storage_block(used, size, true), Some(StorageBlock::VolumeFull { used_bytes: used, size_bytes: size }));
        let msg = p.storage_block(used, size, true).unwrap().message();
        assert!(msg.starts_with("R12") && msg.contains("grown"), "{msg}");
        // At the plan's limit (a volume larger than a downgraded plan allows), full or not.
        let big = 20 * GIB;
        let b = p.storage_block(10 * GIB, big, false).unwrap();
        assert_eq!(b, StorageBlock::PlanLimit { used_bytes: 10 * GIB, limit_bytes: 10 * GIB });
        assert!(b.message().contains("upgraded"));
    }

    #[test]
    fn r8_reserved_users_fit_inside_the_cap() {
        assert!(check_reserved_within_cap(50, 50).is_ok());
        let e = check_reserved_within_cap(51, 50).unwrap_err();
        assert!(e.message.contains("51") && e.message.contains("50") && e.message.starts_with("R8"));
    }

    #[test]
    fn r11_classifies_changes() {
        let small = plan("nickel", 10, 100);
        let big = plan("gold", 100, 100);
        assert_eq!(small.change_to(&big), PlanChange::Upgrade);
        assert_eq!(big.change_to(&small), PlanChange::Downgrade);
        assert_eq!(big.change_to(&big), PlanChange::Same);
    }

    #[test]
    fn r22_and_storage_limits() {
        let p = plan("nickel", 10, 100);
        assert!(p.check_encryption_by_default(true).is_ok());
        assert!(p.check_encryption_by_default(false).unwrap_err().message.starts_with("R22"));
        assert!(p.check_volume_size(VolumeSizeGb::parse(10).unwrap()).is_ok());
        assert!(p.check_volume_size(VolumeSizeGb::parse(11).unwrap()).is_err());
    }

    #[test]
    fn r1_catalog_refuses_unavailable_and_unknown_regions() {
        let c = Catalog {
            regions: vec![
                Region { code: "us-east-1".into(), name: "a".into(), country: "US".into(), available: true },
                Region { code: "us-central-1".into(), name: "b".into(), country: "US".into(), available: false },
            ],
            plans: vec![plan("nickel", 10, 100)],
            terms_version: "t".into(),
        };
        assert!(c.available_region(&RegionCode::parse("us-east-1").unwrap()).is_ok());
        let e = c.available_region(&RegionCode::parse("us-central-1").unwrap()).unwrap_err();
        assert!(e.message.contains("not available yet") && e.message.contains("us-east-1"));
        assert!(c.available_region(&RegionCode::parse("us-west-9").unwrap()).is_err());
    }
}
