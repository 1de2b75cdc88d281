//! Family resolution through nlctrl: name to id, version, ops and multicast
//! groups, with a cache the router reads on every call.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use genl_wire::consts::GENL_ID_CTRL;
use genl_wire::ctrl::{CTRL_CMD_GETFAMILY, CTRL_CMD_GETPOLICY, CTRL_VERSION, getfamily_by_name};
use genl_wire::policy::Policies;
use genl_wire::{FamilyInfo, GenlHeader};

use crate::netlink::{OwnedMessage, RequestError, Requester};

/// Why a family could not be resolved.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ResolveError {
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
    cache: RwLock<HashMap<String, Arc<FamilyInfo>>>,
    policies: RwLock<HashMap<String, Arc<Policies>>>,
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
            cache: RwLock::default(),
            policies: RwLock::default(),
        }
    }

    /// The cached entry for `name`, if resolved before and still present.
    pub fn cached(&self, name: &str) -> Option<Arc<FamilyInfo>> {
        self.cache.read().ok()?.get(name).cloned()
    }

    /// Ask the kernel for `name` and refresh the cache.
    pub async fn resolve(&self, name: &str) -> Result<Arc<FamilyInfo>, ResolveError> {
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
        let info = Arc::new(info);
        if let Ok(mut c) = self.cache.write() {
            let previous = c.insert(name.to_owned(), info.clone());
            if previous.is_some_and(|p| p.id != info.id || p.version != info.version) {
                // Re-registered: its policies may have changed with it.
                self.drop_policies(name);
            }
        }
        Ok(info)
    }

    /// The attribute policies of `name` (every op), cached until the family
    /// goes away or re-registers. A family that publishes no policies has an
    /// empty set.
    pub async fn policies(&self, name: &str) -> Result<Arc<Policies>, ResolveError> {
        if let Some(p) = self.policies.read().ok().and_then(|c| c.get(name).cloned()) {
            return Ok(p);
        }
        let attrs = getfamily_by_name(name).map_err(|_| ResolveError::Absent(name.to_owned()))?;
        let genl = GenlHeader {
            cmd: CTRL_CMD_GETPOLICY,
            version: CTRL_VERSION,
        };
        let mut policies = Policies::default();
        match self.requester.dump(GENL_ID_CTRL, genl, &attrs).await {
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
        if let Ok(mut c) = self.policies.write() {
            c.insert(name.to_owned(), policies.clone());
        }
        Ok(policies)
    }

    fn drop_policies(&self, name: &str) {
        if let Ok(mut c) = self.policies.write() {
            c.remove(name);
        }
    }

    /// Every family the kernel has right now (a fresh GETFAMILY dump).
    pub async fn list(&self) -> Result<Vec<FamilyInfo>, RequestError> {
        let replies = self.requester.dump(GENL_ID_CTRL, GETFAMILY, &[]).await?;
        replies.iter().map(decode).collect()
    }

    /// Drop `name` from the cache (it went away).
    pub fn forget(&self, name: &str) {
        if let Ok(mut c) = self.cache.write() {
            c.remove(name);
        }
        self.drop_policies(name);
    }
}
