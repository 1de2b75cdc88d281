//! The generic netlink controller (nlctrl): the family that resolves other
//! families' names to ids, ops and multicast groups.

use crate::WireError;
use crate::attr::{AttrWriter, Attrs};

/// CTRL_CMD_NEWFAMILY: a family registered (notification, and GETFAMILY's reply).
pub const CTRL_CMD_NEWFAMILY: u8 = 1;
/// CTRL_CMD_DELFAMILY: a family went away.
pub const CTRL_CMD_DELFAMILY: u8 = 2;
/// CTRL_CMD_GETFAMILY: look up one family (do) or all (dump).
pub const CTRL_CMD_GETFAMILY: u8 = 3;
/// CTRL_CMD_NEWMCAST_GRP: a multicast group was added.
pub const CTRL_CMD_NEWMCAST_GRP: u8 = 7;
/// CTRL_CMD_DELMCAST_GRP: a multicast group was removed.
pub const CTRL_CMD_DELMCAST_GRP: u8 = 8;
/// CTRL_CMD_GETPOLICY: attribute policies of a family.
pub const CTRL_CMD_GETPOLICY: u8 = 10;

/// CTRL_ATTR_FAMILY_ID (u16).
pub const CTRL_ATTR_FAMILY_ID: u16 = 1;
/// CTRL_ATTR_FAMILY_NAME (string).
pub const CTRL_ATTR_FAMILY_NAME: u16 = 2;
/// CTRL_ATTR_VERSION (u32).
pub const CTRL_ATTR_VERSION: u16 = 3;
/// CTRL_ATTR_HDRSIZE (u32).
pub const CTRL_ATTR_HDRSIZE: u16 = 4;
/// CTRL_ATTR_MAXATTR (u32).
pub const CTRL_ATTR_MAXATTR: u16 = 5;
/// CTRL_ATTR_OPS (nested array of CTRL_ATTR_OP_*).
pub const CTRL_ATTR_OPS: u16 = 6;
/// CTRL_ATTR_MCAST_GROUPS (nested array of CTRL_ATTR_MCAST_GRP_*).
pub const CTRL_ATTR_MCAST_GROUPS: u16 = 7;
/// CTRL_ATTR_OP_ID (u32).
pub const CTRL_ATTR_OP_ID: u16 = 1;
/// CTRL_ATTR_OP_FLAGS (u32).
pub const CTRL_ATTR_OP_FLAGS: u16 = 2;
/// CTRL_ATTR_MCAST_GRP_NAME (string).
pub const CTRL_ATTR_MCAST_GRP_NAME: u16 = 1;
/// CTRL_ATTR_MCAST_GRP_ID (u32).
pub const CTRL_ATTR_MCAST_GRP_ID: u16 = 2;

/// nlctrl's interface version to put in requests.
pub const CTRL_VERSION: u8 = 2;

/// One op of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpInfo {
    /// Command number.
    pub id: u32,
    /// GENL_* capability flags.
    pub flags: u32,
}

/// One multicast group of a family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McastGroup {
    /// Group name.
    pub name: String,
    /// Group id.
    pub id: u32,
}

/// A family as CTRL_CMD_NEWFAMILY describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FamilyInfo {
    /// Family name.
    pub name: String,
    /// Family id.
    pub id: u16,
    /// Interface version.
    pub version: u32,
    /// User header size.
    pub hdrsize: u32,
    /// Highest attribute number.
    pub maxattr: u32,
    /// Registered commands.
    pub ops: Vec<OpInfo>,
    /// Multicast groups.
    pub mcast_groups: Vec<McastGroup>,
}

