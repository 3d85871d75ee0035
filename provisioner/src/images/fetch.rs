//! The one download: resume `<file>.part` with `Range`, hash, compare, rename into
//! place; and the `SHA256SUMS` record of each cache folder.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use futures::StreamExt;
use provisioner_core::k0s::mirror::parse_sums;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::{CacheError, SUMS};

pub(super) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String, CacheError> {
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(io(path))?;
    Ok(hex::encode(h.finalize()))
}

/// [`sha256_file`] on a blocking thread.
pub(super) async fn sha256_blocking(path: &Path) -> Result<String, CacheError> {
    let p = path.to_path_buf();
    tokio::task::spawn_blocking(move || sha256_file(&p))
        .await
        .map_err(|e| CacheError::Task(e.to_string()))?
}

/// The `SHA256SUMS` of a cache folder (`<hex>  <file>` lines, as sha256sum writes
/// them); empty when there is none.
pub fn parse_sums_file(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(dir.join(SUMS))
        .map(|t| parse_sums(&t))
        .unwrap_or_default()
}

/// Replaces a folder's `SHA256SUMS`: temp file, fsync, rename, fsync of the folder.
/// The record is what later pulls are judged by, so it is on disk before it is used.
pub(super) fn write_sums(dir: &Path, sums: &BTreeMap<String, String>) -> Result<(), CacheError> {
    let text: String = sums.iter().map(|(f, h)| format!("{h}  {f}\n")).collect();
    let tmp = dir.join(format!("{SUMS}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io(&tmp))?;
    std::fs::rename(&tmp, dir.join(SUMS)).map_err(io(dir))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn progress(len: Option<u64>, name: &str) -> indicatif::ProgressBar {
    // A bar only on a terminal: logs and CI get one line per file instead.
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = len.map_or_else(indicatif::ProgressBar::new_spinner, indicatif::ProgressBar::new);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} {bytes}/{total_bytes} {bar:30} {bytes_per_sec}")
    {
        pb.set_style(style);
    }
    pb.set_message(name.to_string());
    pb
}

/// `<dest>.part`.
fn part_of(dest: &Path) -> PathBuf {
    PathBuf::from(format!("{}.part", dest.display()))
}

/// Downloads `url` to `dest` (resuming `dest.part`), checks it against `want` when
/// given, and returns its SHA-256. On a mismatch the download is deleted.
pub async fn download(
    client: &reqwest::Client,
    url: &str,
    dest: &Path,
    want: Option<&str>,
) -> Result<String, CacheError> {
    let part = part_of(dest);
    let have = tokio::fs::metadata(&part).await.map(|m| m.len()).unwrap_or(0);
    let mut req = client.get(url);
    if have > 0 {
        req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    let http = |what, source| CacheError::Http {
        what,
        url: url.to_string(),
        source,
    };
    let resp = req.send().await.map_err(|e| http("GET", e))?;
    let status = resp.status();
    let resumed = status == reqwest::StatusCode::PARTIAL_CONTENT && have > 0;
    if status == reqwest::StatusCode::RANGE_NOT_SATISFIABLE && have > 0 {
        // The partial file already holds everything the server has.
    } else if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        return Err(CacheError::Status {
            url: url.to_string(),
            status,
            body: body.trim().chars().take(300).collect(),
        });
    } else {
        let mut f = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(resumed)
            .truncate(!resumed)
            .open(&part)
            .await
            .map_err(io(&part))?;
        let total = resp.content_length().map(|l| if resumed { l + have } else { l });
        let pb = progress(
            total,
            dest.file_name().and_then(|n| n.to_str()).unwrap_or("download"),
        );
        pb.set_position(if resumed { have } else { 0 });
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| http("reading", e))?;
            f.write_all(&chunk).await.map_err(io(&part))?;
            pb.inc(chunk.len() as u64);
        }
        f.sync_all().await.map_err(io(&part))?;
        pb.finish_and_clear();
    }
    let sum = sha256_blocking(&part).await?;
    if let Some(w) = want
        && !w.eq_ignore_ascii_case(&sum)
    {
        let _ = tokio::fs::remove_file(&part).await;
        return Err(CacheError::Rejected {
            path: dest.to_path_buf(),
            found: sum,
            want: w.to_string(),
        });
    }
    tokio::fs::rename(&part, dest).await.map_err(io(dest))?;
    Ok(sum)
}

/// Copies `src` to `dest` through a temp file (fsync, rename, fsync of the folder);
/// the copy must still hash to `sum` (the source may change while it is copied).
pub(super) fn copy_verified(src: &Path, dest: &Path, sum: &str) -> Result<(), CacheError> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = PathBuf::from(format!("{}.part", dest.display()));
    let bytes = std::fs::read(src).map_err(io(src))?;
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .map_err(io(&tmp))?;
    let copied = sha256_file(&tmp)?;
    if !copied.eq_ignore_ascii_case(sum) {
        let _ = std::fs::remove_file(&tmp);
        return Err(CacheError::Refused(format!(
            "{}: changed while being imported; not imported",
            src.display()
        )));
    }
    std::fs::rename(&tmp, dest).map_err(io(dest))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
