//! The taskstats plugin: per-task and per-process accounting (CPU times,
//! memory, I/O, delays) from the kernel's TASKSTATS family, and each task's
//! exit record as an event, the kernel's classic per-process accounting.
//!
//! Operations: `pid {"pid"}` and `tgid {"tgid"}` (read), `listen
//! {"cpumask": "0-3"}` and `unlisten {"cpumask"}` (register this plugin for
//! exit records of tasks on those CPUs). All use TASKSTATS_CMD_GET (1),
//! which needs CAP_NET_ADMIN.
//!
//! Events: topic `exit`, one per exiting task (and one per exiting thread
//! group, with `"tgid"`), after `listen`.

use genl_plugin_sdk::prelude::*;

const CMD_GET: u8 = 1;
const CMD_NEW: u8 = 2;
const ATTR_PID: u16 = 1;
const ATTR_TGID: u16 = 2;
const ATTR_REGISTER_CPUMASK: u16 = 3;
const ATTR_DEREGISTER_CPUMASK: u16 = 4;
const TYPE_PID: u16 = 1;
const TYPE_TGID: u16 = 2;
const TYPE_STATS: u16 = 3;
const TYPE_AGGR_PID: u16 = 4;
const TYPE_AGGR_TGID: u16 = 5;

/// Serves TASKSTATS; remembers its registration to renew it.
pub struct Taskstats {
    cpumask: Option<String>,
}

/// A field of `struct taskstats` (<linux/taskstats.h>): name, offset, size.
/// The struct only grows at its end, so these offsets hold for every
/// version that carries them.
const FIELDS: &[(&str, usize, usize)] = &[
    ("version", 0, 2),
    ("exitcode", 4, 4),
    ("flag", 8, 1),
    ("nice", 9, 1),
    ("cpu_count", 16, 8),
    ("cpu_delay_total_ns", 24, 8),
    ("uid", 120, 4),
    ("gid", 124, 4),
    ("pid", 128, 4),
    ("ppid", 132, 4),
    ("btime", 136, 4),
    ("etime_us", 144, 8),
    ("utime_us", 152, 8),
    ("stime_us", 160, 8),
    ("minflt", 168, 8),
    ("majflt", 176, 8),
    ("coremem", 184, 8),
    ("virtmem", 192, 8),
    ("hiwater_rss_kb", 200, 8),
    ("hiwater_vm_kb", 208, 8),
    ("read_char", 216, 8),
    ("write_char", 224, 8),
    ("nvcsw", 272, 8),
    ("nivcsw", 280, 8),
];
const COMM: (usize, usize) = (80, 32);

/// Decode the fields of a `struct taskstats` this kernel sent.
fn decode_stats(b: &[u8]) -> Value {
    let mut out = serde_json::Map::new();
    for (name, off, size) in FIELDS {
        if let Some(bytes) = b.get(*off..off + size) {
            let mut buf = [0u8; 8];
            buf[..*size].copy_from_slice(bytes);
            out.insert((*name).into(), u64::from_ne_bytes(buf).into());
        }
    }
    if let Some(comm) = b.get(COMM.0..COMM.0 + COMM.1) {
        let end = comm.iter().position(|&c| c == 0).unwrap_or(comm.len());
        out.insert("comm".into(), String::from_utf8_lossy(&comm[..end]).into());
    }
    Value::Object(out)
}

/// Decode an AGGR_PID / AGGR_TGID reply or notification.
fn decode_message(payload: &[u8]) -> Result<Vec<Value>, CallError> {
    let mut out = Vec::new();
    for attr in Attrs::new(payload) {
        let attr = attr?;
        let id_name = match attr.kind() {
            TYPE_AGGR_PID => "pid",
            TYPE_AGGR_TGID => "tgid",
            _ => continue,
        };
        let mut entry = json!({});
        for inner in attr.nested() {
            let inner = inner?;
            match inner.kind() {
                TYPE_PID | TYPE_TGID => entry[id_name] = inner.u32()?.into(),
                TYPE_STATS => entry["stats"] = decode_stats(inner.bytes()),
                _ => {}
            }
        }
        out.push(entry);
    }
    Ok(out)
}

fn get(attr: u16, key: &str, input: &Value) -> Result<Value, CallError> {
    let id = input
        .get(key)
        .and_then(Value::as_u64)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| CallError::bad_input(format!("expected {{\"{key}\": N}}")))?;
    let mut w = AttrWriter::new();
    w.put_u32(attr, id);
    let replies = match kernel::do_request(CMD_GET, &w.finish()) {
        Err(RequestError::Kernel(e)) if e.errno == 3 => {
            return Err(CallError::not_found(format!("no task with {key} {id}")));
        }
        other => other?,
    };
    let reply = replies
        .first()
        .ok_or_else(|| CallError::not_found(format!("no task with {key} {id}")))?;
    Ok(decode_message(&reply.payload)?
        .into_iter()
        .next()
        .unwrap_or(Value::Null))
}

