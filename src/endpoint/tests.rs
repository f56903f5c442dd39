//! URLs in and out: what parses, what is refused, and that every
//! endpoint reads back as itself.

use super::*;
use proptest::prelude::*;

fn parse(s: &str) -> Endpoint {
    s.parse().unwrap()
}

#[test]
fn tcp_with_bracketed_ipv6() {
    let e = parse("tcp://[::1]:21567");
    assert_eq!(e.transport, Transport::Tcp);
    assert_eq!(
        e.address,
        Address::Inet {
            host: "::1".into(),
            port: 21567
        }
    );
    assert_eq!(e.service, ServiceKind::Stamp);
}

#[test]
fn empty_host_means_all_interfaces() {
    let e = parse("udp://:0");
    assert_eq!(
        e.address,
        Address::Inet {
            host: String::new(),
            port: 0
        }
    );
}

#[test]
fn unix_path_and_abstract_name() {
    assert_eq!(
        parse("unix:///run/t.sock").address,
        Address::Path("/run/t.sock".into())
    );
    assert_eq!(
        parse("unixgram://@tsecho").address,
        Address::Abstract("tsecho".into())
    );
}

#[test]
fn service_prefix_selects_the_service() {
    let e = parse("daytime+udp://:13");
    assert_eq!(e.service, ServiceKind::Daytime);
    assert_eq!(e.transport, Transport::Udp);
}

#[test]
fn bad_inputs_are_refused_with_a_reason() {
    for bad in [
        "tcp//x:1",
        "sctp://:1",
        "tcp://host",
        "tcp://:70000",
        "tcp://::1:80",
        "tcp://[::1:80",
        "unix://",
        "unix://@",
        "gopher+tcp://:70",
        "proxy+udp://:1",
        "echo+echo+tcp://:1",
        "tcp://:1?mode=0600",
        "unix://@name?mode=0600",
        "unix:///x?mode=9",
        "unix:///x?colour=red",
        "tcp://:1?drop=1%",
        "udp://:1?reset=1%",
        "udp://:1?drop=150%",
        "tcp://:1?delay=1ms&jitter=2ms",
        "tcp://:1?delay=",
    ] {
        let err = bad.parse::<Endpoint>().unwrap_err();
        assert!(!err.to_string().is_empty(), "{bad}");
    }
}

fn any_endpoint() -> impl Strategy<Value = Endpoint> {
    let service = proptest::sample::select(
        crate::service::SERVICES
            .iter()
            .map(|i| i.kind)
            .collect::<Vec<_>>(),
    );
    let host = prop_oneof![
        Just(String::new()),
        any::<std::net::Ipv4Addr>().prop_map(|ip| ip.to_string()),
        any::<std::net::Ipv6Addr>().prop_map(|ip| ip.to_string()),
        "[a-z][a-z0-9-]{0,20}(\\.[a-z][a-z0-9-]{0,10}){0,2}",
    ];
    let inet = (
        proptest::sample::select(vec![Transport::Tcp, Transport::Tls, Transport::Udp]),
        host,
        any::<u16>(),
    )
        .prop_map(|(t, host, port)| (t, Address::Inet { host, port }));
    let unix = (
        proptest::sample::select(vec![Transport::Unix, Transport::UnixGram]),
        prop_oneof![
            "/[a-zA-Z0-9_./-]{1,60}".prop_map(|p| Address::Path(p.into())),
            "[a-zA-Z0-9_.-]{1,30}".prop_map(Address::Abstract),
        ],
    );
    let socket_file = (
        proptest::option::of(0u32..=0o777),
        proptest::option::of("[a-z_][a-z0-9_-]{0,15}"),
        proptest::option::of("[0-9]{1,5}"),
    )
        .prop_map(|(mode, owner, group)| SocketFile { mode, owner, group });
    (service, prop_oneof![inet, unix], any::<bool>(), socket_file).prop_map(
        |(s, (t, a), proxy, file)| Endpoint {
            // STAMP lives on UDP only: elsewhere it stands in for stamp.
            service: if t == Transport::Udp {
                s
            } else if s == ServiceKind::Rfc8762 {
                ServiceKind::Stamp
            } else {
                s
            },
            stateful: s == ServiceKind::Rfc8762 && t == Transport::Udp && proxy,
            proxy: proxy && matches!(t, Transport::Tcp | Transport::Tls),
            socket_file: if matches!(a, Address::Path(_)) {
                file
            } else {
                SocketFile::default()
            },
            ..Endpoint::new(s, t, a)
        },
    )
}

proptest! {
    #[test]
    fn any_endpoint_round_trips_through_its_url(e in any_endpoint()) {
        prop_assert_eq!(e.to_string().parse::<Endpoint>().unwrap(), e);
    }

    #[test]
    fn any_string_parses_or_fails_without_panic_and_parsed_ones_are_stable(s in "\\PC{0,40}") {
        if let Ok(e) = s.parse::<Endpoint>() {
            prop_assert_eq!(e.to_string().parse::<Endpoint>().unwrap(), e);
        }
    }
}

#[test]
fn display_round_trips() {
    for s in [
        "tcp://[::1]:21567",
        "tcp://:21567",
        "udp://127.0.0.1:0",
        "unix:///tmp/x.sock",
        "unixgram://@name",
        "echo+tcp://:7",
        "time+unix:///run/time.sock",
        "proxy+tcp://:21567",
        "echo+proxy+tcp://127.0.0.1:7",
        "tls://:21568",
        "daytime+proxy+tls://[::1]:13",
        "unix:///run/t.sock?mode=0660&group=tsecho",
        "echo+unixgram:///run/e.sock?owner=0",
        "tcp://:21567?delay=20ms&jitter=5ms",
        "udp://:21567?delay=10ms&drop=1%&duplicate=0.5%",
        "unix:///run/t.sock?mode=0660&reset=2%&close-after=3&bandwidth=64KiB&seed=7",
    ] {
        assert_eq!(parse(s).to_string(), s);
    }
}

#[test]
fn stamp_reflectors_are_udp_only_and_take_a_mode() {
    let e: Endpoint = "rfc8762+udp://:862?mode=stateful".parse().unwrap();
    assert!(e.stateful);
    assert_eq!(e.to_string(), "rfc8762+udp://:862?mode=stateful");
    let plain: Endpoint = "rfc8762+udp://127.0.0.1:0".parse().unwrap();
    assert!(!plain.stateful);
    for bad in [
        "rfc8762+tcp://:862",
        "rfc8762+unixgram:///tmp/x",
        "rfc8762+udp://:862?mode=sometimes",
        "udp://:7?mode=stateful",
    ] {
        assert!(bad.parse::<Endpoint>().is_err(), "{bad}");
    }
    let sockperf: Endpoint = "sockperf+tcp://:11111".parse().unwrap();
    assert_eq!(sockperf.service, ServiceKind::Sockperf);
}
