//! A canonical key for node metadata: nodes with equal metadata are one kind of node.
//!
//! `google.protobuf.Struct` keeps its fields in a `HashMap`, so encoding two equal structs with
//! prost can give different bytes (the iteration order is per map). The key sorts every
//! struct's fields, nested ones included.

use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};

/// The same bytes for equal metadata, different bytes for different metadata (every part is
/// tagged and length-prefixed). `None` and an empty struct are the same kind.
pub(crate) fn metadata_key(metadata: Option<&Struct>) -> Vec<u8> {
    let mut key = Vec::new();
    if let Some(metadata) = metadata.filter(|m| !m.fields.is_empty()) {
        write_struct(metadata, &mut key);
    }
    key
}

fn write_struct(value: &Struct, out: &mut Vec<u8>) {
    let mut fields: Vec<_> = value.fields.iter().collect();
    fields.sort_unstable_by(|a, b| a.0.cmp(b.0));
    write_len(fields.len(), out);
    for (name, value) in fields {
        write_bytes(name.as_bytes(), out);
        write_value(value, out);
    }
}

fn write_value(value: &Value, out: &mut Vec<u8>) {
    match &value.kind {
        None => out.push(0),
        Some(Kind::NullValue(_)) => out.push(1),
        Some(Kind::NumberValue(n)) => {
            out.push(2);
            out.extend_from_slice(&n.to_bits().to_le_bytes());
        }
        Some(Kind::StringValue(s)) => {
            out.push(3);
            write_bytes(s.as_bytes(), out);
        }
        Some(Kind::BoolValue(b)) => out.extend_from_slice(&[4, u8::from(*b)]),
        Some(Kind::StructValue(s)) => {
            out.push(5);
            write_struct(s, out);
        }
        Some(Kind::ListValue(list)) => {
            out.push(6);
            write_len(list.values.len(), out);
            for value in &list.values {
                write_value(value, out);
            }
        }
    }
}

fn write_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    write_len(bytes.len(), out);
    out.extend_from_slice(bytes);
}

fn write_len(len: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(&(len as u64).to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::ListValue;

    fn string(s: &str) -> Value {
        Value {
            kind: Some(Kind::StringValue(s.into())),
        }
    }

    fn metadata(fields: &[(&str, Value)]) -> Struct {
        Struct {
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        }
    }

    #[test]
    fn equal_metadata_has_one_key_whatever_the_field_order() {
        let scope = Value {
            kind: Some(Kind::ListValue(ListValue {
                values: vec![string("shop/cart"), string("web")],
            })),
        };
        let names: Vec<String> = (0..32).map(|i| format!("field-{i}")).collect();
        let fields: Vec<(&str, Value)> = names
            .iter()
            .map(|n| (n.as_str(), string(n)))
            .chain([("sluice.scope", scope)])
            .collect();
        let forward = metadata(&fields);
        let mut reversed_fields = fields.clone();
        reversed_fields.reverse();
        let reversed = metadata(&reversed_fields);
        assert_eq!(metadata_key(Some(&forward)), metadata_key(Some(&reversed)));
        assert_eq!(metadata_key(None), metadata_key(Some(&Struct::default())));
    }

    #[test]
    fn different_metadata_has_different_keys() {
        let a = metadata(&[("sluice.scope", string("web"))]);
        let b = metadata(&[("sluice.scope", string("shop"))]);
        let split = metadata(&[("sluice.scop", string("eweb"))]);
        let list = metadata(&[(
            "sluice.scope",
            Value {
                kind: Some(Kind::ListValue(ListValue {
                    values: vec![string("web")],
                })),
            },
        )]);
        let keys = [&a, &b, &split, &list].map(|m| metadata_key(Some(m)));
        for (i, x) in keys.iter().enumerate() {
            for y in &keys[i + 1..] {
                assert_ne!(x, y);
            }
        }
    }
}
