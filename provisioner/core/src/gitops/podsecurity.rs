//! The Pod Security Standards as the `PodSecurity` admission plugin enforces them,
//! over Pod specs read from the GitOps tree (serde_json values, not typed structs,
//! because the tree's YAML is only as typed as the author made it).
//!
//! Rules from kubernetes `staging/src/k8s.io/pod-security-admission/policy/`, the
//! versions in force for Kubernetes 1.34 (the GenMachine cluster's pin): baseline
//! `check_hostNamespaces.go`, `check_privileged.go`, `check_capabilities_baseline.go`,
//! `check_hostPathVolumes.go`, `check_hostPorts.go`, `check_appArmorProfile.go`,
//! `check_seLinuxOptions.go` (`container_engine_t` allowed since 1.31),
//! `check_procMount_baseline.go` (`Default` only; the 1.35 user-namespace relaxation
//! is not applied), `check_seccompProfile_baseline.go`, `check_sysctls.go` (the 1.0
//! set plus `ip_local_reserved_ports` 1.27, the TCP keepalive/fin sysctls 1.29 and
//! `tcp_rmem`/`tcp_wmem` 1.32), `check_windowsHostProcess.go`,
//! `check_hostProbesAndhostLifecycle.go` (1.34); restricted adds
//! `check_restrictedVolumes.go`, `check_allowPrivilegeEscalation.go`,
//! `check_runAsNonRoot.go`, `check_runAsUser.go`, `check_seccompProfile_restricted.go`
//! and `check_capabilities_restricted.go`. Windows-only exemptions of the
//! restricted checks are not modelled (no Windows nodes here).

use std::fmt;

use serde_json::Value;

/// A Pod Security Standards level (`pod-security.kubernetes.io/enforce`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Everything allowed.
    Privileged,
    /// Known privilege escalations refused.
    Baseline,
    /// Hardened.
    Restricted,
}

impl Level {
    /// The label value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "privileged" => Some(Self::Privileged),
            "baseline" => Some(Self::Baseline),
            "restricted" => Some(Self::Restricted),
            _ => None,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Privileged => "privileged",
            Self::Baseline => "baseline",
            Self::Restricted => "restricted",
        })
    }
}

/// One refused control: the upstream check ID and what in the spec trips it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Upstream check ID (`hostNamespaces`, `privileged`, …).
    pub check: &'static str,
    /// What was found.
    pub detail: String,
}

/// The pod template of a workload object: (pod metadata, pod spec). Pods, and the
/// controllers the admission plugin also evaluates (`admission.go` `PodSpecExtractor`:
/// ReplicationController, ReplicaSet, Deployment, DaemonSet, StatefulSet, Job,
/// CronJob, PodTemplate).
pub fn pod_template(obj: &Value) -> Option<(&Value, &Value)> {
    let kind = obj.get("kind")?.as_str()?;
    let t = match kind {
        "Pod" => return Some((obj.get("metadata").unwrap_or(&Value::Null), obj.get("spec")?)),
        "PodTemplate" => obj.get("template")?,
        "CronJob" => obj.pointer("/spec/jobTemplate/spec/template")?,
        "ReplicationController" | "ReplicaSet" | "Deployment" | "DaemonSet" | "StatefulSet" | "Job" => {
            obj.pointer("/spec/template")?
        }
        _ => return None,
    };
    Some((t.get("metadata").unwrap_or(&Value::Null), t.get("spec")?))
}

const CAPS_BASELINE: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];
const SYSCTLS: [&str; 12] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
];
const SELINUX_TYPES: [&str; 5] = [
    "",
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];
const RESTRICTED_VOLUMES: [&str; 8] = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

fn s<'a>(v: &'a Value, p: &str) -> Option<&'a str> {
    v.pointer(p).and_then(Value::as_str)
}
fn b(v: &Value, p: &str) -> Option<bool> {
    v.pointer(p).and_then(Value::as_bool)
}
fn arr<'a>(v: &'a Value, p: &str) -> impl Iterator<Item = &'a Value> {
    v.pointer(p).and_then(Value::as_array).into_iter().flatten()
}

/// Every container of the spec (`visitContainers`: containers, initContainers,
/// ephemeralContainers) with its name.
fn containers(spec: &Value) -> Vec<(&str, &Value)> {
    ["/containers", "/initContainers", "/ephemeralContainers"]
        .into_iter()
        .flat_map(|p| arr(spec, p))
        .map(|c| (s(c, "/name").unwrap_or("?"), c))
        .collect()
}

struct Out(Vec<Violation>);

