//! Attribute policies from CTRL_CMD_GETPOLICY: what each op of a family
//! accepts. Used to show a family's interface and to check a request before
//! it reaches the kernel, naming the offending attribute.

use std::collections::BTreeMap;

use crate::WireError;
use crate::attr::Attrs;

/// CTRL_ATTR_POLICY: nested policy sets.
pub const CTRL_ATTR_POLICY: u16 = 8;
/// CTRL_ATTR_OP_POLICY: which policy each op uses.
pub const CTRL_ATTR_OP_POLICY: u16 = 9;
/// CTRL_ATTR_OP: restrict GETPOLICY to one op.
pub const CTRL_ATTR_OP: u16 = 10;
const CTRL_ATTR_POLICY_DO: u16 = 1;
const CTRL_ATTR_POLICY_DUMP: u16 = 2;

// NL_POLICY_TYPE_ATTR_* (<linux/netlink.h>).
const TYPE: u16 = 1;
const MIN_VALUE_S: u16 = 2;
const MAX_VALUE_S: u16 = 3;
const MIN_VALUE_U: u16 = 4;
const MAX_VALUE_U: u16 = 5;
const MIN_LENGTH: u16 = 6;
const MAX_LENGTH: u16 = 7;
const POLICY_IDX: u16 = 8;
const POLICY_MAXTYPE: u16 = 9;
const BITFIELD32_MASK: u16 = 10;
const MASK: u16 = 12;

/// NL_ATTR_TYPE_*: what an attribute holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrType {
    /// Unused or rejected.
    Invalid,
    /// Present/absent.
    Flag,
    /// 8-bit unsigned.
    U8,
    /// 16-bit unsigned.
    U16,
    /// 32-bit unsigned.
    U32,
    /// 64-bit unsigned.
    U64,
    /// 8-bit signed.
    S8,
    /// 16-bit signed.
    S16,
    /// 32-bit signed.
    S32,
    /// 64-bit signed.
    S64,
    /// Bytes.
    Binary,
    /// Text, NUL optional.
    String,
    /// NUL-terminated text.
    NulString,
    /// A nested set.
    Nested,
    /// An array of nested sets.
    NestedArray,
    /// value/selector pair.
    Bitfield32,
    /// Variable-width signed.
    Sint,
    /// Variable-width unsigned.
    Uint,
    /// A type this decoder does not know (a newer kernel).
    Unknown(u32),
}

impl AttrType {
    fn from_raw(v: u32) -> Self {
        use AttrType::*;
        match v {
            0 => Invalid,
            1 => Flag,
            2 => U8,
            3 => U16,
            4 => U32,
            5 => U64,
            6 => S8,
            7 => S16,
            8 => S32,
            9 => S64,
            10 => Binary,
            11 => String,
            12 => NulString,
            13 => Nested,
            14 => NestedArray,
            15 => Bitfield32,
            16 => Sint,
            17 => Uint,
            n => Unknown(n),
        }
    }

    /// The name the kernel's YNL specs use.
    pub fn name(&self) -> &'static str {
        use AttrType::*;
        match self {
            Invalid => "invalid",
            Flag => "flag",
            U8 => "u8",
            U16 => "u16",
            U32 => "u32",
            U64 => "u64",
            S8 => "s8",
            S16 => "s16",
            S32 => "s32",
            S64 => "s64",
            Binary => "binary",
            String => "string",
            NulString => "nul-string",
            Nested => "nested",
            NestedArray => "nested-array",
            Bitfield32 => "bitfield32",
            Sint => "sint",
            Uint => "uint",
            Unknown(_) => "unknown",
        }
    }

    fn fixed_len(&self) -> Option<usize> {
        use AttrType::*;
        match self {
            U8 | S8 => Some(1),
            U16 | S16 => Some(2),
            U32 | S32 => Some(4),
            U64 | S64 | Bitfield32 => Some(8),
            _ => None,
        }
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for AttrType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// The policy of one attribute. As JSON: `{"type": "u32", "max-u": 10, ...}`
/// with absent bounds left out.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(rename_all = "kebab-case"))]
pub struct AttrPolicy {
    /// Its type.
    #[cfg_attr(feature = "serde", serde(rename = "type"))]
    pub kind: AttrType,
    /// Signed range.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub min_s: Option<i64>,
    /// Signed range.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub max_s: Option<i64>,
    /// Unsigned range.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub min_u: Option<u64>,
    /// Unsigned range.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub max_u: Option<u64>,
    /// Length range for binary and strings.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub min_len: Option<u32>,
    /// Length range for binary and strings.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub max_len: Option<u32>,
    /// The nested policy for nested types.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub policy_idx: Option<u32>,
    /// Highest attribute of the nested policy.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub policy_maxtype: Option<u32>,
    /// Valid bits of a bitfield32.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub bitfield32_mask: Option<u32>,
    /// Valid bits of an unsigned integer.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub mask: Option<u64>,
}

/// Which policy an op uses for `do` and for dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct OpPolicy {
    /// Policy index for `do`.
    #[cfg_attr(feature = "serde", serde(rename = "do"))]
    pub do_idx: Option<u32>,
    /// Policy index for dump.
    #[cfg_attr(feature = "serde", serde(rename = "dump"))]
    pub dump_idx: Option<u32>,
}

