//! The host checks: free space and clock of the state directory, the API
//! certificate, the image cache against what the site needs.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::{Finding, Severity};
use crate::cmd::needs::Needs;
use crate::config::Config;
use crate::images::ImageCache;

const GIB: u64 = 1 << 30;

/// Free space where the state and the image cache live: an error under 512 MiB or 2 %
/// (a full disk stops acknowledged writes), a warning under 2 GiB or 10 % (one Talos
/// image set is ~100 MiB, a Flatcar disk image ~500 MiB).
pub fn disk(state_dir: &Path) -> Vec<Finding> {
    const C: &str = "disk";
    // The state dir may not exist yet (first start makes it): its nearest parent.
    let probe = state_dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    let st = match nix::sys::statvfs::statvfs(probe) {
        Ok(s) => s,
        Err(e) => {
            return vec![Finding::new(
                C,
                Severity::Warning,
                format!("{}: statvfs: {e}", probe.display()),
            )];
        }
    };
    let frsize = st.fragment_size() as u64;
    let (free, total) = (st.blocks_available() as u64 * frsize, st.blocks() as u64 * frsize);
    let pct = (free * 100).checked_div(total).unwrap_or(100);
    let text = format!(
        "{}: {:.1} GiB free of {:.1} GiB ({pct} %)",
        probe.display(),
        free as f64 / GIB as f64,
        total as f64 / GIB as f64
    );
    let fix =
        "free space or grow the volume holding the state directory (images/ in it holds the boot images)";
    vec![if free < GIB / 2 || pct < 2 {
        Finding::new(C, Severity::Error, text).fix(fix)
    } else if free < 2 * GIB || pct < 10 {
        Finding::new(C, Severity::Warning, text).fix(fix)
    } else {
        Finding::new(C, Severity::Ok, text)
    }]
}

/// The clock: not before this build's era, not behind the state's own files (a
/// clock that went back makes one-time tokens, certificates and timelines lie), and
/// the kernel's view of NTP sync where systemd-timesyncd reports it.
pub fn clock(state_dir: &Path) -> Vec<Finding> {
    const C: &str = "clock";
    let now = SystemTime::now();
    let mut out = Vec::new();
    // 2026-01-01T00:00:00Z: older than this binary can be, so a clock before it is unset.
    let floor = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600);
    if now < floor {
        out.push(
            Finding::new(
                C,
                Severity::Error,
                "the clock is before 2026: it has not been set",
            )
            .fix("set the time (NTP: `timedatectl set-ntp true`, or the host's clock for a container)"),
        );
    }
    let newest = newest_mtime(state_dir, 3);
    match newest {
        Some((t, file)) if t > now + Duration::from_secs(300) => out.push(
            Finding::new(
                C,
                Severity::Error,
                format!(
                    "the clock is behind: {} was written {} s in the future",
                    file.display(),
                    t.duration_since(now).unwrap_or_default().as_secs()
                ),
            )
            .fix("correct the time (NTP), then restart the service; one-time URLs and certificates depend on it"),
        ),
        _ if out.is_empty() => out.push(Finding::new(C, Severity::Ok, "the clock is set and not behind the state's files")),
        _ => {}
    }
    // systemd-timesyncd touches this file once synchronised (timedatectl(1)).
    let synced = Path::new("/run/systemd/timesync/synchronized");
    if Path::new("/run/systemd/system").exists() && !synced.exists() {
        out.push(
            Finding::new(
                C,
                Severity::Note,
                "systemd-timesyncd has not reported a synchronised clock",
            )
            .fix("`timedatectl status`; in an LXC the host's clock is the container's"),
        );
    }
    out
}

fn newest_mtime(dir: &Path, depth: u32) -> Option<(SystemTime, std::path::PathBuf)> {
    let mut best: Option<(SystemTime, std::path::PathBuf)> = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        let Ok(m) = e.metadata() else { continue };
        let cand = if m.is_dir() && depth > 0 {
            newest_mtime(&p, depth - 1)
        } else {
            m.modified().ok().map(|t| (t, p))
        };
        if let Some(c) = cand
            && best.as_ref().is_none_or(|b| c.0 > b.0)
        {
            best = Some(c);
        }
    }
    best
}

