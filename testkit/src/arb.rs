//! Property-test strategies shared by kiq's crates: hostile JSON for every decoder that reads
//! JSON from outside (task arguments, API bodies, schedule definitions).

use std::collections::BTreeMap;

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::Value;

/// Any JSON value: nested up to 5 levels, with huge and negative numbers, odd floats and
/// arbitrary Unicode strings.
pub fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,24}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 96, 8, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..8).prop_map(Value::Array),
            btree_map(".{0,12}", inner, 0..8)
                .prop_map(|m: BTreeMap<String, Value>| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A JSON object with the given field names (each present or not), each holding any JSON
/// value: well-typed in shape, hostile in content.
pub fn object_with(fields: &'static [&'static str]) -> impl Strategy<Value = Value> {
    vec(proptest::option::of(json()), fields.len()).prop_map(move |values| {
        let mut m = serde_json::Map::new();
        for (k, v) in fields.iter().zip(values) {
            if let Some(v) = v {
                m.insert((*k).to_string(), v);
            }
        }
        Value::Object(m)
    })
}
