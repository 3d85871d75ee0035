//! TFTP packets as bytes: parse what arrives, build what goes out. No allocation when
//! parsing (the request borrows the datagram), and builders write into a caller's
//! buffer so the transfer loop can reuse one per session.
//!
//! Formats: RFC 1350 §5 (RRQ/WRQ, DATA, ACK, ERROR; opcodes 1-5), RFC 2347 §"Packet
//! Formats" (options appended to the request, OACK = opcode 6).

/// RFC 1350 §5 opcodes, plus OACK from RFC 2347.
pub mod opcode {
    /// Read request.
    pub const RRQ: u16 = 1;
    /// Write request.
    pub const WRQ: u16 = 2;
    /// Data block.
    pub const DATA: u16 = 3;
    /// Acknowledgment.
    pub const ACK: u16 = 4;
    /// Error.
    pub const ERROR: u16 = 5;
    /// Option acknowledgment (RFC 2347).
    pub const OACK: u16 = 6;
}

/// RFC 1350 Appendix "Error Codes", plus 8 from RFC 2347.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    /// 0: not defined, see the message.
    NotDefined = 0,
    /// 1: file not found.
    FileNotFound = 1,
    /// 2: access violation.
    AccessViolation = 2,
    /// 3: disk full or allocation exceeded.
    AllocationExceeded = 3,
    /// 4: illegal TFTP operation.
    IllegalOperation = 4,
    /// 5: unknown transfer ID.
    UnknownTid = 5,
    /// 8: option negotiation refused (RFC 2347).
    OptionNegotiation = 8,
}

/// Transfer mode (RFC 1350 §1). Both are served as octets: the appliance only serves
/// binaries and iPXE scripts, which need no CRLF translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// "octet".
    Octet,
    /// "netascii".
    Netascii,
}

/// Options a client asked for (RFC 2347), values as requested. Unknown options are
/// ignored (RFC 2347: "Options which the server does not support should be ignored").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequestedOptions {
    /// RFC 2348.
    pub blksize: Option<u64>,
    /// RFC 2349, seconds.
    pub timeout: Option<u64>,
    /// RFC 2349 (0 in a read request).
    pub tsize: Option<u64>,
    /// RFC 7440.
    pub windowsize: Option<u64>,
}

/// A read or write request, borrowing the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// RRQ (false) or WRQ (true).
    pub write: bool,
    /// The file name as sent (not yet sanitised).
    pub filename: &'a str,
    /// Transfer mode.
    pub mode: Mode,
    /// Requested options.
    pub options: RequestedOptions,
}

/// Why a request datagram is not a valid request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// Shorter than an opcode.
    #[error("datagram too short")]
    Short,
    /// Not RRQ or WRQ on the request port.
    #[error("opcode {0} is not a request")]
    NotARequest(u16),
    /// A field is not NUL-terminated.
    #[error("unterminated field")]
    Unterminated,
    /// The file name or an option is not UTF-8 (RFC 1350: netascii).
    #[error("field is not text")]
    NotText,
    /// Mode other than octet or netascii ("mail" is for writes only, RFC 1350 §1).
    #[error("unsupported mode")]
    Mode,
}

/// Splits the next NUL-terminated field off `buf`.
fn field(buf: &[u8]) -> Result<(&[u8], &[u8]), Malformed> {
    let end = buf.iter().position(|&b| b == 0).ok_or(Malformed::Unterminated)?;
    Ok((&buf[..end], &buf[end + 1..]))
}

