//! `provisioner check`: every input loaded and validated once, every problem printed
//! with file and field.

use anyhow::bail;
use provisioner_core::catalog::Catalog;

use super::cli::ConfigArgs;
use super::commands::load_config;

/// `provisioner check`.
pub fn check(args: &ConfigArgs) -> anyhow::Result<()> {
    let cfg = load_config(args)?;
    let mut problems: Vec<String> = Vec::new();
    // One load of every input; when it fails, the problems and whatever did load.
    let (cat, infra) = match crate::inputs::Inputs::load(cfg.input_dirs()) {
        Ok(i) => (Some(i.catalog), Some(i.infra)),
        Err(e) => {
            problems.extend(e.problems.0.iter().map(|f| f.to_string()));
            (e.catalog.map(|c| *c), e.infra.map(|i| *i))
        }
    };
    let mut notes = Vec::new();
    let clusters = check_infra(infra.as_ref(), cat.as_ref(), &mut problems, &mut notes);
    if let Err(e) = cfg.dhcp.full_config() {
        problems.push(format!("configuration: {e}"));
    }
    if let Some(cat) = &cat {
        for p in cat.profiles.values() {
            if let Some(c) = &p.cluster
                && !clusters.contains(c)
            {
                let file = cat
                    .sources
                    .get(&format!("profile/{}", p.id))
                    .map(|f| f.display().to_string())
                    .unwrap_or_default();
                problems.push(format!(
                    "{file}: field `cluster`: no cluster {c:?} in {}",
                    cfg.infra_dir.display()
                ));
            }
        }
        if let provisioner_core::boot::UnknownPolicy::Profile(p) = &cfg.unknown_policy
            && !cat.profiles.contains_key(p)
        {
            problems.push(format!("configuration: field `unknown_policy`: no profile {p:?}"));
        }
    }
    let mut warnings = Vec::new();
    let gitops = crate::gitops::check(
        &cfg.gitops_dir,
        &cfg.image_cache(),
        &clusters,
        &mut problems,
        &mut warnings,
    );
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let workloads = crate::gitops::workloads::check(&cfg.gitops_dir, infra.as_ref(), &mut problems);
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("{p}");
        }
        bail!("{} problem(s) found", problems.len());
    }
    let cat = cat.unwrap_or_default();
    println!(
        "ok: {} image(s), {} profile(s), {} group(s), {} cluster(s)",
        cat.images.len(),
        cat.profiles.len(),
        cat.groups.len(),
        clusters.len()
    );
    if let Some(g) = gitops {
        println!(
            "ok: gitops: {} ArgoCD object(s), {} generated Application(s), schemas: {}",
            g.objects,
            g.generated,
            g.schema
                .as_deref()
                .unwrap_or("skipped (install manifest not cached)")
        );
    }
    for n in &notes {
        println!("{n}");
    }
    if let Some(w) = workloads {
        println!(
            "ok: workloads: {} Application(s), {} Pod spec(s) checked against their namespace's PodSecurity \
             level, {} chart(s) checked for known needs; not checked: {}",
            w.applications,
            w.pod_specs,
            w.charts_checked,
            w.not_checked.join("; ")
        );
    }
    Ok(())
}

/// Validates `infra/*.yaml` (Talos clusters fully, other distributions by their
/// common fields) and the profiles and groups that point at them; returns the
/// cluster names. Clusters that are not armed are `notes`, not problems.
fn check_infra(
    infra: Option<&provisioner_core::infra::Infra>,
    cat: Option<&Catalog>,
    problems: &mut Vec<String>,
    notes: &mut Vec<String>,
) -> Vec<String> {
    let Some(infra) = infra else {
        return Vec::new();
    };
    // Not a problem (the shipped example data is like this), but nothing happens for
    // such a cluster until its MACs are real (crate::inputs::arming).
    for (name, why) in infra.unarmed() {
        let file = infra
            .sources
            .get(&name)
            .map(|f| f.display().to_string())
            .unwrap_or(name);
        notes.push(format!("note: {file}: {why}"));
    }
    if let Some(cat) = cat {
        let source = |key: String| {
            cat.sources
                .get(&key)
                .map(|f| f.display().to_string())
                .unwrap_or(key)
        };
        problems.extend(provisioner_core::infra::group_problems(
            cat,
            &infra.talos,
            provisioner_core::catalog::ConfigKind::Talos,
            "cluster",
            &source,
        ));
        crate::os::k0s::check_groups(&infra.k0s, cat, problems);
    }
    infra.names().into_iter().collect()
}
