//! The GitOps repository setting (`gitops/settings.yaml` `repository.url`): what a
//! clone URL Argo CD accepts looks like, and the seed author's repository, which an
//! operator is expected to replace by their own.

/// The repository this tree was seeded from (`fullstack-documentation.md`). Its tree
/// differs from this `gitops/`, so an appliance pointing there hands off to the
/// wrong manifests.
pub const SEED_REPOSITORY: &str = "https://github.com/ixxeL-DevOps/fullstack.git";

/// Whether `url` is a clone URL Argo CD's git client can use: `https://`, `http://`,
/// `ssh://` or `git://` with a host and a path, or the scp-like SSH form
/// `user@host:path` (argo-cd `util/git/git.go` `IsSSHURL` /  `IsHTTPSURL`).
pub fn validate(url: &str) -> Result<(), String> {
    if url.is_empty() {
        return Err("empty".into());
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{url:?} contains whitespace"));
    }
    if url.contains("{{") {
        return Err(format!("{url:?} is a template, not a URL"));
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        if !matches!(scheme, "https" | "http" | "ssh" | "git") {
            return Err(format!(
                "{url:?}: scheme {scheme:?} is not one Argo CD clones from (https, http, ssh, git)"
            ));
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let host = authority.rsplit('@').next().unwrap_or("");
        let host = host.split(':').next().unwrap_or("");
        if host.is_empty() || host.starts_with('.') || host.ends_with('.') {
            return Err(format!("{url:?} has no host"));
        }
        if path.trim_matches('/').is_empty() {
            return Err(format!("{url:?} names no repository path"));
        }
        return Ok(());
    }
    // scp-like: [user@]host:path, no scheme.
    match url.split_once(':') {
        Some((user_host, path))
            if !path.is_empty()
                && user_host
                    .split_once('@')
                    .is_some_and(|(u, h)| !u.is_empty() && !h.is_empty() && !h.contains('/')) =>
        {
            Ok(())
        }
        _ => Err(format!(
            "{url:?} is not a URL (https://host/path.git, ssh://git@host/path.git or git@host:path.git)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::validate;

    #[test]
    fn clone_urls_argo_cd_takes_and_ones_it_does_not() {
        for ok in [
            "https://github.com/me/homelab.git",
            "http://git.lan:3000/me/homelab",
            "ssh://git@git.lan:2222/me/homelab.git",
            "git@github.com:me/homelab.git",
        ] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "not a url",
            "github.com/me/homelab",
            "ftp://host/x.git",
            "https:///x.git",
            "https://host",
            "https://host/",
            "{{ .Values.repository.url }}",
            "@host:path",
        ] {
            assert!(validate(bad).is_err(), "{bad:?} accepted");
        }
    }
}
