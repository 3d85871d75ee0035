//! Decoding and encoding with dhcproto, hardened (crates.md §5.1): the magic cookie
//! is checked here (dhcproto does not), the decoder runs inside `catch_unwind` (a
//! fuzz-found `assert!` was once reachable from the wire, dhcproto#77), and header
//! strings are length-checked before dhcproto's asserting setters see them.

use dhcproto::{Decodable, Decoder, Encodable, Encoder};

use super::v4::Message;

/// RFC 2131 §3: the options field starts with 99.130.83.99.
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// Offset of the cookie: the fixed BOOTP header is 236 bytes (RFC 951).
pub const COOKIE_OFFSET: usize = 236;
/// Largest datagram the servers read; replies never exceed 576 + options we add.
pub const MAX_DATAGRAM: usize = 1500;

/// Why a datagram is not a DHCP message we can use. Every variant is dropped and
/// counted by the server under [`WireError::reason`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than the BOOTP header plus cookie.
    #[error("datagram too short ({0} bytes)")]
    TooShort(usize),
    /// Bigger than any DHCP message we accept.
    #[error("datagram too long ({0} bytes)")]
    TooLong(usize),
    /// Plain BOOTP or garbage: no DHCP magic cookie.
    #[error("no DHCP magic cookie")]
    NoCookie,
    /// dhcproto rejected it.
    #[error("undecodable: {0}")]
    Decode(String),
    /// The decoder panicked (caught); a bug upstream, never fatal here.
    #[error("decoder panicked")]
    Panicked,
    /// Encoding a reply failed.
    #[error("cannot encode reply: {0}")]
    Encode(String),
}

impl WireError {
    /// Short label for the `reason` metrics label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooShort(_) | Self::TooLong(_) => "bad_length",
            Self::NoCookie => "no_cookie",
            Self::Decode(_) => "undecodable",
            Self::Panicked => "decoder_panic",
            Self::Encode(_) => "encode",
        }
    }
}

/// Decodes one datagram. Never panics.
pub fn decode(buf: &[u8]) -> Result<Message, WireError> {
    if buf.len() < COOKIE_OFFSET + MAGIC_COOKIE.len() {
        return Err(WireError::TooShort(buf.len()));
    }
    if buf.len() > MAX_DATAGRAM * 44 {
        // An IPv4 datagram is at most 64 KiB; anything larger is not from a socket.
        return Err(WireError::TooLong(buf.len()));
    }
    if buf[COOKIE_OFFSET..COOKIE_OFFSET + 4] != MAGIC_COOKIE {
        return Err(WireError::NoCookie);
    }
    match std::panic::catch_unwind(|| Message::decode(&mut Decoder::new(buf))) {
        Ok(Ok(m)) => Ok(m),
        Ok(Err(e)) => Err(WireError::Decode(e.to_string())),
        Err(_) => Err(WireError::Panicked),
    }
}

/// Encodes a reply.
pub fn encode(msg: &Message) -> Result<Vec<u8>, WireError> {
    let mut buf = Vec::with_capacity(576);
    msg.encode(&mut Encoder::new(&mut buf))
        .map_err(|e| WireError::Encode(e.to_string()))?;
    Ok(buf)
}

/// A header string (`file`, `sname`) as dhcproto decodes it: without the trailing
/// NULs it keeps (crates.md §5.1), lossily as UTF-8.
pub fn header_str(field: Option<&[u8]>) -> Option<String> {
    let b = field?;
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    let s = String::from_utf8_lossy(&b[..end]).into_owned();
    (!s.is_empty()).then_some(s)
}

/// Largest `file` header value (RFC 2131 §2: 128 octets, NUL-terminated when shorter).
pub const FILE_MAX: usize = 128;
/// Largest `sname` header value (64 octets).
pub const SNAME_MAX: usize = 64;
