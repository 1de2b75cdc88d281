//! Property tests: whatever bytes arrive, parsing never panics or reads out
//! of bounds, and what the writer writes the reader reads back.

use genl_wire::attr::{AttrWriter, Attrs};
use genl_wire::ctrl::FamilyInfo;
use genl_wire::policy::Policies;
use genl_wire::{Messages, align4};
use proptest::prelude::*;

/// Every getter on every attribute, recursing into nested payloads.
fn exercise(bytes: &[u8], depth: u32) {
    for attr in Attrs::new(bytes) {
        let Ok(a) = attr else { return };
        let _ = (
            a.u8(),
            a.u16(),
            a.u32(),
            a.u64(),
            a.i8(),
            a.i16(),
            a.i32(),
            a.i64(),
        );
        let _ = (
            a.u16_be(),
            a.u32_be(),
            a.uint(),
            a.sint(),
            a.str(),
            a.flag(),
            a.bitfield32(),
        );
        assert!(a.bytes().len() <= bytes.len());
        if depth < 4 {
            exercise(a.bytes(), depth + 1);
            for e in a.nested_array().flatten() {
                let _ = e.count();
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Value {
    U8(u8),
    U32(u32),
    U64(u64),
    Str(String),
    Bytes(Vec<u8>),
    Flag,
    Nested(Vec<(u16, Value)>),
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<u8>().prop_map(Value::U8),
        any::<u32>().prop_map(Value::U32),
        any::<u64>().prop_map(Value::U64),
        "[a-z0-9_]{0,20}".prop_map(Value::Str),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Bytes),
        Just(Value::Flag),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        proptest::collection::vec((1u16..200, inner), 0..6).prop_map(Value::Nested)
    })
}

fn write(w: &mut AttrWriter<'_>, kind: u16, v: &Value) {
    match v {
        Value::U8(x) => {
            w.put_u8(kind, *x);
        }
        Value::U32(x) => {
            w.put_u32(kind, *x);
        }
        Value::U64(x) => {
            w.put_u64(kind, *x);
        }
        Value::Str(s) => {
            w.put_str(kind, s).unwrap();
        }
        Value::Bytes(b) => {
            w.put_bytes(kind, b).unwrap();
        }
        Value::Flag => {
            w.put_flag(kind);
        }
        Value::Nested(items) => {
            let t = w.begin_nested(kind);
            for (k, v) in items {
                write(w, *k, v);
            }
            w.end_nested(t).unwrap();
        }
    }
}

fn check(bytes: &[u8], items: &[(u16, Value)]) {
    let attrs: Vec<_> = Attrs::new(bytes).collect::<Result<_, _>>().unwrap();
    assert_eq!(attrs.len(), items.len());
    for (a, (k, v)) in attrs.iter().zip(items) {
        assert_eq!(a.kind(), *k);
        match v {
            Value::U8(x) => assert_eq!(a.u8(), Ok(*x)),
            Value::U32(x) => assert_eq!(a.u32(), Ok(*x)),
            Value::U64(x) => assert_eq!(a.u64(), Ok(*x)),
            Value::Str(s) => assert_eq!(a.str(), Ok(s.as_str())),
            Value::Bytes(b) => assert_eq!(a.bytes(), b.as_slice()),
            Value::Flag => assert_eq!(a.flag(), Ok(true)),
            Value::Nested(inner) => {
                assert!(a.is_nested_flag());
                check(a.bytes(), inner);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        exercise(&bytes, 0);
        for m in Messages::new(&bytes) {
            let Ok(m) = m else { break };
            let _ = m.completion();
            if let Ok((_, rest)) = m.genl() {
                let _ = FamilyInfo::decode(rest);
                let _ = Policies::default().absorb(rest);
            }
        }
    }

    #[test]
    fn what_is_written_reads_back(items in proptest::collection::vec((1u16..1000, value()), 0..8)) {
        let mut w = AttrWriter::new();
        for (k, v) in &items {
            write(&mut w, *k, v);
        }
        let bytes = w.finish();
        prop_assert_eq!(bytes.len(), align4(bytes.len()));
        check(&bytes, &items);
        // Every truncation of valid input is handled without panicking.
        for cut in 0..bytes.len().min(64) {
            exercise(&bytes[..cut], 0);
        }
    }
}
