//! The fleet CLI's work: find the gateways on the bus (`$SRV.PING`) and
//! call an op on some or all of them, gathering one answer per host and
//! naming the hosts that failed or stayed silent.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

use super::calls::{CallAccess, call_subject};
use super::config::{ALL_HOSTS, BusConfig};
use super::service::{SERVICE_NAME, meta};

/// Why the fleet CLI could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The credentials or TLS settings are unusable.
    #[error(transparent)]
    Options(#[from] super::connection::BusError),
    /// No server answered.
    #[error("cannot reach NATS at {urls:?}: {why} (check [bus] urls and credentials in the configuration)")]
    Connect {
        /// The servers tried.
        urls: Vec<String>,
        /// The client's error.
        why: String,
    },
    /// The client could not subscribe or publish.
    #[error("NATS: {0}")]
    Nats(String),
}

/// A gateway found on the bus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Host {
    /// Its name on the bus.
    pub host: String,
    /// Its service instance id.
    pub id: String,
    /// Its version.
    pub version: String,
    /// Its subject prefix.
    pub prefix: String,
    /// `read`, `write`, or `off` (calls not served).
    pub calls: String,
}

/// A connection for the CLI: fails at once if no server answers (the
/// gateway's own connection retries forever instead). Errors the server
/// reports (permission violations) are kept for the summary.
pub struct FleetClient {
    client: async_nats::Client,
    server_errors: Arc<Mutex<Vec<String>>>,
}

impl FleetClient {
    /// Connect with `[bus]`'s servers, credentials and TLS.
    pub async fn connect(config: &BusConfig) -> Result<Self, FleetError> {
        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        let client = super::connection::connect_options(config)
            .await?
            .name("genl-gateway fleet CLI")
            .connection_timeout(config.connect_timeout)
            .event_callback(move |event| {
                let sink = sink.clone();
                async move {
                    if let async_nats::Event::ServerError(e) = event {
                        let mut v = sink.lock().unwrap_or_else(PoisonError::into_inner);
                        // Bounded: a summary needs the first few only.
                        if v.len() < 16 {
                            v.push(e.to_string());
                        }
                    }
                }
            })
            .connect(config.urls.clone())
            .await
            .map_err(|e| FleetError::Connect {
                urls: config.urls.clone(),
                why: e.to_string(),
            })?;
        Ok(Self {
            client,
            server_errors: errors,
        })
    }

    /// Errors the server reported so far (e.g. a permissions violation
    /// for a subject this user may not publish to).
    pub fn server_errors(&self) -> Vec<String> {
        self.server_errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Publish `payload` to each of `subjects` with one reply inbox, and
    /// hand every reply to `on_reply` until `deadline` or until it
    /// answers false.
    async fn scatter(
        &self,
        subjects: &[String],
        payload: &[u8],
        deadline: Instant,
        mut on_reply: impl FnMut(&async_nats::Message) -> bool,
    ) -> Result<(), FleetError> {
        let inbox = self.client.new_inbox();
        let mut replies = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| FleetError::Nats(e.to_string()))?;
        for s in subjects {
            self.client
                .publish_with_reply(s.clone(), inbox.clone(), payload.to_vec().into())
                .await
                .map_err(|e| FleetError::Nats(e.to_string()))?;
        }
        self.client
            .flush()
            .await
            .map_err(|e| FleetError::Nats(e.to_string()))?;
        while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, replies.next()).await {
            if !on_reply(&msg) {
                break;
            }
        }
        Ok(())
    }

    /// The gateways answering `$SRV.PING` within `window`, by host name.
    pub async fn hosts(&self, window: Duration) -> Result<Vec<Host>, FleetError> {
        let mut found = BTreeMap::new();
        let subject = format!("$SRV.PING.{SERVICE_NAME}");
        self.scatter(&[subject], b"", Instant::now() + window, |msg| {
            if let Ok(pong) = serde_json::from_slice::<async_nats::service::PingResponse>(&msg.payload) {
                let m = |k: &str| pong.metadata.get(k).cloned().unwrap_or_default();
                let calls = if m(meta::CALLS) == "false" {
                    "off".to_owned()
                } else {
                    m(meta::ACCESS)
                };
                let host = Host {
                    host: m(meta::HOST),
                    id: pong.id,
                    version: pong.version,
                    prefix: m(meta::PREFIX),
                    calls,
                };
                found.insert((host.host.clone(), host.id.clone()), host);
            }
            true
        })
        .await?;
        Ok(found.into_values().collect())
    }

    /// Call `op` of `family` with `input` on the hosts `known` that match
    /// `glob` (all of them, through `PREFIX.all...`, when `glob` is `*`),
    /// printing each answer through `on_answer` as it arrives.
    pub async fn call(
        &self,
        request: &FleetCall<'_>,
        known: &[Host],
        mut on_answer: impl FnMut(&Value),
    ) -> Result<Summary, FleetError> {
        let prefix = request.prefix;
        let expected: BTreeSet<String> = known
            .iter()
            .filter(|h| h.prefix == prefix)
            .map(|h| h.host.clone())
            .chain(request.expect.iter().cloned())
            .filter(|h| glob_match(request.glob, h))
            .collect();
        let subject = |target: &str| call_subject(prefix, target, request.access, request.family, request.op);
        let subjects: Vec<String> = if request.glob == "*" {
            vec![subject(ALL_HOSTS)]
        } else {
            expected.iter().map(|h| subject(h)).collect()
        };
        let mut summary = Summary::default();
        let mut heard = BTreeSet::new();
        if !subjects.is_empty() {
            self.scatter(
                &subjects,
                request.input.as_bytes(),
                Instant::now() + request.timeout,
                |msg| {
                    let Ok(answer) = serde_json::from_slice::<Value>(&msg.payload) else {
                        // A "no responders" status (empty, with headers) or noise.
                        return true;
                    };
                    let Some(host) = answer["host"].as_str().map(str::to_owned) else {
                        return true;
                    };
                    if !glob_match(request.glob, &host) || !heard.insert(host.clone()) {
                        return true;
                    }
                    on_answer(&answer);
                    if answer["status"].as_u64() == Some(200) {
                        summary.answered.push(host);
                    } else {
                        summary.failed.push(host);
                    }
                    // Done once every expected host answered; with none
                    // expected (nothing discovered), wait for whoever answers.
                    expected.is_empty() || !expected.is_subset(&heard)
                },
            )
            .await?;
        }
        summary.silent = expected.difference(&heard).cloned().collect();
        summary.answered.sort();
        summary.failed.sort();
        summary.server_errors = self.server_errors();
        Ok(summary)
    }
}

