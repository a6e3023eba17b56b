//! Two tiers: a local [`Cache`](crate::Cache) in front of a shared remote tier.
