//! The YNL engine: the kernel's YAML netlink specs (YNL,
//! `Documentation/netlink/specs/`) turned into decoders and encoders at run
//! time, so a family is served from its spec instead of hand-copied tables.
//!
//! ```
//! use genl_plugin_sdk::ynl::Spec;
//! let spec = Spec::load(include_str!("../../../ynl-specs/netdev.yaml")).unwrap();
//! let op = spec.op("dev-get").unwrap();
//! assert_eq!(op.request_value, Some(1));
//! let bytes = spec.encode_request("dev", &["ifindex".into()], None, &serde_json::json!({"ifindex": 1})).unwrap();
//! assert_eq!(spec.decode_attrs("dev", &bytes).unwrap()["ifindex"], 1);
//! ```

#[cfg(feature = "bundled-specs")]
pub mod bundled;
mod decode;
mod encode;
mod json_text;
mod raw;
pub mod schema;
mod service;
mod spec;

pub use decode::{DecodeError, MessageShape, unknown_key};
pub use encode::EncodeError;
pub use service::{ClientOp, Mode, Service};
pub use spec::{
    AttrDef, AttrKind, AttrSet, Checks, DisplayHint, EnumDef, MemberDef, OpMode, Operation, Protocol, Spec,
    SpecError, StructDef, SubMessageFormat,
};
