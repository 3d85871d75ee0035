//! The outer layer of a backup file: the tar archive encrypted with age (the v1 format,
//! `age-encryption.org/v1`, X25519 recipients `age1…` as `age-keygen` prints them)
//! to the operator's recipients, so a copy of the file reveals nothing without the
//! operator's identity: not the secrets key inside it, not the API's TLS key, not
//! the token hashes. Plaintext only when asked for (`--insecure-plaintext`).
//! Reading detects the format by its first bytes: binary age, ASCII-armored age
//! (`-----BEGIN AGE ENCRYPTED FILE-----`), or a plain tar.

use std::io::{BufReader, Read, Write};
use std::path::Path;
use std::str::FromStr;

use super::{BackupError, io_err};

/// How a backup is written.
#[derive(Clone)]
pub enum Protection {
    /// Encrypted to these recipients (at least one).
    Encrypt(Vec<age::x25519::Recipient>),
    /// A plain tar (`--insecure-plaintext` without recipients).
    Plaintext,
}

impl std::fmt::Debug for Protection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Encrypt(r) => write!(f, "Encrypt({} recipient(s))", r.len()),
            Self::Plaintext => f.write_str("Plaintext"),
        }
    }
}

impl Protection {
    /// Recipients from `--recipient` and `backup.recipients`; without any, plaintext
    /// only if `allow_plaintext`, else a refusal that says what to do.
    pub fn choose(recipients: &[String], allow_plaintext: bool) -> Result<Self, BackupError> {
        let parsed = recipients
            .iter()
            .map(|r| {
                age::x25519::Recipient::from_str(r.trim()).map_err(|e| {
                    BackupError::Crypt(format!(
                        "recipient {r:?} is not an age X25519 recipient (age1…): {e}"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        match (parsed.is_empty(), allow_plaintext) {
            (false, _) => Ok(Self::Encrypt(parsed)),
            (true, true) => Ok(Self::Plaintext),
            (true, false) => Err(BackupError::Crypt(
                "refusing to write a plaintext backup (it holds the secrets key, the API's TLS key and \
                 the token store): pass --recipient age1… (make one with age-keygen and keep its \
                 identity file apart from the appliance) or set backup.recipients in the configuration; \
                 --insecure-plaintext allows a plaintext archive"
                    .into(),
            )),
        }
    }

    /// Whether the output is encrypted.
    pub fn encrypted(&self) -> bool {
        matches!(self, Self::Encrypt(_))
    }
}

/// Where the tar archive goes: straight to the file, or through age.
pub(super) enum Sink<W: Write> {
    Plain(W),
    Age(age::stream::StreamWriter<W>),
}

impl<W: Write> Sink<W> {
    pub(super) fn new(out: W, p: &Protection) -> Result<Self, BackupError> {
        match p {
            Protection::Plaintext => Ok(Self::Plain(out)),
            Protection::Encrypt(rs) => {
                let enc = age::Encryptor::with_recipients(rs.iter().map(|r| r as &dyn age::Recipient))
                    .map_err(|e| BackupError::Crypt(format!("encrypting: {e}")))?;
                let w = enc
                    .wrap_output(out)
                    .map_err(|e| BackupError::Crypt(format!("encrypting: {e}")))?;
                Ok(Self::Age(w))
            }
        }
    }

    /// Ends the age stream (its last chunk and tag) and returns the file.
    pub(super) fn finish(self) -> std::io::Result<W> {
        match self {
            Self::Plain(w) => Ok(w),
            Self::Age(w) => w.finish(),
        }
    }
}

impl<W: Write> Write for Sink<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(w) => w.write(buf),
            Self::Age(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Plain(w) => w.flush(),
            Self::Age(w) => w.flush(),
        }
    }
}

/// Opens a backup file for reading: the tar stream, and whether it was encrypted.
/// An encrypted file needs `identity` (an age identity file, `AGE-SECRET-KEY-1…`
/// lines as `age-keygen` writes them).
pub fn open(file: &Path, identity: Option<&Path>) -> Result<(Box<dyn Read>, bool), BackupError> {
    let mut head = [0u8; 34];
    let n = {
        let mut f = std::fs::File::open(file).map_err(io_err(file))?;
        read_up_to(&mut f, &mut head).map_err(io_err(file))?
    };
    let head = &head[..n];
    let encrypted =
        head.starts_with(b"age-encryption.org/v1") || head.starts_with(b"-----BEGIN AGE ENCRYPTED FILE");
    let f = BufReader::new(std::fs::File::open(file).map_err(io_err(file))?);
    if !encrypted {
        return Ok((Box::new(f), false));
    }
    let Some(identity) = identity else {
        return Err(BackupError::Crypt(format!(
            "{} is encrypted: pass --identity FILE (the age identity of one of its recipients)",
            file.display()
        )));
    };
    let ids = age::IdentityFile::from_file(identity.display().to_string())
        .map_err(|e| BackupError::Crypt(format!("{}: {e}", identity.display())))?
        .into_identities()
        .map_err(|e| BackupError::Crypt(format!("{}: {e}", identity.display())))?;
    let dec = age::Decryptor::new(age::armor::ArmoredReader::new(f))
        .map_err(|e| BackupError::Crypt(format!("{}: not a readable age file: {e}", file.display())))?;
    let r = dec
        .decrypt(ids.iter().map(|i| i.as_ref() as &dyn age::Identity))
        .map_err(|e| {
            BackupError::Crypt(format!(
                "{}: does not decrypt with {}: {e}",
                file.display(),
                identity.display()
            ))
        })?;
    Ok((Box::new(r), true))
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
