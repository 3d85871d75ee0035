//! The GitOps repository setting (`gitops/settings.yaml` `repository.url`): what a
//! clone URL Argo CD accepts looks like, and the seed author's repository, which an
//! operator is expected to replace by their own.

/// The repository this tree was seeded from (`fullstack-documentation.md`). Its tree
/// differs from this `gitops/`, so an appliance pointing there hands off to the
/// wrong manifests.
pub const SEED_REPOSITORY: &str = "https://github.com/ixxeL-DevOps/fullstack.git";

/// Why `repository.url` is not a clone URL Argo CD can use (the text shows the URL).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepoUrlError {
    /// Nothing set.
    #[error("empty")]
    Empty,
    /// Spaces or control characters.
    #[error("{0:?} contains whitespace")]
    Whitespace(String),
    /// A Helm or Go template left unrendered.
    #[error("{0:?} is a template, not a URL")]
    Template(String),
    /// A scheme Argo CD does not clone from.
    #[error("{url:?}: scheme {scheme:?} is not one Argo CD clones from (https, http, ssh, git)")]
    Scheme {
        /// The URL.
        url: String,
        /// Its scheme.
        scheme: String,
    },
    /// `scheme://` without a host.
    #[error("{0:?} has no host")]
    NoHost(String),
    /// A host but no repository path.
    #[error("{0:?} names no repository path")]
    NoPath(String),
    /// Neither a URL nor the scp-like form.
    #[error("{0:?} is not a URL (https://host/path.git, ssh://git@host/path.git or git@host:path.git)")]
    Shape(String),
}

/// Whether `url` is a clone URL Argo CD's git client can use: `https://`, `http://`,
/// `ssh://` or `git://` with a host and a path, or the scp-like SSH form
/// `user@host:path` (argo-cd `util/git/git.go` `IsSSHURL` /  `IsHTTPSURL`).
pub fn validate(url: &str) -> Result<(), RepoUrlError> {
    let url_s = || url.to_string();
    if url.is_empty() {
        return Err(RepoUrlError::Empty);
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(RepoUrlError::Whitespace(url_s()));
    }
    if url.contains("{{") {
        return Err(RepoUrlError::Template(url_s()));
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        if !matches!(scheme, "https" | "http" | "ssh" | "git") {
            return Err(RepoUrlError::Scheme {
                url: url_s(),
                scheme: scheme.to_string(),
            });
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let host = authority.rsplit('@').next().unwrap_or("");
        let host = host.split(':').next().unwrap_or("");
        if host.is_empty() || host.starts_with('.') || host.ends_with('.') {
            return Err(RepoUrlError::NoHost(url_s()));
        }
        if path.trim_matches('/').is_empty() {
            return Err(RepoUrlError::NoPath(url_s()));
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
        _ => Err(RepoUrlError::Shape(url_s())),
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
