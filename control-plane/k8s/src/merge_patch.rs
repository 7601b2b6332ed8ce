//! JSON merge patches (RFC 7386) that turn one document into another, for status writes.
//!
//! A merge patch removes a field only where it says `null`, at any depth: sending the new status
//! whole would leave every nested field the new one dropped (say `dataPlane.traffic.canary` after
//! a promotion) on the object, and the next reconcile would read a status the engine never wrote.

use serde::Serialize;
use serde_json::{Map, Value};

/// The merge patch that turns `old` into `new`: objects are walked key by key (a key `old` has
/// and `new` lacks is `null`), anything else (arrays, scalars) is replaced whole. `Value::Null`
/// for a patch of two equal objects is never returned: an empty object then.
pub fn diff(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(old), Value::Object(new)) => {
            let mut patch = Map::new();
            for (key, value) in new {
                match old.get(key) {
                    Some(before) if before == value => {}
                    Some(before @ Value::Object(_)) if value.is_object() => {
                        patch.insert(key.clone(), diff(before, value));
                    }
                    _ => {
                        patch.insert(key.clone(), value.clone());
                    }
                }
            }
            for key in old.keys().filter(|k| !new.contains_key(*k)) {
                patch.insert(key.clone(), Value::Null);
            }
            Value::Object(patch)
        }
        _ => new.clone(),
    }
}

/// `{"status": <diff of old and new>}` for a status subresource.
pub fn status_patch<T: Serialize>(old: &T, new: &T) -> Value {
    let (old, new) = (
        serde_json::to_value(old).unwrap_or(Value::Null),
        serde_json::to_value(new).unwrap_or(Value::Null),
    );
    serde_json::json!({ "status": diff(&old, &new) })
}

/// RFC 7386 applied: what the API server does with a merge patch (for tests).
pub fn apply(target: &mut Value, patch: &Value) {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(object) = target {
        for (key, value) in fields {
            if value.is_null() {
                object.remove(key);
            } else {
                apply(object.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The promotion that kept publishing: `canary` dropped inside `dataPlane.traffic` must be
    /// removed from the object, not left there.
    #[test]
    fn a_nested_field_the_new_document_drops_is_removed() {
        let old = json!({"phase": "Paused", "dataPlane": {"generation": 4,
            "traffic": {"stable": "a", "canary": "b", "canaryWeight": 50}}});
        let new = json!({"phase": "Healthy", "dataPlane": {"generation": 5,
            "traffic": {"stable": "b", "canaryWeight": 0}}});
        let patch = diff(&old, &new);
        assert_eq!(
            patch,
            json!({"phase": "Healthy", "dataPlane": {"generation": 5,
                "traffic": {"stable": "b", "canary": null, "canaryWeight": 0}}})
        );
        let mut stored = old.clone();
        apply(&mut stored, &patch);
        assert_eq!(stored, new);
    }

    #[test]
    fn arrays_and_scalars_are_replaced_and_equal_documents_patch_nothing() {
        let old = json!({"conditions": [{"type": "A"}, {"type": "B"}], "top": {"x": 1}});
        let new = json!({"conditions": [{"type": "A"}], "top": 3});
        let patch = diff(&old, &new);
        assert_eq!(patch, json!({"conditions": [{"type": "A"}], "top": 3}));
        let mut stored = old.clone();
        apply(&mut stored, &patch);
        assert_eq!(stored, new);
        assert_eq!(diff(&new, &new), json!({}));
    }

    proptest::proptest! {
        /// Applying the diff of any two documents to the first gives the second (values without
        /// nulls, as serialized statuses are: RFC 7386 cannot set a null).
        #[test]
        fn applying_the_diff_gives_the_new_document(
            old in document(),
            new in document(),
        ) {
            let mut stored = old.clone();
            apply(&mut stored, &diff(&old, &new));
            proptest::prop_assert_eq!(stored, new);
        }
    }

    fn document() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            any::<bool>().prop_map(Value::from),
            (0i64..5).prop_map(Value::from),
            "[ab]{0,2}".prop_map(Value::from),
        ];
        let value = leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
                proptest::collection::btree_map("[abc]", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        });
        proptest::collection::btree_map("[abc]", value, 0..4)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
    }
}