/// One `fleet call`.
#[derive(Debug, Clone)]
pub struct FleetCall<'a> {
    /// The subject prefix (`[bus] prefix`).
    pub prefix: &'a str,
    /// The family.
    pub family: &'a str,
    /// The op.
    pub op: &'a str,
    /// The JSON input, sent as it is (each host checks it).
    pub input: &'a str,
    /// Which hosts: a glob over host names (`*`, `?`).
    pub glob: &'a str,
    /// Hosts that must answer even if discovery did not find them (from
    /// an inventory): silent if they do not.
    pub expect: &'a [String],
    /// `read` or `write` subject.
    pub access: CallAccess,
    /// How long to wait for answers.
    pub timeout: Duration,
}

/// Who answered, who failed, who was silent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Hosts that answered with status 200.
    pub answered: Vec<String>,
    /// Hosts that answered with an error document.
    pub failed: Vec<String>,
    /// Hosts found by discovery or expected (and matching) that did not
    /// answer in time.
    pub silent: Vec<String>,
    /// Errors the NATS server reported to this client (permissions).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub server_errors: Vec<String>,
}

impl Summary {
    /// Whether every addressed host answered without error (and at least
    /// one answered).
    pub fn all_ok(&self) -> bool {
        !self.answered.is_empty()
            && self.failed.is_empty()
            && self.silent.is_empty()
            && self.server_errors.is_empty()
    }
}

/// Whether `name` matches `glob` (`*`: any run of characters, `?`: one).
pub fn glob_match(glob: &str, name: &str) -> bool {
    let (g, n): (Vec<char>, Vec<char>) = (glob.chars().collect(), name.chars().collect());
    // Iterative wildcard matching with one backtrack point.
    let (mut gi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match g.get(gi) {
            Some('*') => {
                star = Some((gi, ni));
                gi += 1;
            }
            Some(c) if *c == '?' || *c == n[ni] => {
                gi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sg, sn)) => {
                    gi = sg + 1;
                    ni = sn + 1;
                    star = Some((sg, sn + 1));
                }
                None => return false,
            },
        }
    }
    g[gi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("*", "web01"));
        assert!(glob_match("web*", "web01"));
        assert!(glob_match("w?b0*1", "web001"));
        assert!(glob_match("*-a", "host-a"));
        assert!(!glob_match("web*", "db01"));
        assert!(!glob_match("web?", "web"));
        assert!(glob_match("host-a", "host-a"));
        assert!(!glob_match("host-a", "host-ab"));
    }
}
