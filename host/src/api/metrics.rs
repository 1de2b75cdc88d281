//! `/metrics` in the Prometheus text exposition format.

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

use super::connections::{ConnectionStats, ListenerKind};
use super::event_bus::EventBus;
use crate::gateway::{Gateway, Listener};
use crate::plugin::{LATENCY_BUCKETS, LoadedPlugin};

/// A counter read off a plugin or a listener: name, help, getter.
type Counter<T> = (&'static str, &'static str, fn(&T) -> u64);

/// Label values escaped as the format requires.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

struct Out(String);

impl Out {
    /// Each counter, one sample per family.
    fn counters<T>(&mut self, counters: &[Counter<T>], of: &[(&str, &std::sync::Arc<T>)]) {
        for (name, help, get) in counters {
            self.family(name, "counter", help);
            for (family, x) in of {
                self.sample(name, &[("family", family)], get(x));
            }
        }
    }

    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", esc(v)))
            .collect();
        if labels.is_empty() {
            let _ = writeln!(self.0, "{name} {value}");
        } else {
            let _ = writeln!(self.0, "{name}{{{}}} {value}", labels.join(","));
        }
    }
}

/// Render every metric.
pub fn render(gw: &Gateway, bus: &EventBus) -> String {
    let families = gw.families();
    let plugins: Vec<_> = families
        .iter()
        .filter_map(|(n, e)| e.plugin.as_ref().ok().map(|p| (n.as_str(), p)))
        .collect();
    let mut o = Out(String::with_capacity(8192));

    o.family(
        "genl_gateway_family_present",
        "gauge",
        "1 if the kernel has the configured family now.",
    );
    for (name, _) in &families {
        o.sample(
            "genl_gateway_family_present",
            &[("family", name)],
            u8::from(gw.resolver.cached(name).is_some()),
        );
    }
    o.family(
        "genl_gateway_plugin_up",
        "gauge",
        "1 if the family's plugin is loaded and not failed.",
    );
    for (name, e) in &families {
        let up = e
            .plugin
            .as_ref()
            .is_ok_and(|p| p.status().state != crate::plugin::PluginPhase::Failed);
        o.sample("genl_gateway_plugin_up", &[("family", name)], u8::from(up));
    }
    o.family(
        "genl_gateway_plugin_instances",
        "gauge",
        "The plugin's instances: size (limits.instances), enabled, live (built), busy (in a call or notification).",
    );
    for (family, p) in &plugins {
        let c = p.pool_view().counts;
        for (state, n) in [
            ("size", c.size),
            ("enabled", c.enabled),
            ("live", c.live),
            ("busy", c.busy),
        ] {
            o.sample(
                "genl_gateway_plugin_instances",
                &[("family", family), ("state", state)],
                n,
            );
        }
    }
    o.family(
        "genl_gateway_plugin_memory_limit_bytes",
        "gauge",
        "Linear memory the plugin may hold: per instance, and in total over its pool.",
    );
    for (family, p) in &plugins {
        let v = p.pool_view();
        for (scope, n) in [
            ("instance", v.memory_bytes_per_instance),
            ("pool", v.memory_bytes_total),
        ] {
            o.sample(
                "genl_gateway_plugin_memory_limit_bytes",
                &[("family", family), ("scope", scope)],
                n,
            );
        }
    }
    let counters: [Counter<LoadedPlugin>; 5] = [
        (
            "genl_gateway_plugin_calls_total",
            "Client calls into the plugin.",
            |p| p.metrics.calls.load(Relaxed),
        ),
        (
            "genl_gateway_plugin_traps_total",
            "Plugin crashes (traps) in any entry point.",
            |p| p.metrics.traps.load(Relaxed),
        ),
        (
            "genl_gateway_plugin_restarts_total",
            "Plugin instances rebuilt after a crash.",
            |p| p.status().restarts,
        ),
        (
            "genl_gateway_notifications_delivered_total",
            "Notifications handed to the plugin.",
            |p| p.metrics.notifications_delivered.load(Relaxed),
        ),
        (
            "genl_gateway_events_published_total",
            "Events the plugin published.",
            |p| p.metrics.events_published.load(Relaxed),
        ),
    ];
    o.counters(&counters, &plugins);
    o.family(
        "genl_gateway_plugin_call_errors_total",
        "counter",
        "Failed client calls, by error code.",
    );
    for (family, p) in &plugins {
        for (code, n) in p.metrics.errors() {
            o.sample(
                "genl_gateway_plugin_call_errors_total",
                &[("family", family), ("code", &code)],
                n,
            );
        }
    }
    o.family(
        "genl_gateway_plugin_call_duration_seconds",
        "histogram",
        "Latency of client calls into the plugin.",
    );
    for (family, p) in &plugins {
        let (buckets, count, sum) = p.metrics.histogram();
        for (le, n) in LATENCY_BUCKETS.iter().zip(&buckets) {
            o.sample(
                "genl_gateway_plugin_call_duration_seconds_bucket",
                &[("family", family), ("le", &le.to_string())],
                n,
            );
        }
        o.sample(
            "genl_gateway_plugin_call_duration_seconds_bucket",
            &[("family", family), ("le", "+Inf")],
            count,
        );
        o.sample(
            "genl_gateway_plugin_call_duration_seconds_sum",
            &[("family", family)],
            sum,
        );
        o.sample(
            "genl_gateway_plugin_call_duration_seconds_count",
            &[("family", family)],
            count,
        );
    }
    let listeners: Vec<_> = families
        .iter()
        .filter_map(|(n, e)| e.listener.as_ref().map(|l| (n.as_str(), l)))
        .collect();
    let listener_counters: [Counter<Listener>; 3] = [
        (
            "genl_gateway_notifications_received_total",
            "Notifications received from the kernel.",
            |l| l.stats.received.load(Relaxed),
        ),
        (
            "genl_gateway_notifications_dropped_total",
            "Notifications dropped because the plugin's queue was full.",
            |l| l.stats.dropped.load(Relaxed),
        ),
        (
            "genl_gateway_socket_overruns_total",
            "Kernel socket overruns (ENOBUFS) on the family's listener.",
            |l| l.stats.overruns.load(Relaxed),
        ),
    ];
    o.counters(&listener_counters, &listeners);
    o.family(
        "genl_gateway_notification_queue_depth",
        "gauge",
        "Notifications waiting for the plugin.",
    );
    for (family, l) in &listeners {
        o.sample(
            "genl_gateway_notification_queue_depth",
            &[("family", family)],
            l.queue_depth(),
        );
    }
    o.family(
        "genl_gateway_event_subscribers_cut_off_total",
        "counter",
        "Event subscribers cut off for falling behind.",
    );
    o.sample(
        "genl_gateway_event_subscribers_cut_off_total",
        &[],
        gw.subscribers_cut_off.load(Relaxed),
    );
    type ConnCounter = (
        &'static str,
        &'static str,
        fn(&ConnectionStats, ListenerKind) -> u64,
    );
    let connection_counters: [ConnCounter; 2] = [
        (
            "genl_gateway_api_connections_refused_total",
            "Connections refused because their local user held [api] max_connections_per_user, or only root's reserve was left (answered 429, or closed unanswered past the refusal bound).",
            ConnectionStats::refused,
        ),
        (
            "genl_gateway_api_connections_closed_not_reading_total",
            "Connections closed because a write to them waited [api] write_timeout_ms.",
            ConnectionStats::closed_not_reading,
        ),
    ];
    for (name, help, get) in connection_counters {
        o.family(name, "counter", help);
        for listener in ListenerKind::ALL {
            o.sample(
                name,
                &[("listener", listener.as_str())],
                get(&gw.api_connections, listener),
            );
        }
    }
    o.family(
        "genl_gateway_event_subscribers",
        "gauge",
        "Event subscribers connected now.",
    );
    o.sample("genl_gateway_event_subscribers", &[], bus.total());
    o.family(
        "genl_gateway_events_dropped_bad_topic_total",
        "counter",
        "Events dropped because SSE cannot carry their topic (CR, LF, control characters).",
    );
    o.sample(
        "genl_gateway_events_dropped_bad_topic_total",
        &[],
        bus.bad_topics.load(Relaxed),
    );
    o.family(
        "genl_gateway_compiled_cache_hits_total",
        "counter",
        "Plugins loaded from the compiled cache.",
    );
    o.sample(
        "genl_gateway_compiled_cache_hits_total",
        &[],
        gw.runtime.cache.hits.load(Relaxed),
    );
    o.family(
        "genl_gateway_plugins_compiled_total",
        "counter",
        "Plugins compiled from wasm.",
    );
    o.sample(
        "genl_gateway_plugins_compiled_total",
        &[],
        gw.runtime.cache.compiled.load(Relaxed),
    );
    let sizes = gw.resolver.cache_sizes();
    o.family(
        "genl_gateway_resolver_cache_entries",
        "gauge",
        "Entries in the family resolver's bounded caches.",
    );
    o.sample(
        "genl_gateway_resolver_cache_entries",
        &[("cache", "families")],
        sizes.families,
    );
    o.sample(
        "genl_gateway_resolver_cache_entries",
        &[("cache", "policies")],
        sizes.policies,
    );
    if let Some(fleet) = &gw.bus {
        bus_metrics(&mut o, fleet);
    }
    o.0
}

