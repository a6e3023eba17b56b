//! How values are turned into bytes for a remote tier.

use super::TierError;

/// Encodes values for a remote tier and decodes them back.
///
/// `JsonCodec` (feature `redis`) is the default;
/// implement this for a compact or versioned format.
pub trait Codec<V>: Send + Sync + 'static {
    /// The bytes stored for `value`.
    fn encode(&self, value: &V) -> Result<Vec<u8>, TierError>;
    /// The value stored as `bytes`.
    fn decode(&self, bytes: &[u8]) -> Result<V, TierError>;
}

/// JSON through serde: readable in `redis-cli`, and tolerant of added fields.
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonCodec;

#[cfg(feature = "redis")]
impl<V> Codec<V> for JsonCodec
where
    V: serde::Serialize + serde::de::DeserializeOwned,
{
    fn encode(&self, value: &V) -> Result<Vec<u8>, TierError> {
        serde_json::to_vec(value).map_err(|e| TierError::Codec(Box::new(e)))
    }

    fn decode(&self, bytes: &[u8]) -> Result<V, TierError> {
        serde_json::from_slice(bytes).map_err(|e| TierError::Codec(Box::new(e)))
    }
}
