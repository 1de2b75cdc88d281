//! Everything that parses bytes from the kernel, fed arbitrary bytes: the
//! message splitter, error/ack decoding, every attribute getter, nlctrl
//! family and policy decoding, policy validation, and the SDK's schema and
//! typed decoders. None may panic or read out of bounds.

#![no_main]

use genl_plugin_sdk::attr_set;
use genl_plugin_sdk::schema::{Field, Kind, decode};
use genl_plugin_sdk::typed::{AttrSet, Binary, NestedArray, Uint};
use genl_wire::ctrl::FamilyInfo;
use genl_wire::policy::Policies;
use genl_wire::{Attrs, Messages};
use libfuzzer_sys::fuzz_target;

attr_set! {
    struct Leaf {
        1 => a: u32,
        2 => b: String,
        3 => c: bool,
        4 => d: Binary,
    }
}

attr_set! {
    struct Tree {
        1 => leaf: Leaf,
        2 => many: Vec<u16>,
        3 => list: NestedArray<Leaf>,
        4 => big: Uint,
        5 => addr: std::net::Ipv6Addr,
    }
}

const LEAF: &[Field] = &[
    Field::new(1, "a", Kind::U32),
    Field::new(2, "b", Kind::Str),
    Field::new(3, "c", Kind::Flag),
    Field::new(4, "d", Kind::Ipv4),
];
const TREE: &[Field] = &[
    Field::new(1, "leaf", Kind::Nested(LEAF)),
    Field::new(2, "list", Kind::NestedArray(LEAF)),
    Field::new(3, "bits", Kind::Bitfield32),
    Field::new(4, "s", Kind::Sint),
];

fn getters(bytes: &[u8], depth: u32) {
    for attr in Attrs::new(bytes) {
        let Ok(a) = attr else { return };
        let _ = (a.u8(), a.u16(), a.u32(), a.u64(), a.i8(), a.i16(), a.i32(), a.i64());
        let _ = (a.u16_be(), a.u32_be(), a.uint(), a.sint(), a.str(), a.flag(), a.bitfield32());
        if depth < 8 {
            getters(a.bytes(), depth + 1);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    getters(data, 0);
    let _ = FamilyInfo::decode(data);
    let mut policies = Policies::default();
    if policies.absorb(data).is_ok() {
        for op in policies.ops.keys().copied().collect::<Vec<_>>() {
            let _ = policies.validate(op, false, data);
            let _ = policies.validate(op, true, data);
        }
    }
    let _ = decode(data, TREE);
    if let Ok(t) = Tree::decode(data) {
        // What decodes re-encodes, and decodes to the same value.
        let bytes = t.to_bytes().expect("re-encode");
        assert_eq!(Tree::decode(&bytes).expect("decode again"), t);
    }
    for m in Messages::new(data) {
        let Ok(m) = m else { break };
        let _ = m.completion();
        if let Ok((_, rest)) = m.genl() {
            getters(rest, 0);
            let _ = FamilyInfo::decode(rest);
        }
    }
});