fn register(attr: u16, mask: &str) -> Result<(), RequestError> {
    let mut w = AttrWriter::new();
    w.put_str(attr, mask)
        .map_err(|e| RequestError::Io(e.to_string()))?;
    // From the listener socket: the kernel sends exit records to the port
    // that registered.
    kernel::listen_request(CMD_GET, &w.finish()).map(drop)
}

impl Plugin for Taskstats {
    fn init(_config: Config) -> Result<Self, String> {
        Ok(Taskstats { cpumask: None })
    }

    fn describe(&self) -> PluginDescription {
        PluginDescription::new("TASKSTATS")
            .version(env!("CARGO_PKG_VERSION"))
            .op("pid", "Accounting of one task: {\"pid\": N}", false)
            .op(
                "tgid",
                "Accounting of one process (thread group): {\"tgid\": N}",
                false,
            )
            .op(
                "listen",
                "Publish exit records of tasks on these CPUs: {\"cpumask\": \"0-3\"}",
                false,
            )
            .op("unlisten", "Stop: {\"cpumask\": \"0-3\"}", false)
            .topic("exit")
    }

    fn call(&mut self, op: &str, input: Value) -> Result<Value, CallError> {
        let mask = || {
            input
                .get("cpumask")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| CallError::bad_input("expected {\"cpumask\": \"0-3\"}"))
        };
        match op {
            "pid" => get(ATTR_PID, "pid", &input),
            "tgid" => get(ATTR_TGID, "tgid", &input),
            "listen" => {
                let m = mask()?;
                register(ATTR_REGISTER_CPUMASK, &m)?;
                self.cpumask = Some(m.clone());
                Ok(json!({"listening": m}))
            }
            "unlisten" => {
                let m = mask()?;
                register(ATTR_DEREGISTER_CPUMASK, &m)?;
                self.cpumask = None;
                Ok(json!({"listening": null}))
            }
            _ => Err(CallError::unknown_op(op)),
        }
    }

    fn on_notification(&mut self, _group: &str, message: Message) {
        if message.cmd != CMD_NEW {
            return;
        }
        match decode_message(&message.payload) {
            Ok(records) => records.iter().for_each(|r| events::publish("exit", r)),
            Err(e) => log::warn(&format!("malformed exit record: {}", e.message)),
        }
    }

    fn on_events_lost(&mut self) {
        // The listener socket may be new (the kernel forgets a registration
        // with its socket): register again.
        if let Some(Err(e)) = self
            .cpumask
            .as_deref()
            .map(|m| register(ATTR_REGISTER_CPUMASK, m))
        {
            log::warn(&format!("re-registering for exit records failed: {e}"));
        }
    }
}

export_plugin!(Taskstats);

#[cfg(test)]
mod tests {
    use super::*;
    use genl_plugin_sdk::FamilyInfo;
    use genl_plugin_sdk::testing::{FakeKernel, RequestKind};

    fn record(pid: u32, comm: &str) -> Vec<u8> {
        let mut stats = vec![0u8; 416];
        stats[0..2].copy_from_slice(&14u16.to_ne_bytes());
        stats[80..80 + comm.len()].copy_from_slice(comm.as_bytes());
        stats[128..132].copy_from_slice(&pid.to_ne_bytes());
        stats[152..160].copy_from_slice(&1234u64.to_ne_bytes());
        let mut w = AttrWriter::new();
        let aggr = w.begin_nested(TYPE_AGGR_PID);
        w.put_u32(TYPE_PID, pid);
        w.put_bytes(TYPE_STATS, &stats).unwrap();
        w.end_nested(aggr).unwrap();
        w.finish()
    }

    #[test]
    fn pid_decodes_the_struct() {
        let kernel = FakeKernel::new(FamilyInfo::default());
        kernel.on_do(CMD_GET, |_| Ok(vec![Message::new(CMD_NEW, record(42, "sleep"))]));
        let v = Taskstats::init(Config::new())
            .unwrap()
            .call("pid", json!({"pid": 42}))
            .unwrap();
        assert_eq!(v["pid"], 42);
        assert_eq!(v["stats"]["comm"], "sleep");
        assert_eq!(v["stats"]["utime_us"], 1234);
        assert_eq!(v["stats"]["version"], 14);
    }

    #[test]
    fn listen_registers_from_the_listener_socket_and_renews_after_loss() {
        let kernel = FakeKernel::new(FamilyInfo::default());
        kernel.on_listen(CMD_GET, |_| Ok(vec![]));
        let mut p = Taskstats::init(Config::new()).unwrap();
        p.call("listen", json!({"cpumask": "0-1"})).unwrap();
        p.on_events_lost();
        let reqs = kernel.requests();
        assert_eq!(reqs.len(), 2);
        assert!(reqs.iter().all(|r| r.kind == RequestKind::Listen));
        let mask = Attrs::new(&reqs[1].payload)
            .find(ATTR_REGISTER_CPUMASK)
            .unwrap()
            .unwrap();
        assert_eq!(mask.str(), Ok("0-1"));
        p.on_notification("", Message::new(CMD_NEW, record(7, "true")));
        assert_eq!(kernel.events()[0].1["stats"]["comm"], "true");
    }
}
