use super::packet::{self, ErrorCode, Mode, Reply, RequestedOptions};
use super::session::{AckOutcome, Limits, Sender, negotiate};

const LIMITS: Limits = Limits {
    max_blksize: 1468,
    max_window: 16,
    default_timeout_secs: 2,
    max_timeout_secs: 5,
};

fn rrq(name: &str, opts: &[(&str, &str)]) -> Vec<u8> {
    let mut p = vec![0, 1];
    p.extend_from_slice(name.as_bytes());
    p.extend_from_slice(b"\0octet\0");
    for (k, v) in opts {
        p.extend_from_slice(k.as_bytes());
        p.push(0);
        p.extend_from_slice(v.as_bytes());
        p.push(0);
    }
    p
}

#[test]
fn parses_requests_with_options_case_insensitively() {
    let p = rrq(
        "ipxe.efi",
        &[
            ("BLKSIZE", "1468"),
            ("tsize", "0"),
            ("WindowSize", "8"),
            ("x", "y"),
        ],
    );
    let r = packet::parse_request(&p).unwrap();
    assert!(!r.write);
    assert_eq!(r.filename, "ipxe.efi");
    assert_eq!(r.mode, Mode::Octet);
    assert_eq!(
        r.options,
        RequestedOptions {
            blksize: Some(1468),
            timeout: None,
            tsize: Some(0),
            windowsize: Some(8)
        }
    );
    assert_eq!(
        packet::parse_request(b"\0\x02f\0NETASCII\0").unwrap().mode,
        Mode::Netascii
    );
}

#[test]
fn refuses_malformed_requests() {
    assert_eq!(packet::parse_request(b"\0"), Err(packet::Malformed::Short));
    assert_eq!(
        packet::parse_request(b"\0\x04\0\0"),
        Err(packet::Malformed::NotARequest(4))
    );
    assert_eq!(
        packet::parse_request(b"\0\x01file"),
        Err(packet::Malformed::Unterminated)
    );
    assert_eq!(
        packet::parse_request(b"\0\x01f\0mail\0"),
        Err(packet::Malformed::Mode)
    );
    assert_eq!(
        packet::parse_request(b"\0\x01\xff\0octet\0"),
        Err(packet::Malformed::NotText)
    );
    // A non-numeric or absurd value drops that option only.
    let p = rrq(
        "f",
        &[
            ("blksize", "12x"),
            ("timeout", "99999999999999999999999"),
            ("tsize", "0"),
        ],
    );
    let o = packet::parse_request(&p).unwrap().options;
    assert_eq!((o.blksize, o.timeout, o.tsize), (None, None, Some(0)));
}

#[test]
fn parses_replies_and_builds_packets() {
    assert_eq!(packet::parse_reply(b"\0\x04\x01\x02"), Reply::Ack(0x0102));
    assert_eq!(
        packet::parse_reply(b"\0\x05\0\x08abort\0"),
        Reply::Error(8, b"abort")
    );
    assert_eq!(packet::parse_reply(b"\0\x04\x01"), Reply::Other);
    assert_eq!(packet::data_header(0xfffe), [0, 3, 0xff, 0xfe]);
    let mut out = Vec::new();
    packet::write_error(&mut out, ErrorCode::AllocationExceeded, "busy\n\0x");
    assert_eq!(out, b"\0\x05\0\x03busyx\0");
    packet::write_oack(&mut out, &[("blksize", 1468), ("tsize", 7)]);
    assert_eq!(out, b"\0\x06blksize\x001468\0tsize\x007\0");
    assert_eq!(
        packet::parse_oack(&out).unwrap(),
        vec![("blksize".into(), "1468".into()), ("tsize".into(), "7".into())]
    );
}

fn opts(
    blksize: Option<u64>,
    timeout: Option<u64>,
    tsize: Option<u64>,
    windowsize: Option<u64>,
) -> RequestedOptions {
    RequestedOptions {
        blksize,
        timeout,
        tsize,
        windowsize,
    }
}