/// A family's policies, as GETPOLICY dumps them. As JSON:
/// `{"sets": {"0": {"1": {...}}}, "ops": {"1": {"do": 0, "dump": null}}}`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Policies {
    /// Policy index -> attribute number -> policy.
    pub sets: BTreeMap<u32, BTreeMap<u16, AttrPolicy>>,
    /// Op -> its policies.
    pub ops: BTreeMap<u32, OpPolicy>,
}

/// A request that its policy would refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("attribute {path}: {reason}")]
pub struct PolicyViolation {
    /// The attribute, as numbers from the outermost, e.g. "3.1".
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

fn u64_of(a: &crate::Attr<'_>) -> Result<u64, WireError> {
    a.uint()
}

impl Policies {
    /// Add what one GETPOLICY reply message (its attributes) says.
    pub fn absorb(&mut self, attrs: &[u8]) -> Result<(), WireError> {
        for attr in Attrs::new(attrs) {
            let attr = attr?;
            match attr.kind() {
                CTRL_ATTR_POLICY => {
                    for set in attr.nested() {
                        let set = set?;
                        let idx = u32::from(set.kind());
                        let entry = self.sets.entry(idx).or_default();
                        for a in set.nested() {
                            let a = a?;
                            entry.insert(a.kind(), decode_attr_policy(a.nested())?);
                        }
                    }
                }
                CTRL_ATTR_OP_POLICY => {
                    for op in attr.nested() {
                        let op = op?;
                        let mut p = OpPolicy::default();
                        for a in op.nested() {
                            let a = a?;
                            match a.kind() {
                                CTRL_ATTR_POLICY_DO => p.do_idx = Some(a.u32()?),
                                CTRL_ATTR_POLICY_DUMP => p.dump_idx = Some(a.u32()?),
                                _ => {}
                            }
                        }
                        self.ops.insert(u32::from(op.kind()), p);
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Check `attrs` against the policy of `op` (`do` or dump). An op the
    /// family published no policy for is not checked.
    pub fn validate(&self, op: u32, dump: bool, attrs: &[u8]) -> Result<(), PolicyViolation> {
        let Some(p) = self.ops.get(&op) else { return Ok(()) };
        let idx = if dump { p.dump_idx } else { p.do_idx };
        match idx {
            Some(idx) => self.validate_set(idx, None, attrs, ""),
            None if attrs.is_empty() => Ok(()),
            None => Err(PolicyViolation {
                path: "-".into(),
                reason: format!(
                    "op {op} takes no attributes as a {}",
                    if dump { "dump" } else { "do" }
                ),
            }),
        }
    }

    /// Check `attrs` against policy set `idx`. The kernel's dump leaves out
    /// some attributes it accepts (seen: mptcp_pm's big-endian `addr4`), so
    /// an attribute the dump does not describe is refused only when it lies
    /// above the set's known highest attribute (`maxtype`).
    fn validate_set(
        &self,
        idx: u32,
        maxtype: Option<u32>,
        attrs: &[u8],
        prefix: &str,
    ) -> Result<(), PolicyViolation> {
        let Some(set) = self.sets.get(&idx) else {
            return Ok(());
        };
        for attr in Attrs::new(attrs) {
            let attr = attr.map_err(|e| PolicyViolation {
                path: format!("{prefix}?"),
                reason: format!("malformed: {e}"),
            })?;
            let path = format!("{prefix}{}", attr.kind());
            let violation = |reason: String| PolicyViolation {
                path: path.clone(),
                reason,
            };
            let Some(pol) = set.get(&attr.kind()) else {
                match maxtype {
                    Some(max) if u32::from(attr.kind()) > max => {
                        return Err(violation(format!(
                            "above {max}, the highest attribute this set accepts"
                        )));
                    }
                    _ => continue,
                }
            };
            let len = attr.bytes().len();
            if let Some(n) = pol.kind.fixed_len()
                && len != n
            {
                return Err(violation(format!(
                    "{} needs {n} bytes, has {len}",
                    pol.kind.name()
                )));
            }
            match pol.kind {
                AttrType::Invalid => return Err(violation("rejected by this command's policy".into())),
                AttrType::Flag if len != 0 => return Err(violation("a flag carries no payload".into())),
                AttrType::U8 | AttrType::U16 | AttrType::U32 | AttrType::U64 | AttrType::Uint => {
                    let v = match pol.kind {
                        AttrType::U8 => attr.u8().map(u64::from),
                        AttrType::U16 => attr.u16().map(u64::from),
                        AttrType::U32 => attr.u32().map(u64::from),
                        _ => u64_of(&attr),
                    }
                    .map_err(|e| violation(e.to_string()))?;
                    if pol.min_u.is_some_and(|m| v < m) || pol.max_u.is_some_and(|m| v > m) {
                        return Err(violation(format!(
                            "value {v} outside {}..={}",
                            pol.min_u.unwrap_or(0),
                            pol.max_u.unwrap_or(u64::MAX)
                        )));
                    }
                    if pol.mask.is_some_and(|m| v & !m != 0) {
                        return Err(violation(format!(
                            "value {v:#x} has bits outside mask {:#x}",
                            pol.mask.unwrap_or(0)
                        )));
                    }
                }
                AttrType::S8 | AttrType::S16 | AttrType::S32 | AttrType::S64 | AttrType::Sint => {
                    let v = match pol.kind {
                        AttrType::S8 => attr.i8().map(i64::from),
                        AttrType::S16 => attr.i16().map(i64::from),
                        AttrType::S32 => attr.i32().map(i64::from),
                        _ => attr.sint(),
                    }
                    .map_err(|e| violation(e.to_string()))?;
                    if pol.min_s.is_some_and(|m| v < m) || pol.max_s.is_some_and(|m| v > m) {
                        return Err(violation(format!(
                            "value {v} outside {}..={}",
                            pol.min_s.unwrap_or(i64::MIN),
                            pol.max_s.unwrap_or(i64::MAX)
                        )));
                    }
                }
                AttrType::String | AttrType::NulString | AttrType::Binary => {
                    let text_len = if pol.kind == AttrType::Binary {
                        len
                    } else {
                        attr.bytes().iter().position(|&b| b == 0).unwrap_or(len)
                    };
                    if pol.kind == AttrType::NulString && !attr.bytes().contains(&0) {
                        return Err(violation("nul-string is not NUL-terminated".into()));
                    }
                    if pol.min_len.is_some_and(|m| (text_len as u64) < u64::from(m)) {
                        return Err(violation(format!(
                            "{text_len} bytes, fewer than {}",
                            pol.min_len.unwrap_or(0)
                        )));
                    }
                    if pol.max_len.is_some_and(|m| (text_len as u64) > u64::from(m)) {
                        return Err(violation(format!(
                            "{text_len} bytes, more than {}",
                            pol.max_len.unwrap_or(0)
                        )));
                    }
                }
                AttrType::Nested => {
                    if let Some(sub) = pol.policy_idx {
                        self.validate_set(sub, pol.policy_maxtype, attr.bytes(), &format!("{path}."))?;
                    }
                }
                AttrType::NestedArray => {
                    if let Some(sub) = pol.policy_idx {
                        for entry in Attrs::new(attr.bytes()) {
                            let entry = entry.map_err(|e| violation(format!("malformed array: {e}")))?;
                            self.validate_set(
                                sub,
                                pol.policy_maxtype,
                                entry.bytes(),
                                &format!("{path}[{}].", entry.kind()),
                            )?;
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn decode_attr_policy(attrs: Attrs<'_>) -> Result<AttrPolicy, WireError> {
    let mut p = AttrPolicy {
        kind: AttrType::Invalid,
        min_s: None,
        max_s: None,
        min_u: None,
        max_u: None,
        min_len: None,
        max_len: None,
        policy_idx: None,
        policy_maxtype: None,
        bitfield32_mask: None,
        mask: None,
    };
    for a in attrs {
        let a = a?;
        match a.kind() {
            TYPE => p.kind = AttrType::from_raw(a.u32()?),
            MIN_VALUE_S => p.min_s = Some(a.sint()?),
            MAX_VALUE_S => p.max_s = Some(a.sint()?),
            MIN_VALUE_U => p.min_u = Some(a.uint()?),
            MAX_VALUE_U => p.max_u = Some(a.uint()?),
            MIN_LENGTH => p.min_len = Some(a.u32()?),
            MAX_LENGTH => p.max_len = Some(a.u32()?),
            POLICY_IDX => p.policy_idx = Some(a.u32()?),
            POLICY_MAXTYPE => p.policy_maxtype = Some(a.u32()?),
            BITFIELD32_MASK => p.bitfield32_mask = Some(a.u32()?),
            MASK => p.mask = Some(a.uint()?),
            _ => {}
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AttrWriter;

    /// A GETPOLICY reply for a family whose op 1 takes attr 1 (u32 <= 10),
    /// attr 2 (string, max 4) and attr 3 (nested policy 1: attr 1 u8).
    fn sample() -> Policies {
        let mut w = AttrWriter::new();
        let pol = w.begin_nested(CTRL_ATTR_POLICY);
        let set0 = w.begin_nested(0);
        let a1 = w.begin_nested(1);
        w.put_u32(TYPE, 4).put_u64(MAX_VALUE_U, 10);
        w.end_nested(a1).unwrap();
        let a2 = w.begin_nested(2);
        w.put_u32(TYPE, 11).put_u32(MAX_LENGTH, 4);
        w.end_nested(a2).unwrap();
        let a3 = w.begin_nested(3);
        w.put_u32(TYPE, 13)
            .put_u32(POLICY_IDX, 1)
            .put_u32(POLICY_MAXTYPE, 2);
        w.end_nested(a3).unwrap();
        w.end_nested(set0).unwrap();
        let set1 = w.begin_nested(1);
        let b1 = w.begin_nested(1);
        w.put_u32(TYPE, 2);
        w.end_nested(b1).unwrap();
        w.end_nested(set1).unwrap();
        w.end_nested(pol).unwrap();
        let ops = w.begin_nested(CTRL_ATTR_OP_POLICY);
        let op1 = w.begin_nested(1);
        w.put_u32(CTRL_ATTR_POLICY_DO, 0);
        w.end_nested(op1).unwrap();
        w.end_nested(ops).unwrap();
        let mut p = Policies::default();
        p.absorb(&w.finish()).unwrap();
        p
    }

    #[test]
    fn decodes_sets_and_ops() {
        let p = sample();
        assert_eq!(p.sets[&0][&1].kind, AttrType::U32);
        assert_eq!(p.sets[&0][&1].max_u, Some(10));
        assert_eq!(p.sets[&0][&3].policy_idx, Some(1));
        assert_eq!(p.ops[&1].do_idx, Some(0));
    }

    #[test]
    fn validation_names_the_attribute() {
        let p = sample();
        let mut ok = AttrWriter::new();
        ok.put_u32(1, 7).put_str(2, "eth").unwrap();
        assert_eq!(p.validate(1, false, &ok.finish()), Ok(()));

        let mut w = AttrWriter::new();
        w.put_u32(1, 11);
        let e = p.validate(1, false, &w.finish()).unwrap_err();
        assert_eq!(e.to_string(), "attribute 1: value 11 outside 0..=10");

        let mut w = AttrWriter::new();
        w.put_str(2, "toolong").unwrap();
        assert_eq!(p.validate(1, false, &w.finish()).unwrap_err().path, "2");

        let mut w = AttrWriter::new();
        let n = w.begin_nested(3);
        w.put_u32(1, 1);
        w.end_nested(n).unwrap();
        let e = p.validate(1, false, &w.finish()).unwrap_err();
        assert_eq!(e.path, "3.1");
        assert!(e.reason.contains("u8 needs 1 bytes"));

        // Not described by the dump: passed to the kernel to judge, unless
        // above the nested set's known maxtype.
        let mut w = AttrWriter::new();
        w.put_u8(9, 1);
        assert_eq!(p.validate(1, false, &w.finish()), Ok(()));
        let mut w = AttrWriter::new();
        let n = w.begin_nested(3);
        w.put_u8(2, 1).put_u8(3, 1);
        w.end_nested(n).unwrap();
        let e = p.validate(1, false, &w.finish()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "attribute 3.3: above 2, the highest attribute this set accepts"
        );
        // An op without a published policy is not checked.
        assert_eq!(p.validate(2, false, &[1, 2, 3]), Ok(()));
    }
}
