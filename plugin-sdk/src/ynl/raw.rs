//! The YAML shape of a YNL spec, as the kernel's `genetlink*.yaml` schemas
//! define it. Only what decoding and encoding need is read; documentation
//! and C code-generation keys are ignored.

use serde::Deserialize;

/// A number, or the name of a constant (`u32-max`, `wg-key-len`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum NumOrName {
    Signed(i64),
    Unsigned(u64),
    Name(String),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct Spec {
    pub name: String,
    pub protocol: Option<String>,
    #[serde(default)]
    pub definitions: Vec<Definition>,
    #[serde(default)]
    pub attribute_sets: Vec<AttrSet>,
    pub operations: Option<Operations>,
    pub mcast_groups: Option<McastGroups>,
    #[serde(default)]
    pub sub_messages: Vec<SubMessage>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct Definition {
    pub name: String,
    pub name_prefix: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
    pub value: Option<NumOrName>,
    pub value_start: Option<NumOrName>,
    #[serde(default)]
    pub entries: Vec<EnumEntry>,
    #[serde(default)]
    pub members: Vec<Member>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum EnumEntry {
    Name(String),
    Full { name: String, value: Option<NumOrName> },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct Member {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub byte_order: Option<String>,
    #[serde(rename = "enum")]
    pub enumeration: Option<String>,
    #[serde(default)]
    pub enum_as_flags: bool,
    pub len: Option<NumOrName>,
    pub display_hint: Option<String>,
    #[serde(rename = "struct")]
    pub structure: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct AttrSet {
    pub name: String,
    pub subset_of: Option<String>,
    #[serde(default)]
    pub attributes: Vec<Attr>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct Attr {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub value: Option<NumOrName>,
    pub byte_order: Option<String>,
    #[serde(default)]
    pub multi_attr: bool,
    pub nested_attributes: Option<String>,
    #[serde(rename = "enum")]
    pub enumeration: Option<String>,
    #[serde(default)]
    pub enum_as_flags: bool,
    pub display_hint: Option<String>,
    #[serde(rename = "struct")]
    pub structure: Option<String>,
    pub sub_type: Option<String>,
    pub sub_message: Option<String>,
    pub selector: Option<String>,
    #[serde(default)]
    pub type_value: Vec<String>,
    pub checks: Option<Checks>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct Checks {
    pub min: Option<NumOrName>,
    pub max: Option<NumOrName>,
    pub min_len: Option<NumOrName>,
    pub max_len: Option<NumOrName>,
    pub exact_len: Option<NumOrName>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct Operations {
    pub enum_model: Option<String>,
    pub fixed_header: Option<String>,
    #[serde(default)]
    pub list: Vec<Operation>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct Operation {
    pub name: String,
    pub value: Option<NumOrName>,
    pub attribute_set: Option<String>,
    pub fixed_header: Option<String>,
    #[serde(default)]
    pub flags: Vec<String>,
    #[serde(rename = "do")]
    pub do_: Option<OpMode>,
    pub dump: Option<OpMode>,
    pub notify: Option<String>,
    pub event: Option<Message>,
    pub mcgrp: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct OpMode {
    pub request: Option<Message>,
    pub reply: Option<Message>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct Message {
    pub value: Option<NumOrName>,
    #[serde(default)]
    pub attributes: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct McastGroups {
    #[serde(default)]
    pub list: Vec<McastGroup>,
}

#[derive(Debug, Deserialize)]
pub(super) struct McastGroup {
    pub name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct SubMessage {
    pub name: String,
    #[serde(default)]
    pub formats: Vec<SubMessageFormat>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct SubMessageFormat {
    pub value: String,
    pub fixed_header: Option<String>,
    pub attribute_set: Option<String>,
}