/// The fleet bus connection (only with `[bus]`).
fn bus_metrics(o: &mut Out, fleet: &crate::fleet::Bus) {
    o.family(
        "genl_gateway_bus_connected",
        "gauge",
        "1 while the gateway is connected to its NATS bus.",
    );
    o.sample(
        "genl_gateway_bus_connected",
        &[],
        u8::from(fleet.state() == crate::fleet::BusState::Connected),
    );
    let stats = fleet.stats();
    let counters: [(&str, &str, &std::sync::atomic::AtomicU64); 3] = [
        (
            "genl_gateway_bus_connects_total",
            "Connections to the NATS bus established.",
            &stats.connects,
        ),
        (
            "genl_gateway_bus_disconnects_total",
            "Connections to the NATS bus lost.",
            &stats.disconnects,
        ),
        (
            "genl_gateway_bus_server_errors_total",
            "Errors the NATS server reported.",
            &stats.server_errors,
        ),
    ];
    let calls = fleet.call_stats();
    let call_counters: [(&str, &str, &std::sync::atomic::AtomicU64); 4] = [
        (
            "genl_gateway_bus_calls_total",
            "Calls from the fleet received (with a reply subject).",
            &calls.received,
        ),
        (
            "genl_gateway_bus_call_errors_total",
            "Calls from the fleet answered with an error document.",
            &calls.errors,
        ),
        (
            "genl_gateway_bus_calls_busy_total",
            "Calls from the fleet refused because [bus.calls] max_concurrent were running.",
            &calls.busy,
        ),
        (
            "genl_gateway_bus_calls_no_reply_total",
            "Messages on call subjects without a reply subject (dropped).",
            &calls.no_reply,
        ),
    ];
    for (name, help, v) in counters.into_iter().chain(call_counters) {
        o.family(name, "counter", help);
        o.sample(name, &[], v.load(Relaxed));
    }
    if let Some(events) = fleet.events() {
        bus_events_metrics(o, events);
    }
}

