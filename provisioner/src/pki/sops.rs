//! The subset of SOPS needed for talhelper's `talsecret.sops.yaml`: YAML files whose
//! leaf values are `ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]`, a data key wrapped for
//! age recipients (`sops.age[].enc`, an armored age file), and the `sops.mac`
//! integrity check.
//!
//! Format facts (getsops/sops `aes/cipher.go`, `tree.go`): AES-256-GCM with a 32-byte
//! IV; the additional data of a value is its key path joined with `:` plus a final
//! `:`; the MAC is the upper-case hex SHA-512 over every plaintext value in document
//! order, itself encrypted with the `lastmodified` string as additional data.
//! `lastmodified` must be whole-second RFC 3339: sops re-formats it before using it
//! as additional data. provisioner/tests/integration/talos_sops.rs checks both directions
//! against the real `sops` binary.

use std::io::Read;

use aes_gcm::aead::consts::U32;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::Aes256;
use aes_gcm::{AesGcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};
use sha2::{Digest, Sha512};

type Cipher = AesGcm<Aes256, U32>;

/// Why a SOPS document cannot be decrypted or encrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SopsError {
    /// The document is not YAML.
    #[error(transparent)]
    Yaml(#[from] provisioner_core::talos::yaml::YamlError),
    /// The document, its `sops` block or the age key is malformed, does not match,
    /// or was tampered with (the message says which).
    #[error("{0}")]
    Invalid(String),
}

impl From<&str> for SopsError {
    fn from(why: &str) -> Self {
        Self::Invalid(why.to_string())
    }
}

impl From<String> for SopsError {
    fn from(why: String) -> Self {
        Self::Invalid(why)
    }
}

/// Whether `text` is a SOPS document (has a top-level `sops:` mapping).
pub fn is_sops(text: &str) -> bool {
    provisioner_core::talos::yaml::from_str(text)
        .ok()
        .and_then(|v| v.get("sops").cloned())
        .is_some_and(|s| s.is_object())
}

/// The `AGE-SECRET-KEY-…` lines of an age key file (comments allowed; sops' own
/// `keys.txt` may hold several, each tried in turn).
fn identities(key_file: &str) -> Result<Vec<age::x25519::Identity>, SopsError> {
    let ids = key_file
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("AGE-SECRET-KEY-"))
        .map(|l| {
            l.parse()
                .map_err(|_| SopsError::from("the age key file's identity does not parse"))
        })
        .collect::<Result<Vec<age::x25519::Identity>, _>>()?;
    if ids.is_empty() {
        return Err("the age key file has no AGE-SECRET-KEY line".into());
    }
    Ok(ids)
}

/// The parts of an `ENC[…]` value: ciphertext, IV, tag, type.
type EncParts = (Vec<u8>, Vec<u8>, Vec<u8>, String);

fn parse_enc(s: &str) -> Option<EncParts> {
    let inner = s.strip_prefix("ENC[AES256_GCM,")?.strip_suffix(']')?;
    let (mut data, mut iv, mut tag, mut ty) = (None, None, None, None);
    for part in inner.split(',') {
        let (k, v) = part.split_once(':')?;
        match k {
            "data" => data = STANDARD.decode(v).ok(),
            "iv" => iv = STANDARD.decode(v).ok(),
            "tag" => tag = STANDARD.decode(v).ok(),
            "type" => ty = Some(v.to_string()),
            _ => {}
        }
    }
    Some((data?, iv?, tag?, ty?))
}

fn decrypt_value(s: &str, key: &[u8; 32], aad: &str) -> Result<(String, String), SopsError> {
    let (mut data, iv, tag, ty) = parse_enc(s).ok_or("malformed ENC[] value")?;
    if iv.len() != 32 {
        return Err("IV is not 32 bytes".into());
    }
    data.extend_from_slice(&tag);
    let cipher = Cipher::new(key.into());
    let pt = cipher
        .decrypt(
            Nonce::<U32>::from_slice(&iv),
            Payload {
                msg: &data,
                aad: aad.as_bytes(),
            },
        )
        .map_err(|_| format!("value at {aad:?} does not decrypt (wrong key or tampered)"))?;
    Ok((String::from_utf8(pt).map_err(|_| "value is not UTF-8")?, ty))
}

fn encrypt_value(plain: &str, ty: &str, key: &[u8; 32], aad: &str) -> String {
    let mut iv = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut iv);
    let cipher = Cipher::new(key.into());
    // Encryption with a valid key and nonce size cannot fail.
    let mut ct = cipher
        .encrypt(
            Nonce::<U32>::from_slice(&iv),
            Payload {
                msg: plain.as_bytes(),
                aad: aad.as_bytes(),
            },
        )
        .unwrap_or_default();
    let tag = ct.split_off(ct.len().saturating_sub(16));
    format!(
        "ENC[AES256_GCM,data:{},iv:{},tag:{},type:{ty}]",
        STANDARD.encode(ct),
        STANDARD.encode(iv),
        STANDARD.encode(tag)
    )
}