/// The API certificate: an error once expired or not yet valid, a warning within 30
/// days of expiry.
pub fn certificate(cfg: &Config) -> Vec<Finding> {
    const C: &str = "certificate";
    let file = cfg
        .api_tls
        .cert_file
        .clone()
        .unwrap_or_else(|| crate::http::api::tls::generated_files(&cfg.state_dir).cert);
    let Ok(text) = std::fs::read(&file) else {
        return vec![Finding::new(
            C,
            Severity::Note,
            format!("{}: not there yet (the first start makes it)", file.display()),
        )];
    };
    let Some(der) = pem::parse_many(&text)
        .ok()
        .and_then(|v| v.into_iter().find(|p| p.tag() == "CERTIFICATE"))
    else {
        return vec![
            Finding::new(
                C,
                Severity::Error,
                format!("{}: no PEM certificate", file.display()),
            )
            .fix(
                "point `api_tls.cert_file` at a PEM chain, or delete the generated one to have it made again",
            ),
        ];
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.contents()) else {
        return vec![Finding::new(
            C,
            Severity::Error,
            format!("{}: not a valid certificate", file.display()),
        )];
    };
    let v = cert.validity();
    let now = time::OffsetDateTime::now_utc();
    let (nb, na) = (v.not_before.to_datetime(), v.not_after.to_datetime());
    let left = na - now;
    let what = format!("{} (expires {})", file.display(), na.date());
    let renew = "renew it: replace `api_tls.cert_file`, or delete <state_dir>/tls/ and restart (clients then need the new ca.crt)";
    vec![if nb > now {
        Finding::new(
            C,
            Severity::Error,
            format!("{what}: not valid before {} (clock behind?)", nb.date()),
        )
        .fix("check the clock")
    } else if left.is_negative() {
        Finding::new(C, Severity::Error, format!("{what}: expired")).fix(renew)
    } else if left < time::Duration::days(30) {
        Finding::new(
            C,
            Severity::Warning,
            format!("{what}: {} day(s) left", left.whole_days()),
        )
        .fix(renew)
    } else {
        Finding::new(
            C,
            Severity::Ok,
            format!("{what}: {} day(s) left", left.whole_days()),
        )
    }]
}

/// Every file the site needs, present and matching its descriptor, pin or record.
pub fn images(needs: &Needs, cache: &ImageCache) -> Vec<Finding> {
    const C: &str = "images";
    let mut out = Vec::new();
    for p in &needs.problems {
        out.push(
            Finding::new(C, Severity::Error, p.clone())
                .fix("add an images/ descriptor for it (see images/README.md)"),
        );
    }
    let entries = needs.entries(cache);
    let mut bad = 0;
    for e in &entries {
        let (sev, fix) = match e.status {
            "ok" => continue,
            "unverified" => (
                Severity::Warning,
                "pull it again (`provisioner images pull --all`) so its SHA-256 is recorded",
            ),
            "missing" => (
                Severity::Error,
                "`provisioner images pull --all`, or `provisioner images import <bundle.tar>` offline",
            ),
            _ => (
                Severity::Error,
                "the cached file differs from its checksum: `provisioner images pull --all` moves it aside and fetches it again",
            ),
        };
        bad += 1;
        out.push(
            Finding::new(
                C,
                sev,
                format!("{} {} (needed by {})", e.rel, e.status, e.needed_by),
            )
            .fix(fix),
        );
    }
    if bad == 0 {
        out.push(Finding::new(
            C,
            Severity::Ok,
            format!(
                "{} file(s) cached and verified for {} image(s), {} mirrored release(s){}",
                entries.len(),
                needs.images.len(),
                needs.mirrors.len(),
                if needs.argocd.is_some() {
                    " and the ArgoCD pin"
                } else {
                    ""
                }
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::{Duration as TDuration, OffsetDateTime};

    fn cert_file(dir: &Path, not_before: OffsetDateTime, not_after: OffsetDateTime) -> std::path::PathBuf {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.not_before = not_before;
        p.not_after = not_after;
        let pem = p.self_signed(&key).unwrap().pem();
        let f = dir.join(format!("{}.crt", not_after.unix_timestamp()));
        std::fs::write(&f, pem).unwrap();
        f
    }

    fn judge(dir: &Path, nb: OffsetDateTime, na: OffsetDateTime) -> Finding {
        let mut cfg = Config {
            state_dir: dir.to_path_buf(),
            ..Default::default()
        };
        cfg.api_tls.cert_file = Some(cert_file(dir, nb, na));
        certificate(&cfg).remove(0)
    }

    #[test]
    fn certificate_expiry_is_judged_by_days_left() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let day = TDuration::days(1);
        let ok = judge(dir.path(), now - day, now + 400 * day);
        assert_eq!(ok.severity, Severity::Ok, "{ok:?}");
        assert!(ok.message.ends_with("day(s) left"), "{ok:?}");
        let soon = judge(dir.path(), now - day, now + 10 * day);
        assert_eq!(soon.severity, Severity::Warning, "{soon:?}");
        assert!(soon.fix.as_deref().unwrap().starts_with("renew it"));
        let gone = judge(dir.path(), now - 30 * day, now - day);
        assert_eq!(gone.severity, Severity::Error, "{gone:?}");
        assert!(gone.message.ends_with("expired"), "{gone:?}");
        let future = judge(dir.path(), now + 5 * day, now + 400 * day);
        assert_eq!(future.severity, Severity::Error, "{future:?}");
        assert!(future.message.contains("not valid before"), "{future:?}");
        // No file yet: a note, not an error (the first start makes it).
        let cfg = Config {
            state_dir: dir.path().join("fresh"),
            ..Default::default()
        };
        assert_eq!(certificate(&cfg)[0].severity, Severity::Note);
    }

    #[test]
    fn a_clock_behind_the_state_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(clock(dir.path())[0].severity, Severity::Ok);
        let f = dir.path().join("inventory.redb");
        std::fs::write(&f, b"x").unwrap();
        let later = SystemTime::now() + Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(later)
            .unwrap();
        let c = clock(dir.path());
        assert_eq!(c[0].severity, Severity::Error, "{c:?}");
        assert!(c[0].message.contains("inventory.redb"), "{c:?}");
    }
}
