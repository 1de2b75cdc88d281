//! Family resolution through nlctrl: name to id, version, ops and multicast
//! groups, with a cache the router reads on every call.
//!
//! Names come from clients (`GET /v1/families/{name}`), so each is checked
//! against what the kernel can ever accept before any lookup, and every
//! cache has a fixed capacity (docs/decisions/0009-bounded-resolver-caches.md).

mod cache;

use std::sync::Arc;

use genl_wire::consts::GENL_ID_CTRL;
use genl_wire::ctrl::{CTRL_CMD_GETFAMILY, CTRL_CMD_GETPOLICY, CTRL_VERSION, getfamily_by_name};
use genl_wire::policy::Policies;
use genl_wire::{FamilyInfo, GenlHeader};

use crate::netlink::{OwnedMessage, RequestError, Requester};

pub use cache::BoundedCache;

/// GENL_NAMSIZ from <linux/genetlink.h>: a family name with its NUL.
pub const GENL_NAMSIZ: usize = 16;

/// Most families the resolver remembers. The kernel registers a few dozen;
/// only names it answered for are cached, so this is never reached in
/// practice, and bounds the map if it ever were.
pub const FAMILY_CACHE_CAPACITY: usize = 256;

/// Most attribute-policy sets the resolver remembers (each can be tens of
/// KiB); the least recently used is dropped and fetched again when needed.
pub const POLICY_CACHE_CAPACITY: usize = 64;

/// Families the kernel answers in every network namespace but whose
/// notifications it sends only to sockets in the initial one: TASKSTATS
/// sends exit records with `genlmsg_unicast(&init_net, ...)`
/// (kernel/taskstats.c, `send_cpu_listeners`). Their data is about tasks,
/// not about a namespace, so their listener is opened in the gateway's own
/// namespace even when `[netlink] netns` points elsewhere.
pub const INITIAL_NETNS_NOTIFIERS: &[&str] = &["TASKSTATS"];

/// Whether `family` sends its notifications only in the initial namespace.
pub fn notifies_only_initial_netns(family: &str) -> bool {
    INITIAL_NETNS_NOTIFIERS.contains(&family)
}

/// Why a string can never name a generic netlink family.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidFamilyName {
    /// Nothing at all.
    #[error("a family name cannot be empty")]
    Empty,
    /// Longer than the kernel's GENL_NAMSIZ allows.
    #[error("family name {name:?} is {len} bytes; the kernel's limit is {} (GENL_NAMSIZ {GENL_NAMSIZ} with its NUL)", GENL_NAMSIZ - 1)]
    TooLong {
        /// The name (escaped when shown).
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// Contains NUL or another control character, which the kernel would
    /// cut the name at or no family ever has.
    #[error("family name {name:?} contains a control character (byte {at}); family names are printable")]
    ControlCharacter {
        /// The name (escaped when shown).
        name: String,
        /// Byte offset of the first control character.
        at: usize,
    },
}

/// A string the kernel could accept as a family name: 1 to 15 bytes, no
/// NUL or other control character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FamilyName<'a>(&'a str);

impl<'a> FamilyName<'a> {
    /// Check `name`; nothing is looked up.
    pub fn parse(name: &'a str) -> Result<Self, InvalidFamilyName> {
        if name.is_empty() {
            return Err(InvalidFamilyName::Empty);
        }
        if let Some((at, _)) = name.char_indices().find(|(_, c)| c.is_control()) {
            return Err(InvalidFamilyName::ControlCharacter {
                name: name.to_owned(),
                at,
            });
        }
        if name.len() >= GENL_NAMSIZ {
            return Err(InvalidFamilyName::TooLong {
                name: name.to_owned(),
                len: name.len(),
            });
        }
        Ok(Self(name))
    }

    /// The name.
    pub fn as_str(&self) -> &'a str {
        self.0
    }
}

/// Why a family could not be resolved.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ResolveError {
    /// The name can never be a family's; nothing was asked of the kernel.
    #[error("{0}")]
    InvalidName(#[from] InvalidFamilyName),
    /// The kernel has no family of that name.
    #[error("the kernel has no generic netlink family '{0}' (see `genl ctrl list`; is its module loaded?)")]
    Absent(String),
    /// The lookup itself failed.
    #[error("looking up family '{name}': {source}")]
    Request {
        /// The family.
        name: String,
        /// What failed.
        source: RequestError,
    },
}

/// Resolves families and caches what it learned.
pub struct FamilyResolver {
    requester: Arc<Requester>,
    cache: BoundedCache<Arc<FamilyInfo>>,
    policies: BoundedCache<Arc<Policies>>,
}

/// How full the resolver's caches are, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSizes {
    /// Families cached.
    pub families: usize,
    /// Policy sets cached.
    pub policies: usize,
}

const GETFAMILY: GenlHeader = GenlHeader {
    cmd: CTRL_CMD_GETFAMILY,
    version: CTRL_VERSION,
};

fn decode(msg: &OwnedMessage) -> Result<FamilyInfo, RequestError> {
    let payload = msg.payload.get(GenlHeader::SIZE..).unwrap_or_default();
    FamilyInfo::decode(payload).map_err(|e| RequestError::Io(format!("malformed GETFAMILY reply: {e}")))
}

impl FamilyResolver {
    /// A resolver that asks the kernel through `requester`.
    pub fn new(requester: Arc<Requester>) -> Self {
        Self {
            requester,
            cache: BoundedCache::new(FAMILY_CACHE_CAPACITY),
            policies: BoundedCache::new(POLICY_CACHE_CAPACITY),
        }
    }