/// Walks leaves in document order, calling `f(path_aad, value)`.
fn walk(
    v: &mut Value,
    path: &mut Vec<String>,
    f: &mut dyn FnMut(&str, &mut Value) -> Result<(), SopsError>,
) -> Result<(), SopsError> {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                path.push(k.clone());
                walk(x, path, f)?;
                path.pop();
            }
            Ok(())
        }
        Value::Array(a) => a.iter_mut().try_for_each(|x| walk(x, path, f)),
        leaf => f(&format!("{}:", path.join(":")), leaf),
    }
}

fn data_key(meta: &Map<String, Value>, ids: &[age::x25519::Identity]) -> Result<[u8; 32], SopsError> {
    let entries = meta
        .get("age")
        .and_then(Value::as_array)
        .ok_or("no sops.age recipients")?;
    for e in entries {
        let Some(enc) = e.get("enc").and_then(Value::as_str) else {
            continue;
        };
        let reader = age::armor::ArmoredReader::new(enc.as_bytes());
        let Ok(dec) = age::Decryptor::new_buffered(reader) else {
            continue;
        };
        if let Ok(mut r) = dec.decrypt(ids.iter().map(|i| i as &dyn age::Identity)) {
            let mut key = Vec::new();
            r.read_to_end(&mut key).map_err(|e| e.to_string())?;
            return key
                .try_into()
                .map_err(|_| SopsError::from("the SOPS data key is not 32 bytes"));
        }
    }
    Err("none of the sops.age recipients matches the given age key(s)".into())
}

/// Decrypts a SOPS YAML document with an age key file's contents; returns the plain
/// YAML (without the `sops` block). Fails if the MAC does not verify.
pub fn decrypt_yaml(text: &str, age_key_file: &str) -> Result<String, SopsError> {
    let ids = identities(age_key_file)?;
    let mut doc = provisioner_core::talos::yaml::from_str(text)?;
    let obj = doc.as_object_mut().ok_or("not a mapping")?;
    let meta = obj
        .remove("sops")
        .and_then(|m| m.as_object().cloned())
        .ok_or("no sops block")?;
    let key = data_key(&meta, &ids)?;
    let mut hash = Sha512::new();
    walk(&mut doc, &mut Vec::new(), &mut |aad, leaf| {
        if let Some(s) = leaf.as_str().filter(|s| s.starts_with("ENC[")) {
            let (plain, ty) = decrypt_value(s, &key, aad)?;
            hash.update(plain.as_bytes());
            *leaf = match ty.as_str() {
                "int" => plain.parse::<i64>().map(Value::from).map_err(|e| e.to_string())?,
                "bool" => Value::Bool(plain.eq_ignore_ascii_case("true")),
                _ => Value::String(plain),
            };
        }
        Ok(())
    })?;
    let mac_enc = meta.get("mac").and_then(Value::as_str).ok_or("no sops.mac")?;
    let lastmod = meta
        .get("lastmodified")
        .and_then(Value::as_str)
        .ok_or("no sops.lastmodified")?;
    let (mac, _) = decrypt_value(mac_enc, &key, lastmod)?;
    if !mac.eq_ignore_ascii_case(&hex::encode(hash.finalize())) {
        return Err("sops.mac does not match the decrypted values (tampered file?)".into());
    }
    Ok(provisioner_core::talos::yaml::to_string(&doc)?)
}

/// Encrypts a plain YAML document for one age recipient in the same format (used to
/// export a bundle for talhelper users and by the tests).
pub fn encrypt_yaml(text: &str, recipient: &str, lastmodified: &str) -> Result<String, SopsError> {
    let rcpt: age::x25519::Recipient = recipient.parse().map_err(|e| format!("age recipient: {e}"))?;
    let mut key = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
    let mut doc = provisioner_core::talos::yaml::from_str(text)?;
    let mut hash = Sha512::new();
    walk(&mut doc, &mut Vec::new(), &mut |aad, leaf| {
        let (plain, ty) = match leaf {
            Value::String(s) => (s.clone(), "str"),
            Value::Bool(b) => (if *b { "True" } else { "False" }.to_string(), "bool"),
            Value::Number(n) => (n.to_string(), "int"),
            _ => return Ok(()),
        };
        hash.update(plain.as_bytes());
        *leaf = Value::String(encrypt_value(&plain, ty, &key, aad));
        Ok(())
    })?;
    let mac = hex::encode_upper(hash.finalize());
    let mut armored = Vec::new();
    {
        let enc = age::Encryptor::with_recipients(std::iter::once(&rcpt as &dyn age::Recipient))
            .map_err(|e| e.to_string())?;
        let armor = age::armor::ArmoredWriter::wrap_output(&mut armored, age::armor::Format::AsciiArmor)
            .map_err(|e| e.to_string())?;
        let mut w = enc.wrap_output(armor).map_err(|e| e.to_string())?;
        std::io::Write::write_all(&mut w, &key).map_err(|e| e.to_string())?;
        w.finish().and_then(|a| a.finish()).map_err(|e| e.to_string())?;
    }
    let obj = doc.as_object_mut().ok_or("not a mapping")?;
    obj.insert(
        "sops".into(),
        serde_json::json!({
            "age": [{"recipient": recipient, "enc": String::from_utf8_lossy(&armored)}],
            "lastmodified": lastmodified,
            "mac": encrypt_value(&mac, "str", &key, lastmodified),
            "version": "3.9.0",
        }),
    );
    Ok(provisioner_core::talos::yaml::to_string(&doc)?)
}
