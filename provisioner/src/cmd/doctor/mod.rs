//! `provisioner doctor`: is the network and the host around the appliance ready?
//! Each check gives findings with a severity and the fix; `--json` prints them as one
//! document; the exit status is non-zero when any finding is an error.
//!
//! - `dhcp`: the full-mode probe ([`crate::dhcp::probe`]) on the boot interface: who
//!   else answers a DISCOVER;
//! - `listeners`: the HTTP boot path and TFTP at the address machines are told, the
//!   API at its own (connect, RRQ);
//! - `nodes`: the API ports of every armed cluster's nodes (only armed clusters: the
//!   shipped placeholder data is never dialled);
//! - `disk`, `clock`, `certificate`: the state directory's free space, the clock
//!   against the state's own timestamps and the kernel's sync flag, the API
//!   certificate's validity;
//! - `images`: every file every profile, cluster and the ArgoCD pin need
//!   ([`crate::cmd::needs`]).

mod host;
mod net;

use std::time::Duration;

use serde::Serialize;

use crate::cmd::cli::ConfigArgs;
use crate::cmd::needs::Needs;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Checked and fine.
    Ok,
    /// Not checked, or worth knowing.
    Note,
    /// Works, but will bite.
    Warning,
    /// Broken: machines will not boot or clusters not come up.
    Error,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Which check (`dhcp`, `listeners`, `nodes`, `disk`, `clock`, `certificate`,
    /// `images`, `inputs`).
    pub check: &'static str,
    /// How bad.
    pub severity: Severity,
    /// What was found.
    pub message: String,
    /// What to do about it (none for `ok`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    pub(crate) fn new(check: &'static str, severity: Severity, message: impl Into<String>) -> Self {
        Self {
            check,
            severity,
            message: message.into(),
            fix: None,
        }
    }

    pub(crate) fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// The whole report (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// No error.
    pub ok: bool,
    /// Count of errors.
    pub errors: usize,
    /// Count of warnings.
    pub warnings: usize,
    /// Every finding, in check order.
    pub findings: Vec<Finding>,
}

/// `provisioner doctor` options.
#[derive(Debug, Clone, clap::Args)]
pub struct DoctorArgs {
    /// Print the findings as one JSON document.
    #[arg(long)]
    pub json: bool,
    /// How long the DHCP probe listens for answers, in seconds (0 skips it). dnsmasq
    /// pings an address for up to 3 s before it offers it, hence 4.
    #[arg(long, default_value_t = 4)]
    pub dhcp_wait: u64,
    /// How long one TCP connect or TFTP request may take, in milliseconds.
    #[arg(long, default_value_t = 1500)]
    pub timeout_ms: u64,
    /// Configuration source.
    #[command(flatten)]
    pub cfg: ConfigArgs,
}

/// Runs every check; prints the report; fails when any finding is an error.
pub fn run(args: &DoctorArgs) -> anyhow::Result<()> {
    let cfg = crate::cmd::commands::load_config(&args.cfg)?;
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    let mut findings = Vec::new();
    let inputs = match crate::inputs::Inputs::load(cfg.input_dirs()) {
        Ok(i) => Some(i),
        Err(e) => {
            findings.push(
                Finding::new(
                    "inputs",
                    Severity::Error,
                    format!(
                        "the inputs do not validate: {} problem(s), first: {}",
                        e.problems.0.len(),
                        e.problems.0.first().map(ToString::to_string).unwrap_or_default()
                    ),
                )
                .fix("run `provisioner check` for every problem with file and field"),
            );
            None
        }
    };
    findings.extend(net::dhcp(&cfg, Duration::from_secs(args.dhcp_wait)));
    findings.extend(net::listeners(&cfg, timeout));
    if let Some(i) = &inputs {
        findings.extend(net::nodes(&cfg, &i.clusters, timeout));
    }
    findings.extend(host::disk(&cfg.state_dir));
    findings.extend(host::clock(&cfg.state_dir));
    findings.extend(host::certificate(&cfg));
    if let Some(i) = &inputs {
        let needs = Needs::of(&i.catalog, &i.infra, i.gitops.as_ref().ok());
        findings.extend(host::images(&needs, &cfg.image_cache()));
    }
    let report = Report {
        ok: !findings.iter().any(|f| f.severity == Severity::Error),
        errors: findings.iter().filter(|f| f.severity == Severity::Error).count(),
        warnings: findings
            .iter()
            .filter(|f| f.severity == Severity::Warning)
            .count(),
        findings,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", human(&report));
    }
    if report.ok {
        Ok(())
    } else {
        anyhow::bail!(
            "doctor: {} error(s), {} warning(s)",
            report.errors,
            report.warnings
        )
    }
}

/// The report as lines: `[error] dhcp: …` and an indented `fix:` line.
pub fn human(r: &Report) -> String {
    let mut out = String::new();
    for f in &r.findings {
        let tag = match f.severity {
            Severity::Ok => "ok",
            Severity::Note => "note",
            Severity::Warning => "WARNING",
            Severity::Error => "ERROR",
        };
        out.push_str(&format!("[{tag}] {}: {}\n", f.check, f.message));
        if let Some(fix) = &f.fix {
            out.push_str(&format!("        fix: {fix}\n"));
        }
    }
    out.push_str(&format!("{} error(s), {} warning(s)\n", r.errors, r.warnings));
    out
}
