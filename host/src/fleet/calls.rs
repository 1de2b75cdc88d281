//! Calls from the fleet: the gateway answers requests on
//! `PREFIX.HOST.call.ACCESS.FAMILY.OP` (this host) and
//! `PREFIX.all.call.ACCESS.FAMILY.OP` (every host answers: plain
//! subscriptions, no queue group, so a request there is scatter-gather).
//!
//! Each call runs through the HTTP API's own path ([`crate::api::run_call`]:
//! strict JSON, input schema, the plugin, output check) and answers
//! `{"host", "family", "op", "status": 200, "output"}` or
//! `{"host", "family", "op", "status", "error"}` with the status and error
//! document the HTTP API would have answered. Access is `[bus.calls]`'s
//! (a scope like an API token's), and a write op also needs the family
//! file's `[bus] write = true`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::config::ALL_HOSTS;
use crate::api::{ApiError, ErrorCode};
use crate::config::Access;
use crate::gateway::Gateway;

/// The token after the host in a call subject.
pub const CALL_TOKEN: &str = "call";

/// The access token of a call subject: read and write are tokens of their
/// own so NATS permissions can grant one without the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CallAccess {
    /// `read`: only ops that do not change kernel state.
    Read,
    /// `write`: any op (read ops are served here too).
    Write,
}

impl CallAccess {
    /// The subject token.
    pub fn as_str(self) -> &'static str {
        match self {
            CallAccess::Read => "read",
            CallAccess::Write => "write",
        }
    }

    fn parse(token: &str) -> Option<Self> {
        match token {
            "read" => Some(CallAccess::Read),
            "write" => Some(CallAccess::Write),
            _ => None,
        }
    }
}

/// The subject of a call of `op` of `family` on `target` (a host's name,
/// or [`ALL_HOSTS`]).
pub fn call_subject(prefix: &str, target: &str, access: CallAccess, family: &str, op: &str) -> String {
    format!("{prefix}.{target}.{CALL_TOKEN}.{}.{family}.{op}", access.as_str())
}

/// A call subject, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSubject {
    /// The host it addresses, or [`ALL_HOSTS`].
    pub target: String,
    /// The access token.
    pub access: CallAccess,
    /// The family.
    pub family: String,
    /// The op.
    pub op: String,
}

/// Parse a call subject under `prefix`; the message says what is wrong.
pub fn parse_call_subject(prefix: &str, subject: &str) -> Result<CallSubject, String> {
    let shape = format!("{prefix}.HOST.{CALL_TOKEN}.read|write.FAMILY.OP");
    let rest = subject
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('.'))
        .ok_or_else(|| format!("'{subject}' is not under the prefix '{prefix}'; call {shape}"))?;
    let tokens: Vec<&str> = rest.split('.').collect();
    let [target, call, access, family, op] = tokens.as_slice() else {
        return Err(format!(
            "'{subject}' is not a call subject: it has {} tokens after the prefix, a call has 5: {shape}",
            tokens.len()
        ));
    };
    if *call != CALL_TOKEN {
        return Err(format!("'{subject}' is not a call subject; call {shape}"));
    }
    let access = CallAccess::parse(access).ok_or_else(|| {
        format!("'{access}' in '{subject}' is not an access level: use 'read' or 'write' ({shape})")
    })?;
    Ok(CallSubject {
        target: (*target).to_owned(),
        access,
        family: (*family).to_owned(),
        op: (*op).to_owned(),
    })
}

/// Counters of bus calls, for `/metrics` and `$SRV.STATS`.
#[derive(Debug, Default)]
pub struct CallStats {
    /// Calls received (with a reply subject).
    pub received: AtomicU64,
    /// Calls answered with an error document (busy and refused included).
    pub errors: AtomicU64,
    /// Calls refused as busy.
    pub busy: AtomicU64,
    /// Messages without a reply subject (nobody to answer; dropped).
    pub no_reply: AtomicU64,
}

