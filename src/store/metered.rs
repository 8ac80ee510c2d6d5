//! A store decorator that times every call and counts failures for the metrics, by backend and
//! operation. Conflicts are the check-and-set working, not failures.

use super::{Cas, SecretBytes, SecretStore, StoreError, Versioned};
use crate::metrics::Metrics;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug)]
pub struct MeteredStore {
    inner: Arc<dyn SecretStore>,
    metrics: Arc<Metrics>,
}

impl MeteredStore {
    pub fn new(inner: Arc<dyn SecretStore>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    fn observe<T>(
        &self,
        operation: &'static str,
        started: Instant,
        result: Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let failed = matches!(&result, Err(e) if !e.is_conflict());
        self.metrics
            .store_call(self.inner.backend(), operation, failed, started.elapsed());
        result
    }
}

#[async_trait]
impl SecretStore for MeteredStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn exclusive(&self) -> bool {
        self.inner.exclusive()
    }

    fn pages_natively(&self) -> bool {
        self.inner.pages_natively()
    }

    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        let started = Instant::now();
        self.observe("get", started, self.inner.get(key).await)
    }

    async fn put(&self, key: &str, value: SecretBytes, cas: Cas) -> Result<u64, StoreError> {
        let started = Instant::now();
        self.observe("put", started, self.inner.put(key, value, cas).await)
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        let started = Instant::now();
        self.observe("delete", started, self.inner.delete(key).await)
    }

    async fn delete_many(&self, keys: &[String]) -> Result<usize, StoreError> {
        let started = Instant::now();
        let deleted = self.inner.delete_many(keys).await;
        self.observe("delete", started, deleted)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let started = Instant::now();
        self.observe("list", started, self.inner.list(prefix).await)
    }

    async fn list_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let started = Instant::now();
        let keys = self.inner.list_page(prefix, after, limit).await;
        self.observe("list", started, keys)
    }

    async fn check(&self) -> Result<(), StoreError> {
        let started = Instant::now();
        self.observe("check", started, self.inner.check().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn times_every_call_and_counts_failures_but_not_conflicts() {
        let metrics = Arc::new(Metrics::new());
        let store = MeteredStore::new(
            Arc::new(super::super::MemoryStore::default()),
            metrics.clone(),
        );
        let value = || SecretBytes::new(b"v".to_vec());
        store.put("a/b", value(), Cas::Absent).await.unwrap();
        assert!(
            store
                .put("a/b", value(), Cas::Absent)
                .await
                .unwrap_err()
                .is_conflict()
        );
        assert!(store.get("a/b").await.unwrap().is_some());
        assert_eq!(store.list("a/").await.unwrap(), vec!["a/b".to_owned()]);
        assert!(store.delete("a/b").await.unwrap());
        assert!(store.put("../escape", value(), Cas::Any).await.is_err());
        let text = metrics.render();
        for line in [
            "valet_store_operation_duration_seconds_count{backend=\"memory\",operation=\"put\"} 3",
            "valet_store_operation_duration_seconds_count{backend=\"memory\",operation=\"get\"} 1",
            "valet_store_operation_duration_seconds_count{backend=\"memory\",operation=\"list\"} 1",
            "valet_store_operation_duration_seconds_count{backend=\"memory\",operation=\"delete\"} 1",
            // The refused key, not the conflict.
            "valet_store_errors_total{backend=\"memory\",operation=\"put\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
