//! Go's `path.Match`, which ArgoCD's git directory generator uses to filter
//! directories (argo-cd v3.5.1 `applicationset/generators/git.go` `filterApps`;
//! Go `path/match.go` grammar): `*` is any run of non-`/` characters, `?` one non-`/`
//! character, `[...]` a class (`^` negates, `a-z` ranges), `\` escapes.

/// Whether `name` matches `pattern` with Go `path.Match` semantics. A malformed
/// pattern (unclosed `[`, trailing `\`) matches nothing, as Go returns
/// `ErrBadPattern` and ArgoCD then keeps nothing for it.
pub fn path_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    matches(&p, &n).unwrap_or(false)
}

fn matches(p: &[char], n: &[char]) -> Option<bool> {
    match p.first() {
        None => Some(n.is_empty()),
        Some('*') => {
            // Try every split that does not cross a '/'.
            let mut i = 0;
            loop {
                if matches(&p[1..], &n[i..])? {
                    return Some(true);
                }
                if i == n.len() || n[i] == '/' {
                    return Some(false);
                }
                i += 1;
            }
        }
        Some('?') => match n.first() {
            Some(c) if *c != '/' => matches(&p[1..], &n[1..]),
            _ => Some(false),
        },
        Some('[') => {
            let (ok, rest) = class(&p[1..], *n.first().unwrap_or(&'/'))?;
            if n.is_empty() || n[0] == '/' || !ok {
                // Still validate the rest of the pattern, as Go does.
                matches(rest, &[]).map(|_| false)
            } else {
                matches(rest, &n[1..])
            }
        }
        Some('\\') => {
            let c = *p.get(1)?;
            if n.first() == Some(&c) {
                matches(&p[2..], &n[1..])
            } else {
                Some(false)
            }
        }
        Some(c) => {
            if n.first() == Some(c) {
                matches(&p[1..], &n[1..])
            } else {
                Some(false)
            }
        }
    }
}

/// Parses a class body after `[`; returns (does `c` match, pattern after `]`), or
/// `None` for a malformed class.
fn class(p: &[char], c: char) -> Option<(bool, &[char])> {
    let (negated, mut i) = if p.first() == Some(&'^') {
        (true, 1)
    } else {
        (false, 0)
    };
    let mut hit = false;
    let mut first = true;
    loop {
        let lo = *p.get(i)?;
        if lo == ']' && !first {
            return Some((hit != negated, &p[i + 1..]));
        }
        first = false;
        let (lo, next) = escaped(p, i)?;
        i = next;
        let mut hi = lo;
        if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|x| *x != ']') {
            let (h, next) = escaped(p, i + 1)?;
            hi = h;
            i = next;
        }
        if lo <= c && c <= hi {
            hit = true;
        }
    }
}

fn escaped(p: &[char], i: usize) -> Option<(char, usize)> {
    match *p.get(i)? {
        '\\' => Some((*p.get(i + 1)?, i + 2)),
        c => Some((c, i + 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::path_match;

    #[test]
    fn go_path_match_table() {
        // Cases from Go's path/match_test.go semantics plus the ArgoCD exclude case.
        let table = [
            ("abc", "abc", true),
            ("*", "abc", true),
            ("*c", "abc", true),
            ("a*", "a", true),
            ("a*/b", "abc/b", true),
            ("a*/b", "a/c/b", false),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", true),
            ("a*b?c*x", "abxbbxdbxebxczzx", true),
            ("a*b?c*x", "abxbbxdbxebxczzy", false),
            ("ab[c]", "abc", true),
            ("ab[b-d]", "abc", true),
            ("ab[e-g]", "abc", false),
            ("ab[^c]", "abc", false),
            ("ab[^e-g]", "abc", true),
            ("a\\*b", "a*b", true),
            ("a\\*b", "ab", false),
            ("a?b", "a/b", false),
            ("a*b", "a/b", false),
            ("[", "a", false),
            ("a[", "a", false),
            ("*x", "xxx", true),
            // ArgoCD: a child pattern never matches the directory itself.
            (
                "gitops/manifests/cert-manager/values/*",
                "gitops/manifests/cert-manager/values",
                false,
            ),
            (
                "gitops/manifests/cert-manager/*",
                "gitops/manifests/cert-manager/values",
                true,
            ),
            (
                "gitops/manifests/cert-manager/values",
                "gitops/manifests/cert-manager/values",
                true,
            ),
            ("values/*", "gitops/manifests/cert-manager/values/x", false),
        ];
        for (pat, name, want) in table {
            assert_eq!(path_match(pat, name), want, "{pat} vs {name}");
        }
    }
}
