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
