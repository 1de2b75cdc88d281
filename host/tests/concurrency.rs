//! Many requests at once on the shared request socket: every reply must
//! reach the request it answers, whatever path receives it.

use std::sync::Arc;
use std::time::Duration;

use genl_gateway::netlink::{Requester, SocketOptions};
use genl_wire::ctrl::{CTRL_CMD_GETFAMILY, getfamily_by_name};
use genl_wire::{FamilyInfo, GenlHeader};

#[test]
fn concurrent_do_and_dump_requests_each_get_their_own_replies() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = Requester::open(SocketOptions {
            timeout: Duration::from_secs(10),
            receive_buffer: 4 << 20,
            ..SocketOptions::default()
        })
        .unwrap();
        let genl = GenlHeader {
            cmd: CTRL_CMD_GETFAMILY,
            version: 2,
        };
        let expected = r.dump(0x10, genl, &[]).await.unwrap().len();
        assert!(expected >= 5);
        let mut tasks = Vec::new();
        for name in ["nlctrl", "netdev", "ethtool", "TASKSTATS"] {
            let r: Arc<Requester> = r.clone();
            tasks.push(tokio::spawn(async move {
                let attrs = getfamily_by_name(name).unwrap();
                for _ in 0..1500 {
                    let replies = r.do_request(0x10, genl, 0, &attrs).await.unwrap();
                    assert_eq!(replies.len(), 1, "a GETFAMILY do lost its reply");
                    let info = FamilyInfo::decode(&replies[0].payload[GenlHeader::SIZE..]).unwrap();
                    assert_eq!(info.name, name, "a reply reached the wrong request");
                }
            }));
        }
        for _ in 0..2 {
            let r = r.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..150 {
                    assert_eq!(
                        r.dump(0x10, genl, &[]).await.unwrap().len(),
                        expected,
                        "a dump lost parts"
                    );
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

/// Requests that time out part-way (a dump left mid-way, a `do` given no
/// time) on a small pool, mixed with requests that must succeed: a socket a
/// timed-out request leaves behind never hands its late replies to the
/// next request, so every answer that arrives is the one asked for.
#[test]
fn timed_out_requests_on_pooled_sockets_never_leak_replies_to_the_next_user() {
    use genl_gateway::netlink::{RequestBounds, RequestError};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = Requester::open(SocketOptions {
            timeout: Duration::from_secs(10),
            receive_buffer: 4 << 20,
            request_sockets: 3,
            ..SocketOptions::default()
        })
        .unwrap();
        let genl = GenlHeader {
            cmd: CTRL_CMD_GETFAMILY,
            version: 2,
        };
        let expected = r.dump(0x10, genl, &[]).await.unwrap().len();
        let mut tasks = Vec::new();
        for (t, name) in ["nlctrl", "netdev", "ethtool", "TASKSTATS", "nlctrl", "netdev"]
            .into_iter()
            .enumerate()
        {
            let r: Arc<Requester> = r.clone();
            tasks.push(tokio::spawn(async move {
                let attrs = getfamily_by_name(name).unwrap();
                let (mut ok, mut timed_out) = (0, 0);
                for i in 0..1000u64 {
                    // Tasks 0 and 1 are impatient: anywhere from no time
                    // at all to a few hundred microseconds, so some of their
                    // requests end mid-exchange.
                    let bounds = if t < 2 {
                        RequestBounds {
                            wait: Duration::from_micros((i * 37) % 400),
                            reply_bytes: usize::MAX,
                        }
                    } else {
                        r.default_bounds()
                    };
                    let result = if i % 5 == 0 {
                        r.dump_bounded(0x10, genl, &[], bounds).await.map(|m| {
                            assert_eq!(m.len(), expected, "a dump lost or gained messages");
                        })
                    } else {
                        r.do_request_bounded(0x10, genl, 0, &attrs, bounds)
                            .await
                            .map(|replies| {
                                assert_eq!(replies.len(), 1, "a GETFAMILY do lost its reply");
                                let info =
                                    FamilyInfo::decode(&replies[0].payload[GenlHeader::SIZE..]).unwrap();
                                assert_eq!(info.name, name, "a reply reached the wrong request");
                            })
                    };
                    match result {
                        Ok(()) => ok += 1,
                        Err(RequestError::Timeout(_)) if t < 2 => timed_out += 1,
                        Err(e) => panic!("request {i} of task {t}: {e}"),
                    }
                }
                (ok, timed_out)
            }));
        }
        let mut timed_out = 0;
        for t in tasks {
            timed_out += t.await.unwrap().1;
        }
        assert!(timed_out > 0, "some requests should have run out of time");
    });
}