/// Start answering calls from the bus: subscribes (the client queues the
/// subscriptions until it is connected and renews them on reconnect) and
/// serves in a background task. Does nothing without `[bus]` or with
/// `[bus.calls] enabled = false`.
pub fn spawn(gateway: Arc<Gateway>) {
    let Some(bus) = gateway.bus.clone() else {
        return;
    };
    let config = bus.config().clone();
    if !config.calls.enabled {
        tracing::info!("bus: calls from the fleet are off ([bus.calls] enabled = false)");
        return;
    }
    tokio::spawn(async move {
        let client = bus.client().clone();
        let own = format!("{}.{}.{CALL_TOKEN}.>", config.prefix, config.host);
        let all = format!("{}.{ALL_HOSTS}.{CALL_TOKEN}.>", config.prefix);
        let (mine, every) = match (
            client.subscribe(own.clone()).await,
            client.subscribe(all.clone()).await,
        ) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "bus: cannot subscribe to call subjects; calls from the fleet are not served (the local API is unaffected)");
                return;
            }
        };
        tracing::info!(subjects = ?[&own, &all], access = ?config.calls.access, families = ?config.calls.families, "bus: answering calls from the fleet");
        let permits = Arc::new(Semaphore::new(config.calls.max_concurrent));
        let mut messages = futures_util::stream::select(mine, every);
        while let Some(msg) = messages.next().await {
            accept(&gateway, &bus, &permits, msg).await;
        }
    });
}

/// One message: refused at once (no reply subject, too large, busy,
/// unparsable subject) or handed to a task holding a permit.
async fn accept(
    gateway: &Arc<Gateway>,
    bus: &Arc<super::Bus>,
    permits: &Arc<Semaphore>,
    msg: async_nats::Message,
) {
    let stats = bus.call_stats();
    let Some(reply) = msg.reply.clone() else {
        stats.no_reply.fetch_add(1, Ordering::Relaxed);
        return;
    };
    stats.received.fetch_add(1, Ordering::Relaxed);
    let config = bus.config();
    let parsed = parse_call_subject(&config.prefix, &msg.subject);
    let (family, op) = parsed
        .as_ref()
        .map(|c| (c.family.clone(), c.op.clone()))
        .unwrap_or_default();
    let early = match &parsed {
        Err(why) => Some(ApiError::new(ErrorCode::BadPath, why.clone())),
        Ok(_) if msg.payload.len() > config.calls.max_input_bytes => Some(ApiError::new(
            ErrorCode::BodyTooLarge,
            format!(
                "the input is {} bytes, over this host's {} ([bus.calls] max_input_bytes)",
                msg.payload.len(),
                config.calls.max_input_bytes
            ),
        )),
        Ok(_) => None,
    };
    if let Some(error) = early {
        answer(bus, reply, &family, &op, Err(error)).await;
        return;
    }
    let Ok(permit) = permits.clone().try_acquire_owned() else {
        stats.busy.fetch_add(1, Ordering::Relaxed);
        let error = ApiError::new(
            ErrorCode::Busy,
            format!(
                "{} bus calls are running on this host ([bus.calls] max_concurrent); retry later",
                config.calls.max_concurrent
            ),
        );
        answer(bus, reply, &family, &op, Err(error)).await;
        return;
    };
    let Ok(call) = parsed else { return };
    let gateway = gateway.clone();
    let bus = bus.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let result = match authorize(&gateway, bus.config(), &call) {
            Ok(()) => crate::api::run_call(&gateway, &call.family, &call.op, &msg.payload).await,
            Err(e) => Err(e),
        };
        answer(&bus, reply, &call.family, &call.op, result).await;
    });
}