impl Out {
    fn add(&mut self, check: &'static str, bad: &[String], what: &str) {
        if !bad.is_empty() {
            self.0.push(Violation {
                check,
                detail: format!("{} {what}", bad.join(", ")),
            });
        }
    }
}

/// What the `level` refuses in this pod (empty: admitted).
pub fn evaluate(level: Level, metadata: &Value, spec: &Value) -> Vec<Violation> {
    let mut out = Out(Vec::new());
    if level == Level::Privileged {
        return out.0;
    }
    let cs = containers(spec);
    let names = |f: &dyn Fn(&Value) -> bool| -> Vec<String> {
        cs.iter()
            .filter(|(_, c)| f(c))
            .map(|(n, _)| format!("container {n:?}"))
            .collect()
    };

    let host: Vec<String> = ["hostNetwork", "hostPID", "hostIPC"]
        .into_iter()
        .filter(|k| b(spec, &format!("/{k}")) == Some(true))
        .map(|k| format!("{k}=true"))
        .collect();
    out.add("hostNamespaces", &host, "(host namespaces)");
    out.add(
        "privileged",
        &names(&|c| b(c, "/securityContext/privileged") == Some(true)),
        "privileged=true",
    );
    let mut caps = Vec::new();
    for (n, c) in &cs {
        let bad: Vec<&str> = arr(c, "/securityContext/capabilities/add")
            .filter_map(Value::as_str)
            .filter(|x| !CAPS_BASELINE.contains(x))
            .collect();
        if !bad.is_empty() {
            caps.push(format!("container {n:?} adds {}", bad.join(",")));
        }
    }
    out.add("capabilities_baseline", &caps, "(non-default capabilities)");
    let host_paths: Vec<String> = arr(spec, "/volumes")
        .filter(|v| v.get("hostPath").is_some())
        .map(|v| format!("volume {:?}", s(v, "/name").unwrap_or("?")))
        .collect();
    out.add("hostPathVolumes", &host_paths, "hostPath");
    out.add(
        "hostPorts",
        &names(&|c| arr(c, "/ports").any(|p| p.get("hostPort").and_then(Value::as_i64).unwrap_or(0) != 0)),
        "hostPort",
    );
    // AppArmor: the field (pod and container) and the beta annotations.
    let apparmor_bad = |v: &Value| matches!(s(v, "/appArmorProfile/type"), Some(t) if t != "RuntimeDefault" && t != "Localhost");
    let mut aa: Vec<String> = spec
        .get("securityContext")
        .filter(|sc| apparmor_bad(sc))
        .map(|_| vec!["pod".to_string()])
        .unwrap_or_default();
    aa.extend(names(&|c| c.get("securityContext").is_some_and(apparmor_bad)));
    for (k, v) in metadata
        .get("annotations")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        if k.starts_with("container.apparmor.security.beta.kubernetes.io/")
            && let Some(v) = v.as_str()
            && !(v.is_empty() || v == "runtime/default" || v.starts_with("localhost/"))
        {
            aa.push(format!("annotation {k}={v}"));
        }
    }
    out.add("appArmorProfile", &aa, "(Unconfined AppArmor)");
    let selinux_bad = |sc: &Value| {
        sc.get("seLinuxOptions").is_some_and(|o| {
            !SELINUX_TYPES.contains(&s(o, "/type").unwrap_or(""))
                || !s(o, "/user").unwrap_or("").is_empty()
                || !s(o, "/role").unwrap_or("").is_empty()
        })
    };
    let mut se: Vec<String> = spec
        .get("securityContext")
        .filter(|sc| selinux_bad(sc))
        .map(|_| vec!["pod".to_string()])
        .unwrap_or_default();
    se.extend(names(&|c| c.get("securityContext").is_some_and(selinux_bad)));
    out.add("seLinuxOptions", &se, "(forbidden seLinuxOptions)");
    out.add(
        "procMount",
        &names(&|c| matches!(s(c, "/securityContext/procMount"), Some(p) if p != "Default")),
        "procMount other than Default",
    );
    let unconfined = |sc: &Value| s(sc, "/seccompProfile/type") == Some("Unconfined");
    let mut sc_bad: Vec<String> = spec
        .get("securityContext")
        .filter(|sc| unconfined(sc))
        .map(|_| vec!["pod".to_string()])
        .unwrap_or_default();
    sc_bad.extend(names(&|c| c.get("securityContext").is_some_and(unconfined)));
    out.add("seccompProfile_baseline", &sc_bad, "seccompProfile Unconfined");
    let sysctls: Vec<String> = arr(spec, "/securityContext/sysctls")
        .filter_map(|x| s(x, "/name"))
        .filter(|n| !SYSCTLS.contains(n))
        .map(|n| format!("sysctl {n}"))
        .collect();
    out.add("sysctls", &sysctls, "(unsafe sysctls)");
    let hp = |sc: &Value| b(sc, "/windowsOptions/hostProcess") == Some(true);
    let mut whp: Vec<String> = spec
        .get("securityContext")
        .filter(|sc| hp(sc))
        .map(|_| vec!["pod".to_string()])
        .unwrap_or_default();
    whp.extend(names(&|c| c.get("securityContext").is_some_and(hp)));
    out.add("windowsHostProcess", &whp, "hostProcess=true");
    let probe_host = |c: &Value| {
        [
            "livenessProbe",
            "readinessProbe",
            "startupProbe",
            "lifecycle/postStart",
            "lifecycle/preStop",
        ]
        .iter()
        .any(|p| {
            ["httpGet", "tcpSocket"]
                .iter()
                .any(|h| !s(c, &format!("/{p}/{h}/host")).unwrap_or("").is_empty())
        })
    };
    out.add(
        "hostProbesAndHostLifecycle",
        &names(&probe_host),
        "probe or lifecycle host",
    );

    if level == Level::Restricted {
        restricted(spec, &cs, &mut out);
    }
    out.0
}

