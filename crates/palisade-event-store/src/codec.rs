//! Turning values into payload bytes and back.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Encodes and decodes payloads. The store itself only sees bytes.
pub trait Codec: Send + Sync {
    /// Encodes `value`.
    ///
    /// # Errors
    /// [`Error::Codec`] if it cannot.
    fn encode<T: Serialize>(&self, value: &T) -> Result<Vec<u8>>;

    /// Decodes `bytes` as a `T`.
    ///
    /// # Errors
    /// [`Error::Codec`] if they are not one.
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T>;
}

/// JSON through `serde_json`: the default codec.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonCodec;

impl Codec for JsonCodec {
    fn encode<T: Serialize>(&self, value: &T) -> Result<Vec<u8>> {
        serde_json::to_vec(value).map_err(|e| Error::Codec(Box::new(e)))
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T> {
        serde_json::from_slice(bytes).map_err(|e| Error::Codec(Box::new(e)))
    }
}