    /// How many entries each cache holds now.
    pub fn cache_sizes(&self) -> CacheSizes {
        CacheSizes {
            families: self.cache.len(),
            policies: self.policies.len(),
        }
    }

    /// The cached entry for `name`, if resolved before and still present.
    pub fn cached(&self, name: &str) -> Option<Arc<FamilyInfo>> {
        self.cache.get(FamilyName::parse(name).ok()?.as_str())
    }

    /// Ask the kernel for `name` and refresh the cache. A name the kernel
    /// can never accept is refused before anything is sent or cached.
    pub async fn resolve(&self, name: &str) -> Result<Arc<FamilyInfo>, ResolveError> {
        let name = FamilyName::parse(name)?.as_str();
        let attrs = getfamily_by_name(name).map_err(|_| ResolveError::Absent(name.to_owned()))?;
        let replies = match self
            .requester
            .do_request(GENL_ID_CTRL, GETFAMILY, 0, &attrs)
            .await
        {
            Ok(r) => r,
            Err(RequestError::Kernel(e)) if e.errno == libc::ENOENT => {
                self.forget(name);
                return Err(ResolveError::Absent(name.to_owned()));
            }
            Err(source) => {
                return Err(ResolveError::Request {
                    name: name.to_owned(),
                    source,
                });
            }
        };
        let info = replies
            .first()
            .ok_or_else(|| RequestError::Io("GETFAMILY acknowledged without a reply".into()))
            .and_then(decode)
            .map_err(|source| ResolveError::Request {
                name: name.to_owned(),
                source,
            })?;
        if info.name != name {
            // The kernel matches names exactly; an answer for another
            // family is not one to remember under this name.
            return Err(ResolveError::Absent(name.to_owned()));
        }
        let info = Arc::new(info);
        let previous = self.cache.insert(name, info.clone());
        if previous.is_some_and(|p| p.id != info.id || p.version != info.version) {
            // Re-registered: its policies may have changed with it.
            self.policies.remove(name);
        }
        Ok(info)
    }

    /// The attribute policies of `name` (every op), cached until the family
    /// goes away or re-registers. A family that publishes no policies has an
    /// empty set.
    pub async fn policies(&self, name: &str) -> Result<Arc<Policies>, ResolveError> {
        let name = FamilyName::parse(name)?.as_str();
        if let Some(p) = self.policies.get(name) {
            return Ok(p);
        }
        let attrs = getfamily_by_name(name).map_err(|_| ResolveError::Absent(name.to_owned()))?;
        let genl = GenlHeader {
            cmd: CTRL_CMD_GETPOLICY,
            version: CTRL_VERSION,
        };
        let mut policies = Policies::default();
        // Boxed: a cache miss is rare, and every plugin request's future
        // would otherwise carry this dump's state (see
        // `plugin::host_api::KernelAccess::family_info`).
        match Box::pin(self.requester.dump(GENL_ID_CTRL, genl, &attrs)).await {
            Ok(replies) => {
                for r in &replies {
                    let payload = r.payload.get(GenlHeader::SIZE..).unwrap_or_default();
                    policies.absorb(payload).map_err(|e| ResolveError::Request {
                        name: name.to_owned(),
                        source: RequestError::Io(format!("malformed GETPOLICY reply: {e}")),
                    })?;
                }
            }
            Err(RequestError::Kernel(e)) if e.errno == libc::ENOENT => {
                return Err(ResolveError::Absent(name.to_owned()));
            }
            // Families without policies answer EOPNOTSUPP or ENODATA.
            Err(RequestError::Kernel(e)) if e.errno == libc::EOPNOTSUPP || e.errno == libc::ENODATA => {}
            Err(source) => {
                return Err(ResolveError::Request {
                    name: name.to_owned(),
                    source,
                });
            }
        }
        let policies = Arc::new(policies);
        self.policies.insert(name, policies.clone());
        Ok(policies)
    }

    /// Every family the kernel has right now (a fresh GETFAMILY dump).
    pub async fn list(&self) -> Result<Vec<FamilyInfo>, RequestError> {
        let replies = self.requester.dump(GENL_ID_CTRL, GETFAMILY, &[]).await?;
        replies.iter().map(decode).collect()
    }

    /// Drop `name` from the cache (it went away).
    pub fn forget(&self, name: &str) {
        self.cache.remove(name);
        self.policies.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_kernel_can_never_accept_are_refused() {
        // GENL_NAMSIZ is 16 in <linux/genetlink.h>: 15 bytes and a NUL.
        assert!(FamilyName::parse("abcdefghijklmno").is_ok());
        assert!(matches!(
            FamilyName::parse("abcdefghijklmnop"),
            Err(InvalidFamilyName::TooLong { len: 16, .. })
        ));
        assert_eq!(FamilyName::parse(""), Err(InvalidFamilyName::Empty));
        assert!(matches!(
            FamilyName::parse("ethtool\0xxxxxxx"),
            Err(InvalidFamilyName::ControlCharacter { at: 7, .. })
        ));
        assert!(matches!(
            FamilyName::parse("eth\ntool"),
            Err(InvalidFamilyName::ControlCharacter { at: 3, .. })
        ));
        assert!(FamilyName::parse("TASKSTATS").is_ok());
    }
}