/// The events publisher (with `[bus]`, unless `[bus.events] enabled = false`).
fn bus_events_metrics(o: &mut Out, events: &crate::fleet::events::EventsPublisher) {
    let s = &events.stats;
    let counters: [(&str, &str, &std::sync::atomic::AtomicU64); 8] = [
        (
            "genl_gateway_bus_events_queued_total",
            "Events queued for the bus.",
            &s.queued,
        ),
        (
            "genl_gateway_bus_events_acked_total",
            "Events and gap markers JetStream acknowledged.",
            &s.acked,
        ),
        (
            "genl_gateway_bus_events_duplicates_total",
            "Retried publishes JetStream already had (dropped by message id).",
            &s.duplicates,
        ),
        (
            "genl_gateway_bus_events_retries_total",
            "Event publishes retried after no acknowledgement.",
            &s.retries,
        ),
        (
            "genl_gateway_bus_events_lost_total",
            "Events dropped because the buffer was full (each marked by a _gap event).",
            &s.lost,
        ),
        (
            "genl_gateway_bus_events_gaps_total",
            "Gap markers queued (buffer overflows and kernel overruns).",
            &s.gaps,
        ),
        (
            "genl_gateway_bus_events_skipped_total",
            "Events of topics the family file keeps off the bus.",
            &s.skipped,
        ),
        (
            "genl_gateway_bus_events_spool_errors_total",
            "Failed writes to the events spool.",
            &s.spool_errors,
        ),
    ];
    for (name, help, v) in counters {
        o.family(name, "counter", help);
        o.sample(name, &[], v.load(Relaxed));
    }
    let (buffered, bytes) = events.buffered();
    o.family(
        "genl_gateway_bus_events_buffered",
        "gauge",
        "Events waiting for the bus.",
    );
    o.sample("genl_gateway_bus_events_buffered", &[], buffered);
    o.family(
        "genl_gateway_bus_events_buffered_bytes",
        "gauge",
        "Bytes of events waiting for the bus.",
    );
    o.sample("genl_gateway_bus_events_buffered_bytes", &[], bytes);
}