fn restricted(spec: &Value, cs: &[(&str, &Value)], out: &mut Out) {
    let names = |f: &dyn Fn(&Value) -> bool| -> Vec<String> {
        cs.iter()
            .filter(|(_, c)| f(c))
            .map(|(n, _)| format!("container {n:?}"))
            .collect()
    };
    let vols: Vec<String> = arr(spec, "/volumes")
        .filter(|v| {
            !v.as_object()
                .is_some_and(|m| m.keys().any(|k| RESTRICTED_VOLUMES.contains(&k.as_str())))
        })
        .map(|v| format!("volume {:?}", s(v, "/name").unwrap_or("?")))
        .collect();
    out.add("restrictedVolumes", &vols, "(restricted volume type)");
    out.add(
        "allowPrivilegeEscalation",
        &names(&|c| b(c, "/securityContext/allowPrivilegeEscalation") != Some(false)),
        "allowPrivilegeEscalation != false",
    );
    let pod_nonroot = b(spec, "/securityContext/runAsNonRoot");
    let mut nonroot: Vec<String> = names(&|c| match b(c, "/securityContext/runAsNonRoot") {
        Some(v) => !v,
        None => pod_nonroot != Some(true),
    });
    if pod_nonroot == Some(false) {
        nonroot.push("pod".into());
    }
    out.add("runAsNonRoot", &nonroot, "runAsNonRoot != true");
    let root =
        |sc: Option<&Value>| sc.and_then(|x| x.pointer("/runAsUser")).and_then(Value::as_i64) == Some(0);
    let mut uid0 = names(&|c| root(c.get("securityContext")));
    if root(spec.get("securityContext")) {
        uid0.push("pod".into());
    }
    out.add("runAsUser", &uid0, "runAsUser=0");
    let ok_seccomp = |sc: Option<&Value>| {
        matches!(
            sc.and_then(|x| s(x, "/seccompProfile/type")),
            Some("RuntimeDefault" | "Localhost")
        )
    };
    let pod_seccomp = ok_seccomp(spec.get("securityContext"));
    let seccomp = names(&|c| {
        let t = c
            .get("securityContext")
            .and_then(|x| s(x, "/seccompProfile/type"));
        match t {
            Some(_) => !ok_seccomp(c.get("securityContext")),
            None => !pod_seccomp,
        }
    });
    out.add(
        "seccompProfile_restricted",
        &seccomp,
        "seccompProfile not RuntimeDefault/Localhost",
    );
    let mut caps = Vec::new();
    for (n, c) in cs {
        let drops_all = arr(c, "/securityContext/capabilities/drop").any(|x| x.as_str() == Some("ALL"));
        let adds: Vec<&str> = arr(c, "/securityContext/capabilities/add")
            .filter_map(Value::as_str)
            .filter(|x| *x != "NET_BIND_SERVICE")
            .collect();
        if !drops_all {
            caps.push(format!("container {n:?} does not drop ALL"));
        }
        if !adds.is_empty() {
            caps.push(format!("container {n:?} adds {}", adds.join(",")));
        }
    }
    out.add("capabilities_restricted", &caps, "(restricted capabilities)");
}

#[cfg(test)]
#[path = "podsecurity_tests.rs"]
mod tests;