#[test]
fn negotiation_clamps_blksize_and_window_and_declines_long_timeouts() {
    let n = negotiate(&opts(Some(65464), Some(255), Some(0), Some(64)), 1000, &LIMITS);
    assert_eq!((n.blksize, n.window, n.timeout_secs), (1468, 16, 2));
    let a = n.oack.unwrap();
    // RFC 2349: a timeout is echoed unchanged or not at all; 255 is above the max.
    assert_eq!(a.timeout, None);
    assert_eq!(
        a.pairs().collect::<Vec<_>>(),
        vec![("blksize", 1468), ("tsize", 1000), ("windowsize", 16)]
    );
    let n = negotiate(&opts(None, Some(4), None, None), 1, &LIMITS);
    assert_eq!((n.timeout_secs, n.oack.unwrap().timeout), (4, Some(4)));
    // blksize below 8 and windowsize 0 are ignored; no accepted option: no OACK.
    let n = negotiate(&opts(Some(7), Some(0), None, Some(0)), 1, &LIMITS);
    assert_eq!((n.blksize, n.window, n.oack), (512, 1, None));
    // A default above the maximum is clamped too.
    let l = Limits {
        default_timeout_secs: 30,
        ..LIMITS
    };
    assert_eq!(negotiate(&opts(None, None, None, None), 1, &l).timeout_secs, 5);
}

#[test]
fn nothing_but_the_oack_until_the_peer_answers_then_whole_windows() {
    let n = negotiate(&opts(Some(512), None, None, Some(8)), 512 * 20, &LIMITS);
    let mut s = Sender::new(512 * 20, &n);
    assert!(s.oack_pending());
    assert!(s.to_send().is_empty(), "nothing before ACK 0");
    assert_eq!(s.on_ack(1), AckOutcome::Stale);
    assert_eq!(s.on_ack(0), AckOutcome::Advanced);
    assert_eq!(s.to_send(), 1..=8, "ACK 0 proved the peer: a whole window");
    assert_eq!(s.on_ack(9), AckOutcome::Stale, "block 9 was never sent");
    assert_eq!(s.on_ack(0), AckOutcome::Duplicate);
    // A mid-window ACK restarts the window after it (RFC 7440 §4).
    assert_eq!(s.on_ack(5), AckOutcome::Advanced);
    assert_eq!(s.to_send(), 6..=13);
    assert_eq!(s.on_ack(13), AckOutcome::Advanced);
    // 20 full blocks: an empty block 21 ends the file.
    assert_eq!(s.to_send(), 14..=21);
    assert_eq!(s.range(21), 10240..10240);
    assert_eq!(s.on_ack(21), AckOutcome::Done);
    assert!(s.done());
}

#[test]
fn without_options_one_block_at_a_time() {
    let n = negotiate(&opts(None, None, None, None), 1000, &LIMITS);
    let mut s = Sender::new(1000, &n);
    assert!(!s.oack_pending());
    assert_eq!(s.to_send(), 1..=1);
    assert_eq!(s.to_send(), 1..=1, "a retransmission is block 1 again");
    assert_eq!(s.on_ack(2), AckOutcome::Stale);
    assert_eq!(s.on_ack(1), AckOutcome::Advanced);
    assert_eq!(s.to_send(), 2..=2);
    assert_eq!(s.range(2), 512..1000);
    assert_eq!(s.on_ack(2), AckOutcome::Done);
}

#[test]
fn block_numbers_roll_over_past_65535() {
    let len = 512 * 70_000 + 3;
    let n = negotiate(&opts(None, None, None, Some(16)), len, &LIMITS);
    let mut s = Sender::new(len, &n);
    assert_eq!(s.on_ack(0), AckOutcome::Advanced, "ACK 0 of the OACK");
    let mut acked = 0u64;
    loop {
        let r = s.to_send();
        let last = *r.end();
        assert!(*r.start() == acked + 1);
        match s.on_ack(Sender::wire(last)) {
            AckOutcome::Done => break,
            AckOutcome::Advanced => acked = last,
            o => panic!("{o:?} at {last}"),
        }
    }
    assert_eq!(s.acked(), 70_001);
    assert_eq!(s.range(70_001), len - 3..len);
}

proptest::proptest! {
    #[test]
    fn parsers_never_panic(b in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
        let _ = packet::parse_request(&b);
        let _ = packet::parse_reply(&b);
        let _ = packet::parse_oack(&b);
    }

    #[test]
    fn acks_never_move_past_what_was_sent(acks in proptest::collection::vec(proptest::num::u16::ANY, 0..200)) {
        let n = negotiate(&opts(Some(512), None, Some(0), Some(4)), 512 * 300, &LIMITS);
        let mut s = Sender::new(512 * 300, &n);
        let mut sent = 0;
        for a in acks {
            let r = s.to_send();
            if !r.is_empty() { sent = *r.end(); }
            let _ = s.on_ack(a);
            proptest::prop_assert!(s.acked() <= sent);
        }
    }
}
