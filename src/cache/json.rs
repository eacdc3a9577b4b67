//! Typed values as JSON (feature `serde`): thin layers over the byte API.

use std::future::Future;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

use super::{Cache, ComputeError, WriteOutcome};

impl Cache {
    /// [`get`](Self::get), decoded from JSON.
    ///
    /// # Errors
    /// [`Error::Codec`] when the stored bytes are not JSON of type `T` (the entry is left
    /// alone; overwrite or delete it).
    pub async fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.get(key).await? {
            Some(bytes) => decode(key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// [`set`](Self::set), encoded as JSON.
    ///
    /// # Errors
    /// [`Error::Codec`] when `value` cannot be encoded; [`Error::InvalidTtl`] as for `set`.
    pub async fn set_json<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Duration,
    ) -> Result<WriteOutcome> {
        let bytes = encode(key, value)?;
        self.set(key, bytes, ttl).await
    }

    /// [`get_or_compute`](Self::get_or_compute) for a JSON-encoded value: `compute` runs at
    /// most once across all processes on a miss, exactly as there.
    ///
    /// # Errors
    /// As [`get_or_compute`](Self::get_or_compute), plus [`ComputeError::Cache`] with
    /// [`Error::Codec`] when the value cannot be encoded or the cached bytes decoded.
    pub async fn get_or_compute_json<T, F, Fut, E>(
        &self,
        key: &str,
        ttl: Duration,
        compute: F,
    ) -> Result<T, ComputeError<E>>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let bytes = self
            .get_or_compute(key, ttl, || async move {
                let value = compute().await.map_err(ComputeError::Compute)?;
                encode(key, &value).map_err(ComputeError::Cache)
            })
            .await
            .map_err(|e| match e {
                // The closure's own error is already a ComputeError<E>.
                ComputeError::Compute(inner) => inner,
                ComputeError::Cache(e) => ComputeError::Cache(e),
            })?;
        Ok(decode(key, &bytes)?)
    }
}

fn encode<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| codec(key, e))
}

fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| codec(key, e))
}

fn codec(key: &str, e: serde_json::Error) -> Error {
    Error::Codec {
        key: key.to_owned(),
        source: Box::new(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_errors_are_typed() {
        let e = decode::<u32>("k", b"not json").unwrap_err();
        assert!(e.is_codec());
        assert!(std::error::Error::source(&e).is_some());
        assert_eq!(encode("k", &[1, 2]).unwrap(), b"[1,2]");
    }
}