/// Parses an RRQ or WRQ (RFC 1350 §5, options per RFC 2347). Option names are case
/// insensitive (RFC 2347); a value that is not a decimal number drops that option.
pub fn parse_request(buf: &[u8]) -> Result<Request<'_>, Malformed> {
    if buf.len() < 2 {
        return Err(Malformed::Short);
    }
    let op = u16::from_be_bytes([buf[0], buf[1]]);
    let write = match op {
        opcode::RRQ => false,
        opcode::WRQ => true,
        other => return Err(Malformed::NotARequest(other)),
    };
    let (name, rest) = field(&buf[2..])?;
    let filename = std::str::from_utf8(name).map_err(|_| Malformed::NotText)?;
    let (mode, mut rest) = field(rest)?;
    let mode = if mode.eq_ignore_ascii_case(b"octet") {
        Mode::Octet
    } else if mode.eq_ignore_ascii_case(b"netascii") {
        Mode::Netascii
    } else {
        return Err(Malformed::Mode);
    };
    let mut options = RequestedOptions::default();
    // Trailing garbage after the last complete pair is ignored, like a missing value.
    while let Ok((name, after)) = field(rest) {
        let Ok((value, after)) = field(after) else { break };
        rest = after;
        let Some(v) = decimal(value) else { continue };
        let slot = if name.eq_ignore_ascii_case(b"blksize") {
            &mut options.blksize
        } else if name.eq_ignore_ascii_case(b"timeout") {
            &mut options.timeout
        } else if name.eq_ignore_ascii_case(b"tsize") {
            &mut options.tsize
        } else if name.eq_ignore_ascii_case(b"windowsize") {
            &mut options.windowsize
        } else {
            continue;
        };
        // The first occurrence wins; a repeated option cannot override it.
        slot.get_or_insert(v);
    }
    Ok(Request {
        write,
        filename,
        mode,
        options,
    })
}

/// An ASCII decimal of at most 19 digits (fits u64), else None.
fn decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// What a client sends on a transfer's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply<'a> {
    /// ACK of a block number (RFC 1350 §5).
    Ack(u16),
    /// The client gave up (RFC 1350 §7: an ERROR ends the transfer, it is neither
    /// acknowledged nor retransmitted). Code and message.
    Error(u16, &'a [u8]),
    /// Anything else (ignored).
    Other,
}

/// Parses a datagram from the client of a running transfer.
pub fn parse_reply(buf: &[u8]) -> Reply<'_> {
    if buf.len() < 4 {
        return Reply::Other;
    }
    let n = u16::from_be_bytes([buf[2], buf[3]]);
    match u16::from_be_bytes([buf[0], buf[1]]) {
        opcode::ACK => Reply::Ack(n),
        opcode::ERROR => {
            let msg = &buf[4..];
            let end = msg.iter().position(|&b| b == 0).unwrap_or(msg.len());
            Reply::Error(n, &msg[..end])
        }
        _ => Reply::Other,
    }
}

/// The 4-byte DATA header (RFC 1350 §5): opcode 3 and the block number. The payload
/// follows it in the same datagram (sent as a second iovec, never copied).
pub fn data_header(block: u16) -> [u8; 4] {
    let [a, b] = block.to_be_bytes();
    [0, opcode::DATA as u8, a, b]
}

/// Writes an ERROR packet (RFC 1350 §5) into `out`.
pub fn write_error(out: &mut Vec<u8>, code: ErrorCode, message: &str) {
    out.clear();
    out.extend_from_slice(&opcode::ERROR.to_be_bytes());
    out.extend_from_slice(&(code as u16).to_be_bytes());
    // The message is netascii; keep it printable and NUL-free.
    out.extend(message.bytes().filter(|b| (0x20..0x7f).contains(b)));
    out.push(0);
}

/// Writes an OACK (RFC 2347) with the accepted options, in a fixed order, into `out`.
pub fn write_oack(out: &mut Vec<u8>, pairs: &[(&str, u64)]) {
    out.clear();
    out.extend_from_slice(&opcode::OACK.to_be_bytes());
    for (name, value) in pairs {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.to_string().as_bytes());
        out.push(0);
    }
}

/// Parses an OACK into (name, value) pairs (for tests and clients).
pub fn parse_oack(buf: &[u8]) -> Option<Vec<(String, String)>> {
    if buf.len() < 2 || u16::from_be_bytes([buf[0], buf[1]]) != opcode::OACK {
        return None;
    }
    let mut rest = &buf[2..];
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (n, after) = field(rest).ok()?;
        let (v, after) = field(after).ok()?;
        out.push((
            String::from_utf8_lossy(n).into_owned(),
            String::from_utf8_lossy(v).into_owned(),
        ));
        rest = after;
    }
    Some(out)
}