/// Whether this host lets the bus call `call`: `[bus.calls]` covers the
/// family; an op that writes (or that the plugin does not describe) is
/// called on a `write` subject, `[bus.calls] access = "write"`, and the
/// family file has `[bus] write = true`.
fn authorize(gw: &Gateway, config: &super::BusConfig, call: &CallSubject) -> Result<(), ApiError> {
    let calls = &config.calls;
    let (family, op) = (&call.family, &call.op);
    if !calls.covers(family) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "host '{}' does not take bus calls for family '{family}' ([bus.calls] families = {:?})",
                config.host, calls.families
            ),
        ));
    }
    // The same errors a call would give, without running anything.
    let (entry, plugin) = gw.serving(family)?;
    let Some(described) = plugin.description().ops.iter().find(|o| o.name == *op) else {
        return Err(ApiError::new(
            ErrorCode::UnknownOp,
            format!(
                "the plugin of '{family}' has no operation '{op}'; `genl-gateway family {family}` lists them"
            ),
        ));
    };
    if !described.writes {
        return Ok(());
    }
    let forbidden = |why: String| Err(ApiError::new(ErrorCode::Forbidden, why));
    if call.access != CallAccess::Write {
        return forbidden(format!(
            "'{op}' changes kernel state: it is only served on the write subject ({}), which NATS permissions grant separately",
            call_subject(&config.prefix, &call.target, CallAccess::Write, family, op)
        ));
    }
    if calls.access < Access::Write {
        return forbidden(format!(
            "host '{}' takes read-only calls from the bus; '{op}' changes kernel state (set [bus.calls] access = \"write\" to allow writes)",
            config.host
        ));
    }
    if !entry.config.bus.write {
        return forbidden(format!(
            "host '{}' does not allow writes to family '{family}' over the bus (add `write = true` to [bus] in its family file)",
            config.host
        ));
    }
    Ok(())
}

/// Publish the answer to `reply`. An answer over the server's
/// `max_payload` is replaced by an error saying so.
async fn answer(
    bus: &super::Bus,
    reply: async_nats::Subject,
    family: &str,
    op: &str,
    result: Result<String, ApiError>,
) {
    let host = &bus.config().host;
    let body = match result {
        Ok(output) => {
            let output: Value = serde_json::from_str(&output).unwrap_or(Value::Null);
            json!({"host": host, "family": family, "op": op, "status": 200, "output": output})
        }
        Err(e) => error_body(bus, host, family, op, &e),
    };
    let mut bytes = serde_json::to_vec(&body).unwrap_or_default();
    let max = bus.client().server_info().max_payload;
    if max > 0 && bytes.len() > max {
        let e = ApiError::new(
            ErrorCode::BadPluginOutput,
            format!(
                "the answer is {} bytes, over the bus's max_payload of {max}; narrow the input or call this host's API directly",
                bytes.len()
            ),
        );
        bytes = serde_json::to_vec(&error_body(bus, host, family, op, &e)).unwrap_or_default();
    }
    if let Err(e) = bus.client().publish(reply, bytes.into()).await {
        tracing::warn!(family, op, error = %e, "bus: cannot publish a call's answer");
    }
}

fn error_body(bus: &super::Bus, host: &str, family: &str, op: &str, e: &ApiError) -> Value {
    bus.call_stats().errors.fetch_add(1, Ordering::Relaxed);
    let mut body = e.to_json();
    body["host"] = json!(host);
    body["family"] = json!(family);
    body["op"] = json!(op);
    body["status"] = json!(e.status.as_u16());
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_round_trip_and_bad_ones_say_why() {
        let s = call_subject("corp.genl", "web01", CallAccess::Write, "netdev", "dev-get");
        assert_eq!(s, "corp.genl.web01.call.write.netdev.dev-get");
        let c = parse_call_subject("corp.genl", &s).expect("parses");
        assert_eq!(c.target, "web01");
        assert_eq!(c.access, CallAccess::Write);
        assert_eq!((c.family.as_str(), c.op.as_str()), ("netdev", "dev-get"));
        for bad in [
            "corp.genl.web01.call.netdev.dev-get",
            "corp.genl.web01.call.admin.netdev.dev-get",
            "corp.genl.web01.call.read.netdev.dev-get.x",
            "other.web01.call.read.netdev.dev-get",
        ] {
            assert!(parse_call_subject("corp.genl", bad).is_err(), "{bad}");
        }
    }
}