impl FamilyInfo {
    /// Decode the attributes of a NEWFAMILY message (GETFAMILY reply or
    /// notification). Unknown attributes are skipped so newer kernels work.
    pub fn decode(attrs: &[u8]) -> Result<Self, WireError> {
        let mut info = FamilyInfo::default();
        for attr in Attrs::new(attrs) {
            let attr = attr?;
            match attr.kind() {
                CTRL_ATTR_FAMILY_ID => info.id = attr.u16()?,
                CTRL_ATTR_FAMILY_NAME => info.name = attr.str()?.to_owned(),
                CTRL_ATTR_VERSION => info.version = attr.u32()?,
                CTRL_ATTR_HDRSIZE => info.hdrsize = attr.u32()?,
                CTRL_ATTR_MAXATTR => info.maxattr = attr.u32()?,
                CTRL_ATTR_OPS => {
                    for op in attr.nested_array() {
                        let mut info_op = OpInfo { id: 0, flags: 0 };
                        for a in op? {
                            let a = a?;
                            match a.kind() {
                                CTRL_ATTR_OP_ID => info_op.id = a.u32()?,
                                CTRL_ATTR_OP_FLAGS => info_op.flags = a.u32()?,
                                _ => {}
                            }
                        }
                        info.ops.push(info_op);
                    }
                }
                CTRL_ATTR_MCAST_GROUPS => {
                    for grp in attr.nested_array() {
                        let mut g = McastGroup {
                            name: String::new(),
                            id: 0,
                        };
                        for a in grp? {
                            let a = a?;
                            match a.kind() {
                                CTRL_ATTR_MCAST_GRP_NAME => g.name = a.str()?.to_owned(),
                                CTRL_ATTR_MCAST_GRP_ID => g.id = a.u32()?,
                                _ => {}
                            }
                        }
                        info.mcast_groups.push(g);
                    }
                }
                _ => {}
            }
        }
        Ok(info)
    }

    /// Encode as NEWFAMILY attributes (for tests and fake kernels).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = AttrWriter::new();
        w.put_u16(CTRL_ATTR_FAMILY_ID, self.id);
        // Family names are at most GENL_NAMSIZ (16) bytes.
        let _ = w.put_str(CTRL_ATTR_FAMILY_NAME, &self.name);
        w.put_u32(CTRL_ATTR_VERSION, self.version)
            .put_u32(CTRL_ATTR_HDRSIZE, self.hdrsize)
            .put_u32(CTRL_ATTR_MAXATTR, self.maxattr);
        if !self.ops.is_empty() {
            let ops = w.begin_nested(CTRL_ATTR_OPS);
            for (i, op) in self.ops.iter().enumerate() {
                let entry = w.begin_nested(i as u16 + 1);
                w.put_u32(CTRL_ATTR_OP_ID, op.id)
                    .put_u32(CTRL_ATTR_OP_FLAGS, op.flags);
                let _ = w.end_nested(entry);
            }
            let _ = w.end_nested(ops);
        }
        if !self.mcast_groups.is_empty() {
            let groups = w.begin_nested(CTRL_ATTR_MCAST_GROUPS);
            for (i, g) in self.mcast_groups.iter().enumerate() {
                let entry = w.begin_nested(i as u16 + 1);
                let _ = w.put_str(CTRL_ATTR_MCAST_GRP_NAME, &g.name);
                w.put_u32(CTRL_ATTR_MCAST_GRP_ID, g.id);
                let _ = w.end_nested(entry);
            }
            let _ = w.end_nested(groups);
        }
        w.finish()
    }

    /// The id of the multicast group called `name`.
    pub fn group_id(&self, name: &str) -> Option<u32> {
        self.mcast_groups.iter().find(|g| g.name == name).map(|g| g.id)
    }
}

/// The attributes of a GETFAMILY request for `name`.
pub fn getfamily_by_name(name: &str) -> Result<Vec<u8>, crate::attr::TooLarge> {
    let mut w = AttrWriter::new();
    w.put_str(CTRL_ATTR_FAMILY_NAME, name)?;
    Ok(w.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_info_round_trips() {
        let fam = FamilyInfo {
            name: "genl_test".into(),
            id: 0x1c,
            version: 1,
            hdrsize: 0,
            maxattr: 1,
            ops: vec![OpInfo { id: 1, flags: 0x2 }],
            mcast_groups: (0..3)
                .map(|i| McastGroup {
                    name: format!("genl_mcgrp{i}"),
                    id: 20 + i,
                })
                .collect(),
        };
        let decoded = FamilyInfo::decode(&fam.encode()).unwrap();
        assert_eq!(decoded, fam);
        assert_eq!(decoded.group_id("genl_mcgrp2"), Some(22));
    }
}
