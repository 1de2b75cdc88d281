//! The request socket pool against the real kernel, each test in a private
//! network namespace it creates: dumps of two families in flight at once
//! on sockets of their own, the pool's bound, and a dump's read-ahead
//! (one part, no further, gone with the dump). What is running is read
//! from the kernel's /proc/net/netlink inside the namespace (one row per
//! socket, its `Dump` column set while a dump is in progress on it), so no
//! test depends on timing.

mod common;

use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{Netns, socket_rows};
use genl_gateway::netlink::{DumpParts, RequestBounds, RequestError, Requester, SocketOptions};
use genl_plugin_sdk::uapi;
use genl_wire::ctrl::{CTRL_CMD_GETFAMILY, getfamily_by_name};
use genl_wire::{FamilyInfo, GenlHeader, Messages};

const NLCTRL: u16 = 0x10;
const GETFAMILY: GenlHeader = GenlHeader {
    cmd: CTRL_CMD_GETFAMILY,
    version: 2,
};

/// The namespace's generic netlink sockets: whether a dump is running on
/// each.
fn generic_sockets(ns: &str) -> Vec<bool> {
    socket_rows(ns).iter().map(|s| s.dumping).collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn open_in(ns: &Netns, sockets: usize) -> Arc<Requester> {
    let file = File::open(format!("/run/netns/{}", ns.name)).expect("the namespace file");
    Requester::open(SocketOptions {
        netns: Some(Arc::new(file)),
        timeout: Duration::from_secs(30),
        receive_buffer: 1 << 20,
        request_sockets: sockets,
        ..SocketOptions::default()
    })
    .expect("open the request pool in the namespace")
}

async fn family(r: &Requester, name: &str) -> FamilyInfo {
    let attrs = getfamily_by_name(name).unwrap();
    let replies = r.do_request(NLCTRL, GETFAMILY, 0, &attrs).await.unwrap();
    FamilyInfo::decode(&replies[0].payload[GenlHeader::SIZE..]).unwrap()
}

/// netdev as the kernel registered it, and the header of its DEV_GET
/// (the command number from <linux/netdev.h>).
async fn netdev_dev_get(r: &Requester) -> (FamilyInfo, GenlHeader) {
    let netdev = family(r, "netdev").await;
    let dev_get = GenlHeader {
        cmd: uapi::value("netdev.h", "NETDEV_CMD_DEV_GET") as u8,
        version: netdev.version as u8,
    };
    (netdev, dev_get)
}

/// netdev's DEV_GET dumped part by part, within the requester's own bounds.
async fn dev_dump(r: &Requester, netdev: &FamilyInfo, dev_get: GenlHeader) -> DumpParts {
    r.dump_parts(netdev.id, dev_get, &[], r.default_bounds())
        .await
        .unwrap()
}

/// The messages of the rest of `dump`, counted part by part to its end.
async fn count_to_end(dump: &mut DumpParts) -> usize {
    let mut n = 0;
    while let Some(part) = dump.next_part().await.unwrap() {
        n += messages(&part).len();
    }
    n
}

/// The receive buffer (`rb` of `skmem`, as `ss` reads it from the kernel's
/// sock_diag) of each of the namespace's generic netlink sockets but the
/// kernel's own.
fn receive_buffers(ns: &Netns) -> Vec<u64> {
    let out = ns.exec(&["ss", "-A", "netlink", "-m", "-a"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(" genl:") && !l.contains("genl:kernel"))
        .filter_map(|l| {
            let rb = l.split("rb").nth(1)?;
            rb.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
        })
        .collect()
}

/// The messages of one dump part, as (genl payload after the genl header).
fn messages(part: &[u8]) -> Vec<Vec<u8>> {
    Messages::new(part)
        .map(|m| m.expect("a well-formed part").payload[GenlHeader::SIZE..].to_vec())
        .collect()
}

/// The u32 attribute `kind` of a flat attribute list.
fn u32_attr(mut attrs: &[u8], kind: u16) -> Option<u32> {
    while attrs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
        let t = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
        if len < 4 || len > attrs.len() {
            return None;
        }
        if t == kind && len == 8 {
            return Some(u32::from_ne_bytes([attrs[4], attrs[5], attrs[6], attrs[7]]));
        }
        attrs = &attrs[((len + 3) & !3).min(attrs.len())..];
    }
    None
}

// 3000 devices make netdev's dump about six parts, so after its first part
// is read the kernel has more to make: the dump is still running.

#[test]
fn dumps_of_two_families_are_in_flight_at_once_on_their_own_sockets() {
    let ns = Netns::new("pool2dump");
    ns.add_ifbs(3000);
    let devices = ns.ifindexes();
    let netdev_get = uapi::value("netdev.h", "NETDEV_CMD_DEV_GET") as u8;
    let netdev_ifindex = uapi::value("netdev.h", "NETDEV_A_DEV_IFINDEX") as u16;
    let features_get = uapi::value("ethtool_netlink.h", "ETHTOOL_MSG_FEATURES_GET") as u8;
    runtime().block_on(async {
        let r = open_in(&ns, 4);
        let netdev = family(&r, "netdev").await;
        let ethtool = family(&r, "ethtool").await;
        let bounds = r.default_bounds();
        let genl = |cmd, f: &FamilyInfo| GenlHeader {
            cmd,
            version: f.version as u8,
        };

        let mut a = r
            .dump_parts(netdev.id, genl(netdev_get, &netdev), &[], bounds)
            .await
            .unwrap();
        let mut a_msgs = messages(&a.next_part().await.unwrap().expect("a first netdev part"));
        // With netdev's dump paused after one part, ethtool's starts and
        // progresses: it does not wait for the other family's dump.
        let mut b = r
            .dump_parts(ethtool.id, genl(features_get, &ethtool), &[], bounds)
            .await
            .unwrap();
        let mut b_msgs = messages(&b.next_part().await.unwrap().expect("a first ethtool part"));
        let running = generic_sockets(&ns.name);
        assert_eq!(
            running.iter().filter(|d| **d).count(),
            2,
            "the kernel should show both dumps running, one per socket: {running:?}"
        );

        // Read both to the end, taking turns part by part.
        let (mut a_done, mut b_done) = (false, false);
        while !(a_done && b_done) {
            if !a_done {
                match a.next_part().await.unwrap() {
                    Some(p) => a_msgs.extend(messages(&p)),
                    None => a_done = true,
                }
            }
            if !b_done {
                match b.next_part().await.unwrap() {
                    Some(p) => b_msgs.extend(messages(&p)),
                    None => b_done = true,
                }
            }
        }
        assert!(
            !a.interrupted() && !b.interrupted(),
            "nothing changed the devices"
        );
        let mut got: Vec<u64> = a_msgs
            .iter()
            .map(|m| u64::from(u32_attr(m, netdev_ifindex).expect("every netdev reply has an ifindex")))
            .collect();
        got.sort_unstable();
        assert_eq!(got, devices, "the netdev dump and iproute2 disagree");
        assert_eq!(b_msgs.len(), devices.len(), "ethtool answers once per device");
        assert!(
            generic_sockets(&ns.name).iter().all(|d| !d),
            "both dumps ended in the kernel"
        );
    });
}

#[test]
fn the_pool_never_opens_more_sockets_than_its_bound() {
    let ns = Netns::new("poolbound");
    ns.add_ifbs(3000);
    let devices = ns.ifindexes().len();
    runtime().block_on(async {
        let r = open_in(&ns, 2);
        let (netdev, dev_get) = netdev_dev_get(&r).await;
        let bounds = r.default_bounds();

        // Both sockets held by paused dumps: the kernel shows two sockets,
        // both dumping, and a third request gets none within its wait.
        let mut first = r.dump_parts(netdev.id, dev_get, &[], bounds).await.unwrap();
        let first_part = first.next_part().await.unwrap().expect("a first part");
        let mut second = r.dump_parts(netdev.id, dev_get, &[], bounds).await.unwrap();
        let mut second_count = messages(&second.next_part().await.unwrap().expect("a first part")).len();
        assert!(
            messages(&first_part).len() < devices,
            "the dump spans several parts"
        );
        assert_eq!(
            generic_sockets(&ns.name),
            vec![true, true],
            "two sockets, both dumping"
        );
        let short = RequestBounds {
            wait: Duration::from_millis(300),
            reply_bytes: usize::MAX,
        };
        let attrs = getfamily_by_name("netdev").unwrap();
        let waited = r.do_request_bounded(NLCTRL, GETFAMILY, 0, &attrs, short).await;
        assert!(
            matches!(waited, Err(RequestError::Timeout(_))),
            "a request beyond the bound waits, within its own deadline: {waited:?}"
        );

        // A dump abandoned mid-way gives its slot back; its socket is
        // closed (ending the kernel's dump), never reused half-read.
        drop(first);
        let info = family(&r, "nlctrl").await;
        assert_eq!(info.name, "nlctrl");
        let sockets = generic_sockets(&ns.name);
        assert_eq!(sockets.len(), 2, "still two sockets: {sockets:?}");
        assert_eq!(
            sockets.iter().filter(|d| **d).count(),
            1,
            "only the held dump runs"
        );
        while let Some(p) = second.next_part().await.unwrap() {
            second_count += messages(&p).len();
        }
        assert_eq!(second_count, devices, "the held dump completes whole");

        // Many requests at once never take the namespace past two sockets.
        let stop = Arc::new(AtomicBool::new(false));
        let most = Arc::new(AtomicUsize::new(0));
        let sampler = {
            let (stop, most, name) = (stop.clone(), most.clone(), ns.name.clone());
            std::thread::spawn(move || {
                let ns = Netns { name };
                while !stop.load(Ordering::Relaxed) {
                    most.fetch_max(generic_sockets(&ns.name).len(), Ordering::Relaxed);
                }
                std::mem::forget(ns);
            })
        };
        let mut tasks = Vec::new();
        for i in 0..16 {
            let r = r.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..200 {
                    if i % 4 == 0 {
                        let n = r.dump(netdev.id, dev_get, &[]).await.unwrap().len();
                        assert_eq!(n, devices, "a dump lost or gained messages");
                    } else {
                        let info = family(&r, "netdev").await;
                        assert_eq!(info.name, "netdev", "a reply reached the wrong request");
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        sampler.join().unwrap();
        let most = most.load(Ordering::Relaxed);
        assert!(
            (1..=2).contains(&most),
            "{most} sockets open at once; the bound is 2"
        );
    });
}

/// Wait, polling, until `what` holds; false if it never did within a
/// generous bound (for conditions that need the reader task to get a
/// turn; never a measure of speed).
async fn eventually(mut what: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..1000 {
        if what().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[test]
fn the_next_dump_part_is_read_ahead_but_no_further_and_a_dropped_dump_leaves_no_reader() {
    let ns = Netns::new("readahead");
    ns.add_ifbs(3000);
    let devices = ns.ifindexes().len();
    runtime().block_on(async {
        // One socket: the dump's reader must give it back before anything
        // else can be asked.
        let r = open_in(&ns, 1);
        let (netdev, dev_get) = netdev_dev_get(&r).await;
        let mut dump = dev_dump(&r, &netdev, dev_get).await;
        // The dump's socket runs with a small receive buffer (the kernel
        // doubles the 24 KiB asked for), so a peek at a queued part makes
        // nothing and the reader's discard makes the next (pool.rs).
        assert_eq!(receive_buffers(&ns), [48 << 10], "while the dump runs");
        let mut read = 0;
        for _ in 0..2 {
            read += messages(&dump.next_part().await.unwrap().expect("a part")).len();
        }
        assert!(read < devices, "the dump spans more than two parts");

        // While the second part is in hand, the third is taken from the
        // kernel: asked for with no wait at all, it is there.
        let no_wait = RequestBounds {
            wait: Duration::ZERO,
            reply_bytes: usize::MAX,
        };
        let mut third = None;
        let ready = eventually(async || match dump.next_part_within(no_wait).await {
            Ok(part) => {
                third = part;
                true
            }
            Err(RequestError::Timeout(_)) => false,
            Err(e) => panic!("the dump failed: {e}"),
        })
        .await;
        assert!(ready, "the third part was never read ahead");
        read += messages(&third.expect("a third part")).len();
        assert!(read < devices, "more parts are left in the kernel");

        // With nobody taking parts, the reader stops one part ahead: the
        // kernel keeps the dump running with its next part queued on the
        // socket (an unbounded reader would have read the dump to its end).
        let held = eventually(async || {
            let rows = socket_rows(&ns.name);
            rows.len() == 1 && rows[0].dumping && rows[0].queued > 0
        })
        .await;
        assert!(
            held,
            "the kernel should hold a queued part: {:?}",
            socket_rows(&ns.name)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rows = socket_rows(&ns.name);
        assert!(
            rows.len() == 1 && rows[0].dumping,
            "the dump should still be running, paused: {rows:?}"
        );

        // Dropped mid-way: the reader goes, its socket is closed (ending
        // the kernel's dump), and the pool's next user gets its own reply.
        drop(dump);
        let info = family(&r, "nlctrl").await;
        assert_eq!(info.name, "nlctrl", "a reply reached the wrong request");
        let rows = socket_rows(&ns.name);
        assert!(
            rows.len() == 1 && !rows[0].dumping,
            "one socket, a fresh one, not dumping: {rows:?}"
        );
        let n = r.dump(netdev.id, dev_get, &[]).await.unwrap().len();
        assert_eq!(n, devices, "a later dump is whole, with no stray part");

        // A dump read part by part to its end gives its socket back to
        // the pool with the configured buffer (1 MiB, doubled), so a
        // large `do` reply and its ACK still fit.
        let mut dump = dev_dump(&r, &netdev, dev_get).await;
        let n = count_to_end(&mut dump).await;
        assert_eq!(n, devices, "the whole dump, part by part");
        drop(dump);
        assert_eq!(receive_buffers(&ns), [2 << 20], "after the dump");
        let info = family(&r, "netdev").await;
        assert_eq!(info.name, "netdev", "the pooled socket answers the next request");
    });
}

#[test]
fn a_kernel_error_ends_a_dump_read_part_by_part_and_is_repeated() {
    let ns = Netns::new("dumperr");
    runtime().block_on(async {
        let r = open_in(&ns, 1);
        // A command nlctrl does not have: the kernel refuses the dump
        // with EOPNOTSUPP (<asm-generic/errno.h>).
        let unknown = GenlHeader { cmd: 200, version: 2 };
        let mut dump = r
            .dump_parts(NLCTRL, unknown, &[], r.default_bounds())
            .await
            .unwrap();
        for attempt in 0..2 {
            match dump.next_part().await {
                Err(RequestError::Kernel(k)) => {
                    assert_eq!(k.errno, libc::EOPNOTSUPP, "attempt {attempt}: {k:?}")
                }
                other => panic!("attempt {attempt}: a kernel error, not {other:?}"),
            }
        }
        drop(dump);
        let info = family(&r, "nlctrl").await;
        assert_eq!(info.name, "nlctrl", "the socket serves the next request");
    });
}

/// Every way a dump read part by part can end gives its socket back with
/// the configured receive buffer, or closes it: a kernel error at start, a
/// dump of one part, a timeout before the first part is read, a dump
/// dropped mid-way, a whole dump. The buffer is read from the kernel
/// (`ss`), the device count from iproute2; after each, the one pooled
/// socket answers a `do` and a whole dump.
#[test]
fn every_end_of_a_peeked_dump_leaves_the_pool_with_the_configured_buffer() {
    let ns = Netns::new("peekends");
    runtime().block_on(async {
        let r = open_in(&ns, 1);
        let (netdev, dev_get) = netdev_dev_get(&r).await;
        let configured = [2u64 << 20];
        let check = |what: &'static str| {
            let r = r.clone();
            let ns_devices = ns.ifindexes().len();
            let rb = receive_buffers(&ns);
            async move {
                assert!(rb.is_empty() || rb == configured, "{what}: {rb:?}");
                let info = family(&r, "netdev").await;
                assert_eq!(info.name, "netdev", "{what}: the next `do`");
                let n = r.dump(netdev.id, dev_get, &[]).await.unwrap().len();
                assert_eq!(n, ns_devices, "{what}: the next whole dump");
            }
        };

        // A kernel error at start.
        let unknown = GenlHeader { cmd: 200, version: 2 };
        let mut dump = r
            .dump_parts(NLCTRL, unknown, &[], r.default_bounds())
            .await
            .unwrap();
        assert!(matches!(dump.next_part().await, Err(RequestError::Kernel(_))));
        drop(dump);
        check("kernel error at start").await;

        // One part: only lo.
        let mut dump = dev_dump(&r, &netdev, dev_get).await;
        let first = dump.next_part().await.unwrap().expect("a part");
        assert_eq!(messages(&first).len(), ns.ifindexes().len(), "lo, in one part");
        assert!(dump.next_part().await.unwrap().is_none(), "then the end");
        drop(dump);
        check("one-part dump").await;

        // Many parts from here on.
        ns.add_ifbs(1500);
        let devices = ns.ifindexes().len();

        // A timeout before the first part was read (a zero wait).
        let none = RequestBounds {
            wait: Duration::ZERO,
            reply_bytes: usize::MAX,
        };
        let mut dump = r.dump_parts(netdev.id, dev_get, &[], none).await;
        if let Ok(d) = dump.as_mut() {
            assert!(matches!(d.next_part().await, Err(RequestError::Timeout(_))));
        }
        drop(dump);
        check("timeout").await;

        // Dropped after two parts.
        let mut dump = dev_dump(&r, &netdev, dev_get).await;
        let mut n = 0;
        for _ in 0..2 {
            n += messages(&dump.next_part().await.unwrap().expect("a part")).len();
        }
        assert!(n < devices);
        drop(dump);
        tokio::time::sleep(Duration::from_millis(200)).await;
        check("dropped mid-way").await;

        // Whole, twice (the socket's second dump runs on a warm socket).
        for round in 0..2 {
            let mut dump = dev_dump(&r, &netdev, dev_get).await;
            let n = count_to_end(&mut dump).await;
            assert_eq!(n, devices, "round {round}: every device once");
            drop(dump);
            assert_eq!(receive_buffers(&ns), configured, "round {round}");
        }
        check("whole").await;

        // The dumps above came in many parts, so the next ones wake their
        // reader before the send: a timeout before the first part, and a
        // dump dropped before it, leave the socket and reader as before.
        let mut dump = r.dump_parts(netdev.id, dev_get, &[], none).await;
        if let Ok(d) = dump.as_mut() {
            assert!(matches!(d.next_part().await, Err(RequestError::Timeout(_))));
        }
        drop(dump);
        check("timeout, a reader woken ahead").await;
        drop(dev_dump(&r, &netdev, dev_get).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
        check("dropped before the first part, a reader woken ahead").await;

        // In one part again: the reader woken ahead is let go, and each
        // dump is whole.
        let gone: String = (0..1500).map(|i| format!("link del ifb{i}\n")).collect();
        ns.ip_batch(&gone);
        for round in 0..2 {
            let mut dump = dev_dump(&r, &netdev, dev_get).await;
            let n = count_to_end(&mut dump).await;
            assert_eq!(n, ns.ifindexes().len(), "one part again, round {round}");
        }
        check("one part again").await;
    });
}
