//! Tables for people, JSON for scripts.

use serde_json::Value;

/// Prints `v` as pretty JSON or through `table`.
pub fn print(json: bool, v: &Value, table: fn(&Value) -> String) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(v)?);
    } else {
        print!("{}", table(v));
    }
    Ok(())
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Left-aligned columns, widths from the content.
fn columns(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| -> String {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<width$}  ", width = w[i]));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

/// `machines ls`.
pub fn machines_table(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| {
                    vec![
                        s(&m["mac"]),
                        s(&m["state"]),
                        s(&m["firmware"]),
                        s(&m["assigned_profile"]),
                        s(&m["cluster"]),
                        m["last_event"]["kind"].as_str().unwrap_or("-").to_string(),
                        s(&m["last_seen"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    columns(
        &[
            "MAC",
            "STATE",
            "FIRMWARE",
            "PROFILE",
            "CLUSTER",
            "LAST EVENT",
            "LAST SEEN",
        ],
        &rows,
    )
}

/// `machines show`.
pub fn machine_detail(m: &Value) -> String {
    let mut out = String::new();
    for (k, f) in [
        ("MAC", "mac"),
        ("State", "state"),
        ("Firmware", "firmware"),
        ("Arch", "arch"),
        ("Profile", "assigned_profile"),
        ("Group", "group"),
        ("Cluster", "cluster"),
        ("UUID", "uuid"),
        ("UUID pin", "pinned_uuid"),
        ("Serial", "serial"),
        ("Vendor", "vendor_class"),
        ("IP", "ip"),
        ("Boot file", "boot_file"),
        ("First seen", "first_seen"),
        ("Last seen", "last_seen"),
    ] {
        out.push_str(&format!("{k:<11} {}\n", s(&m[f])));
    }
    let labels: Vec<String> = m["labels"]
        .as_object()
        .map(|o| o.iter().map(|(k, v)| format!("{k}={}", s(v))).collect())
        .unwrap_or_default();
    out.push_str(&format!(
        "{:<11} {}\n",
        "Labels",
        if labels.is_empty() {
            "-".into()
        } else {
            labels.join(" ")
        }
    ));
    out.push_str(&format!(
        "{:<11} {}\n",
        "Power",
        m["power"]["driver"].as_str().unwrap_or("manual")
    ));
    if let Some(p) = m["pending_approval"].as_object() {
        let code = s(&p["code"]);
        out.push_str(&format!(
            "{:<11} code {code} uuid {} ip {}{}\n",
            "Waiting",
            s(&p["uuid"]),
            s(&p["peer"]),
            if p["denied_by"].is_string() {
                " (denied)"
            } else {
                ""
            }
        ));
    }
    if let Some(a) = m["approval"].as_object() {
        out.push_str(&format!(
            "{:<11} by token {} until {}\n",
            "Approved",
            s(&a["token_id"]),
            s(&a["expires"])
        ));
    }
    out.push_str("\nTimeline:\n");
    let rows: Vec<Vec<String>> = m["timeline"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| vec![s(&e["at"]), s(&e["kind"]), s(&e["detail"])])
                .collect()
        })
        .unwrap_or_default();
    out.push_str(&columns(&["AT", "EVENT", "DETAIL"], &rows));
    out
}

/// `machines reimage`.
pub fn steps(v: &Value) -> String {
    let mut out = format!("{}: {}\n", s(&v["mac"]), s(&v["state"]));
    let rows: Vec<Vec<String>> = v["steps"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|st| vec![s(&st["step"]), s(&st["status"]), s(&st["detail"])])
                .collect()
        })
        .unwrap_or_default();
    out.push_str(&columns(&["STEP", "STATUS", "DETAIL"], &rows));
    out
}

/// `machines power`.
pub fn power(v: &Value) -> String {
    format!(
        "{} {} via {}: {}: {}\n",
        s(&v["mac"]),
        s(&v["action"]),
        s(&v["driver"]),
        s(&v["status"]),
        s(&v["detail"])
    )
}

/// `clusters ls`.
pub fn clusters_table(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| {
                    let states: Vec<String> = c["states"]
                        .as_object()
                        .map(|o| o.iter().map(|(k, n)| format!("{n} {k}")).collect())
                        .unwrap_or_default();
                    vec![
                        s(&c["name"]),
                        s(&c["kind"]),
                        c["machines"].as_array().map_or(0, Vec::len).to_string(),
                        if states.is_empty() {
                            "-".into()
                        } else {
                            states.join(", ")
                        },
                        s(&c["bootstrap"]["phase"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    columns(&["NAME", "KIND", "MACHINES", "STATES", "BOOTSTRAP"], &rows)
}

/// `clusters status`.
pub fn cluster_status(c: &Value) -> String {
    let mut out = format!(
        "Cluster {} ({}), defined in {}\nBootstrap: {} {}\n",
        s(&c["name"]),
        s(&c["kind"]),
        s(&c["source"]),
        s(&c["bootstrap"]["phase"]),
        c["bootstrap"]["detail"].as_str().unwrap_or("")
    );
    // Why it is waiting (or what happened last), from the cluster's event log.
    let e = &c["bootstrap"]["last_event"];
    if !e.is_null() {
        out.push_str(&format!(
            "Last event: {} {}: {}\n",
            s(&e["at"]),
            s(&e["kind"]),
            s(&e["detail"])
        ));
    }
    out.push_str("\nMachines:\n");
    let rows: Vec<Vec<String>> = c["machines"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| vec![s(&m["mac"]), s(&m["state"]), s(&m["profile"]), s(&m["last_seen"])])
                .collect()
        })
        .unwrap_or_default();
    out.push_str(&columns(&["MAC", "STATE", "PROFILE", "LAST SEEN"], &rows));
    let steps: Vec<Vec<String>> = c["bootstrap"]["steps"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|st| vec![s(&st["name"]), s(&st["status"]), s(&st["detail"])])
                .collect()
        })
        .unwrap_or_default();
    if !steps.is_empty() {
        out.push_str("\nBootstrap steps:\n");
        out.push_str(&columns(&["STEP", "STATUS", "DETAIL"], &steps));
    }
    out
}

/// `clusters retry`: the bootstrap status after the retry.
pub fn bootstrap_retried(b: &Value) -> String {
    let step = b["steps"]
        .as_array()
        .and_then(|a| a.iter().find(|st| st["status"] == "running"))
        .map(|st| s(&st["name"]))
        .unwrap_or_else(|| "-".into());
    format!("Bootstrap retried: {} at step {step}\n", s(&b["phase"]))
}

/// `events` without `--follow`.
pub fn latest_events(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|m| !m["last_event"].is_null())
                .map(|m| {
                    let e = &m["last_event"];
                    vec![s(&e["at"]), s(&m["mac"]), s(&e["kind"]), s(&e["detail"])]
                })
                .collect()
        })
        .unwrap_or_default();
    columns(&["AT", "MAC", "EVENT", "DETAIL"], &rows)
}

