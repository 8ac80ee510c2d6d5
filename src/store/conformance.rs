//! The behaviour every `SecretStore` backend must show. Unit tests run it against each backend;
//! integration tests run it against the Vault-API backends. Panics (test failures) on violation.

use super::{Cas, SecretStore, StoreError};
use zeroize::Zeroizing;

fn bytes(s: &str) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(s.as_bytes().to_vec())
}

/// Runs the whole suite against `store`, which must start empty under the `conformance/` prefix.
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a conformance failure is a test failure"
)]
pub async fn run(store: &dyn SecretStore) {
    let k = "conformance/grants/a";
    assert!(
        store.get(k).await.unwrap().is_none(),
        "missing key reads as None"
    );
    assert!(
        !store.delete(k).await.unwrap(),
        "deleting a missing key reports false"
    );

    // Create-only writes.
    let v1 = store.put(k, bytes("one"), Cas::Absent).await.unwrap();
    assert!(
        matches!(
            store.put(k, bytes("x"), Cas::Absent).await,
            Err(StoreError::Conflict)
        ),
        "Cas::Absent on an existing key conflicts"
    );
    let got = store
        .get(k)
        .await
        .unwrap()
        .expect("written record reads back");
    assert_eq!(&got.value[..], b"one");
    assert_eq!(got.version, v1);

    // Check-and-set.
    let v2 = store.put(k, bytes("two"), Cas::Version(v1)).await.unwrap();
    assert!(v2 > v1, "versions increase");
    assert!(
        matches!(
            store.put(k, bytes("stale"), Cas::Version(v1)).await,
            Err(StoreError::Conflict)
        ),
        "a stale version conflicts"
    );
    assert_eq!(
        &store.get(k).await.unwrap().unwrap().value[..],
        b"two",
        "a conflict writes nothing"
    );
    let v3 = store.put(k, bytes("three"), Cas::Any).await.unwrap();
    assert!(v3 > v2);

    // Listing by prefix, sorted, without neighbours.
    store
        .put("conformance/grants/b", bytes("b"), Cas::Any)
        .await
        .unwrap();
    store
        .put("conformance/grantsX", bytes("c"), Cas::Any)
        .await
        .unwrap();
    store
        .put("conformance/other/c", bytes("c"), Cas::Any)
        .await
        .unwrap();
    assert_eq!(
        store.list("conformance/grants/").await.unwrap(),
        vec![
            "conformance/grants/a".to_owned(),
            "conformance/grants/b".to_owned()
        ]
    );

    // Deletion, then re-creation.
    assert!(store.delete(k).await.unwrap());
    assert!(store.get(k).await.unwrap().is_none());
    store.put(k, bytes("again"), Cas::Absent).await.unwrap();
    assert_eq!(&store.get(k).await.unwrap().unwrap().value[..], b"again");

    // Paging through a prefix, and deleting many at once (absent keys are not counted).
    assert_eq!(
        store
            .list_page("conformance/grants/", Some("conformance/grants/a"), 10)
            .await
            .unwrap(),
        vec!["conformance/grants/b".to_owned()]
    );
    assert_eq!(
        store
            .list_page("conformance/", None, 2)
            .await
            .unwrap()
            .len(),
        2
    );
    let many = ["conformance/many/1", "conformance/many/2"];
    for key in many {
        store.put(key, bytes("m"), Cas::Any).await.unwrap();
    }
    let mut doomed: Vec<String> = many.iter().map(|k| (*k).to_owned()).collect();
    doomed.push("conformance/many/absent".to_owned());
    assert_eq!(store.delete_many(&doomed).await.unwrap(), 2);
    assert!(store.list("conformance/many/").await.unwrap().is_empty());

    // Binary-safe values and invalid keys.
    let blob: Vec<u8> = (0..=255u8).collect();
    store
        .put("conformance/blob", Zeroizing::new(blob.clone()), Cas::Any)
        .await
        .unwrap();
    assert_eq!(
        &store.get("conformance/blob").await.unwrap().unwrap().value[..],
        &blob[..]
    );
    for bad in ["", "a//b", "../x", "a/b c", "/lead"] {
        assert!(
            matches!(
                store.put(bad, bytes("v"), Cas::Any).await,
                Err(StoreError::InvalidKey(_))
            ),
            "key {bad:?} must be refused"
        );
    }

    store.check().await.unwrap();
    for key in store.list("conformance/").await.unwrap() {
        store.delete(&key).await.unwrap();
    }
    assert!(store.list("conformance/").await.unwrap().is_empty());
}
