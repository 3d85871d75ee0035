//! Adopting a machine as a line edit of its cluster file: the node's `mac` (and
//! `uuid`) lines are written or replaced, every other byte (comments, order, quoting,
//! flow mappings) stays as it was, so the change is a small reviewable diff. A
//! placeholder MAC (`crate::infra::is_placeholder_mac`) is replaced wherever the node
//! repeats it (its `deviceSelector.hardwareAddr`), so its network config follows.
//! The caller re-parses and validates the result before writing it.

use crate::infra::is_placeholder_mac;
use crate::model::MacAddr;

/// Why a node cannot be adopted by editing its file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// No top-level block-style `nodes:` list.
    #[error("no block-style `nodes:` list at the top level")]
    NoNodes,
    /// No node with that hostname.
    #[error("no node {0:?}")]
    NoNode(String),
    /// The node is written in a form a line edit cannot change safely.
    #[error("node {0:?} is written as a flow mapping; put its MAC in by hand")]
    Flow(String),
    /// The node has another real MAC (or UUID) already.
    #[error("node {host:?} already has {field} {value}; edit the file to change it")]
    Taken {
        /// The node.
        host: String,
        /// `mac` or `uuid`.
        field: &'static str,
        /// What it has.
        value: String,
    },
}

/// The edited file and which lines (0-based, in the new text) changed or were added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edited {
    /// The new text.
    pub text: String,
    /// Changed or inserted lines.
    pub lines: Vec<usize>,
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_content(line: &str) -> bool {
    let t = line.trim();
    !t.is_empty() && !t.starts_with('#')
}

/// `key: value  # comment` at `col` → the unquoted value and its byte range.
fn value_of(line: &str, col: usize, key: &str) -> Option<(String, std::ops::Range<usize>)> {
    let rest = line.get(col..)?.strip_prefix(key)?.strip_prefix(':')?;
    let start = line.len() - rest.len() + (rest.len() - rest.trim_start().len());
    let raw = &line[start..];
    let raw = raw.split(" #").next().unwrap_or(raw).trim_end();
    let unq = raw.trim_matches(|c| c == '"' || c == '\'');
    let off = start + raw.find(unq).unwrap_or(0);
    Some((unq.to_string(), off..off + unq.len()))
}

/// The `hostname` of a flow-mapping node (`{hostname: a, mac: …}`).
fn flow_hostname(rest: &str) -> Option<String> {
    let body = rest.trim_start().strip_prefix('{')?;
    let value = body.split("hostname:").nth(1)?;
    let value = value.split([',', '}']).next()?.trim();
    Some(value.trim_matches(|c| c == '"' || c == '\'').to_string())
}

/// Writes `mac` (and `uuid` when given) into node `host` of the cluster file `text`.
/// Idempotent: a node that already has exactly these values is returned unchanged.
pub fn adopt(text: &str, host: &str, mac: MacAddr, uuid: Option<&str>) -> Result<Edited, EditError> {
    edit(text, None, host, mac, uuid)
}

/// [`adopt`] for the node at `index` of the `nodes:` list, whose hostname is `host`
/// once loaded: its `hostname` line may hold a `${NAME}` placeholder that an
/// encrypted talenv fills (`infra/<cluster>.talenv.sops.yaml`), which the line edit
/// cannot read, so the loader's index picks the node.
pub fn adopt_nth(
    text: &str,
    index: usize,
    host: &str,
    mac: MacAddr,
    uuid: Option<&str>,
) -> Result<Edited, EditError> {
    edit(text, Some(index), host, mac, uuid)
}

fn is_template(name: &str) -> bool {
    name.contains("${")
}

fn edit(
    text: &str,
    index: Option<usize>,
    host: &str,
    mac: MacAddr,
    uuid: Option<&str>,
) -> Result<Edited, EditError> {
    let mut lines: Vec<String> = text.split_inclusive('\n').map(str::to_string).collect();
    let start = lines
        .iter()
        .position(|l| l.trim_end() == "nodes:" || l.starts_with("nodes: #"))
        .ok_or(EditError::NoNodes)?;
    // The node items: `- ` at the list's indentation, up to the next line at or
    // left of it.
    let first = (start + 1..lines.len())
        .find(|&i| is_content(&lines[i]))
        .filter(|&i| lines[i].trim_start().starts_with("- "))
        .ok_or(EditError::NoNodes)?;
    let dash = indent(&lines[first]);
    let end = (first + 1..lines.len())
        .find(|&i| is_content(&lines[i]) && indent(&lines[i]) < dash)
        .unwrap_or(lines.len());
    let items: Vec<usize> = (first..end)
        .filter(|&i| is_content(&lines[i]) && indent(&lines[i]) == dash && lines[i][dash..].starts_with("- "))
        .collect();
    let col = dash + 2;
    for (k, &item) in items.iter().enumerate() {
        let stop = items.get(k + 1).copied().unwrap_or(end);
        let keyed = |i: usize| i == item || (is_content(&lines[i]) && indent(&lines[i]) == col);
        let find = |lines: &[String], key: &str| {
            (item..stop)
                .filter(|&i| keyed(i))
                .find_map(|i| value_of(&lines[i], col, key).map(|v| (i, v)))
        };
        let Some((host_line, (name, _))) = find(&lines, "hostname") else {
            if flow_hostname(&lines[item][col..]).as_deref() == Some(host) {
                return Err(EditError::Flow(host.to_string()));
            }
            continue;
        };
        let picked = match index {
            Some(n) => k == n && (name == host || is_template(&name)),
            None => name == host,
        };
        if !picked {
            continue;
        }
        let mut changed = Vec::new();
        let mac_s = mac.to_string();
        let mac_line = match find(&lines, "mac") {
            Some((i, (old, range))) => {
                let old_mac = old.parse::<MacAddr>().ok();
                if old_mac != Some(mac) {
                    if old_mac.is_some_and(|m| !is_placeholder_mac(m)) {
                        return Err(EditError::Taken {
                            host: host.into(),
                            field: "mac",
                            value: old,
                        });
                    }
                    lines[i].replace_range(range, &mac_s);
                    changed.push(i);
                    // The placeholder elsewhere in this node (deviceSelector.hardwareAddr).
                    for (j, line) in lines.iter_mut().enumerate().take(stop).skip(item) {
                        if j != i && !old.is_empty() && line.contains(old.as_str()) {
                            *line = line.replace(old.as_str(), &mac_s);
                            changed.push(j);
                        }
                    }
                }
                i
            }
            None => {
                lines.insert(host_line + 1, format!("{}mac: \"{mac_s}\"\n", " ".repeat(col)));
                changed.push(host_line + 1);
                host_line + 1
            }
        };
        if let Some(uuid) = uuid {
            let stop = stop + usize::from(lines.len() > text.split_inclusive('\n').count());
            let found = (item..stop)
                .filter(|&i| i == item || (is_content(&lines[i]) && indent(&lines[i]) == col))
                .find_map(|i| value_of(&lines[i], col, "uuid"));
            match found {
                Some((old, _)) if old.eq_ignore_ascii_case(uuid) => {}
                Some((old, _)) => {
                    return Err(EditError::Taken {
                        host: host.into(),
                        field: "uuid",
                        value: old,
                    });
                }
                None => {
                    lines.insert(mac_line + 1, format!("{}uuid: \"{uuid}\"\n", " ".repeat(col)));
                    changed.push(mac_line + 1);
                }
            }
        }
        changed.sort_unstable();
        return Ok(Edited {
            text: lines.concat(),
            lines: changed,
        });
    }
    Err(EditError::NoNode(host.to_string()))
}