/// One streamed event.
pub fn event_line(json: bool, event: &str, data: &str) {
    if json {
        println!("{data}");
        return;
    }
    match serde_json::from_str::<Value>(data) {
        Ok(v) if event == "timeline" => {
            println!(
                "{}  {}  {:<20} {}",
                s(&v["at"]),
                s(&v["mac"]),
                s(&v["kind"]),
                s(&v["detail"])
            )
        }
        _ => println!("{event}: {data}"),
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
}

/// `machines pending`: what waits for an operator.
pub fn pending_table(v: &Value) -> String {
    let rows: Vec<Vec<String>> = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    vec![
                        s(&p["kind"]),
                        s(&p["mac"]),
                        s(&p["code"]),
                        s(&p["uuid"]),
                        s(&p["peer"]),
                        s(&p["status"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    columns(&["KIND", "MAC", "CODE", "UUID", "PEER", "STATUS"], &rows)
}

/// `machines approve|deny`.
pub fn decided(v: &Value) -> String {
    let mut out = String::new();
    for p in v["decided"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{} {} of {}: code {} uuid {} peer {}\n",
            s(&p["status"]),
            s(&p["kind"]).replace('_', " "),
            s(&p["mac"]),
            s(&p["code"]),
            s(&p["uuid"]),
            s(&p["peer"])
        ));
    }
    out
}

/// `machines unpin`.
pub fn unpinned(v: &Value) -> String {
    format!(
        "{}: UUID pin cleared; the next UUID it presents is pinned\n",
        s(&v["mac"])
    )
}

/// `machines adopt`: what was written, and whether the running appliance took it.
pub fn adopted(v: &Value) -> String {
    let lines = v["lines"].as_array().map(Vec::as_slice).unwrap_or_default();
    let mut out = if lines.is_empty() {
        format!(
            "{}: already node {} in {}; nothing written\n",
            s(&v["mac"]),
            s(&v["node"]),
            s(&v["file"])
        )
    } else {
        let mut o = format!(
            "{}: adopted as node {} ({} changed):\n",
            s(&v["mac"]),
            s(&v["node"]),
            s(&v["file"])
        );
        for l in lines {
            o.push_str(&format!("  {}\n", s(l)));
        }
        o
    };
    match v["reload_error"].as_str() {
        None => out.push_str("reloaded: it installs on its next network boot\n"),
        Some(e) => out.push_str(&format!(
            "NOT reloaded ({e}): restart the appliance to serve it\n"
        )),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_columns_align() {
        let t = columns(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
    }

    #[test]
    fn cluster_status_says_why_it_waits() {
        let mut c = serde_json::json!({
            "name": "lab", "kind": "talos", "source": "infra/lab.yaml", "machines": [],
            "bootstrap": {"phase": "running", "detail": "3 node(s) installed", "steps": [],
                "last_event": {"kind": "waiting", "detail": "etcd on 10.0.0.12: no answer",
                    "at": "2026-11-26T12:00:00Z"}}
        });
        let out = cluster_status(&c);
        assert!(
            out.contains("Bootstrap: running 3 node(s) installed\nLast event: 2026-11-26T12:00:00Z waiting: etcd on 10.0.0.12: no answer\n\nMachines:"),
            "{out}"
        );
        c["bootstrap"]["last_event"] = Value::Null;
        assert!(!cluster_status(&c).contains("Last event"));
    }
}
