//! The cluster workflows (the Talos bootstrap supervisor, the k0s readiness and
//! hand-off), one task per armed cluster, started at start and again after every
//! reload of the inputs (`super::reload`: an adoption that gave a cluster its last
//! real MAC arms it). A reload leaves running what a restart would run:
//! - a cluster that became armed starts;
//! - a cluster whose definition changed (its `infra/` file, or `gitops/settings.yaml`
//!   for k0s) is stopped and started again with the new one once its old task has
//!   ended. Both workflows persist each step before acting and resume at the
//!   recorded step, as after a restart; a HandedOff cluster stays untouched;
//! - a cluster that is gone or no longer armed stops;
//! - every other cluster keeps its task: never two tasks for one cluster.
//!
//! New tasks reach the composition root's task set through a channel, so the
//! shutdown token stops them and the drain joins them like the servers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::BoxFuture;
use provisioner_core::catalog::Catalog;
use provisioner_core::inventory::Inventory;
use provisioner_core::k0s::K0sCluster;
use provisioner_core::talos::TalosCluster;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::reload::Secrets;
use crate::config::Config;
use crate::gitops::settings::Settings;
use crate::inputs::Inputs;
use crate::os::k0s::ready::Shared;
use crate::store::RedbInventory;

/// A task for the composition root's task set.
pub(super) type Task = BoxFuture<'static, anyhow::Result<()>>;

/// What a cluster's workflow was started from: a change restarts it.
#[derive(Debug, Clone, PartialEq)]
enum Def {
    Talos(Box<TalosCluster>),
    K0s(Box<K0sCluster>, Option<Settings>),
}

impl Def {
    fn os(&self) -> &'static str {
        match self {
            Self::Talos(_) => "talos",
            Self::K0s(..) => "k0s",
        }
    }
}

/// One cluster's task: `stop` ends it, `ended` says it has.
#[derive(Debug)]
struct Running {
    def: Option<Def>,
    stop: CancellationToken,
    ended: CancellationToken,
}

/// What the workflows are built from, and the task of each cluster.
pub(super) struct Workflows {
    cfg: Config,
    /// The Talos supervisor may run (`bootstrap.enabled`, not a dry run).
    bootstrap: bool,
    /// Workflow state (the cluster store) and machines.
    store: Arc<RedbInventory>,
    /// The journal: the supervisor's "installed" marks reach the live event stream.
    journal: Arc<dyn Inventory>,
    /// Kubeconfig custody and the Argo CD hand-off, shared by both OSes.
    shared: Shared,
    spawn: mpsc::UnboundedSender<Task>,
    shutdown: CancellationToken,
    running: Mutex<BTreeMap<String, Running>>,
}

impl std::fmt::Debug for Workflows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workflows").finish_non_exhaustive()
    }
}

impl Workflows {
    /// Workflows sending their tasks to `spawn`; none runs before [`Self::arm`].
    pub fn new(
        cfg: &Config,
        bootstrap: bool,
        store: Arc<RedbInventory>,
        journal: Arc<dyn Inventory>,
        shared: Shared,
        spawn: mpsc::UnboundedSender<Task>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            cfg: cfg.clone(),
            bootstrap,
            store,
            journal,
            shared,
            spawn,
            shutdown,
            running: Mutex::default(),
        }
    }

    /// Brings the running tasks in line with the armed clusters of `inputs` (see the
    /// module comment). `secrets`: the stores opened for them (`super::reload::Live`).
    pub fn arm(&self, inputs: &Inputs, catalog: &Arc<Catalog>, secrets: &Secrets) {
        if self.shutdown.is_cancelled() {
            return;
        }
        let want = self.wanted(inputs, secrets);
        let mut running = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (name, r) in running.iter_mut() {
            if r.def.is_some() && !want.contains_key(name) {
                tracing::info!(cluster = %name, "cluster no longer armed: its workflow stops");
                r.stop.cancel();
                r.def = None;
            }
        }
        for (name, def) in want {
            let prev = match running.get(&name) {
                Some(r) if r.def.as_ref() == Some(&def) => continue,
                Some(r) => {
                    if r.def.is_some() {
                        tracing::info!(cluster = %name, "cluster definition changed: its workflow restarts at its recorded step");
                    }
                    r.stop.cancel();
                    Some(r.ended.clone())
                }
                None => None,
            };
            let stop = self.shutdown.child_token();
            let Some(work) = self.work(&name, &def, inputs, catalog, secrets, &stop) else {
                if let Some(r) = running.get_mut(&name) {
                    r.def = None;
                }
                continue;
            };
            tracing::info!(cluster = %name, os = def.os(), "cluster workflow started");
            let ended = CancellationToken::new();
            let task = after(prev, work, stop.clone(), ended.clone(), self.shutdown.clone());
            if self.spawn.send(task).is_err() {
                // The daemon stopped serving: nothing runs any more.
                return;
            }
            running.insert(
                name,
                Running {
                    def: Some(def),
                    stop,
                    ended,
                },
            );
        }
    }

    /// The armed clusters that get a workflow, by name.
    fn wanted(&self, inputs: &Inputs, secrets: &Secrets) -> BTreeMap<String, Def> {
        let clusters = &inputs.clusters;
        let mut want = BTreeMap::new();
        if secrets.1.is_some() {
            let settings = inputs.gitops.as_ref().ok();
            for (name, c) in &clusters.k0s {
                want.insert(name.clone(), Def::K0s(Box::new(c.clone()), settings.cloned()));
            }
        }
        if secrets.0.is_some() && self.cfg.bootstrap.enabled && self.bootstrap {
            for (name, c) in &clusters.talos {
                want.insert(name.clone(), Def::Talos(Box::new(c.clone())));
            }
        }
        want
    }

    /// The workflow of one cluster, ended by `stop`.
    fn work(
        &self,
        name: &str,
        def: &Def,
        inputs: &Inputs,
        catalog: &Arc<Catalog>,
        secrets: &Secrets,
        stop: &CancellationToken,
    ) -> Option<BoxFuture<'static, ()>> {
        match def {
            Def::Talos(c) => {
                let supervisor = crate::os::talos::supervisor::Supervisor {
                    settings: self.cfg.bootstrap.clone(),
                    talos_port: self.cfg.talos.api_port,
                    clusters: BTreeMap::from([(name.to_string(), (**c).clone())]),
                    secrets: secrets.0.clone()?,
                    store: self.store.clone(),
                    inventory: self.journal.clone(),
                    kubeconfigs: self.shared.kubeconfigs.clone(),
                    argo: self.shared.argo.clone(),
                };
                Some(supervisor.run(stop.clone()).boxed())
            }
            Def::K0s(c, settings) => {
                if let Err(e) = &inputs.gitops {
                    tracing::warn!(cluster = %name, error = %e, "no GitOps settings: the k0s cluster ends once its nodes are Ready");
                }
                let clusters = BTreeMap::from([(name.to_string(), (**c).clone())]);
                let wiring = crate::os::k0s::ready::Wiring {
                    clusters: &clusters,
                    settings: settings.as_ref(),
                    secrets: secrets.1.clone()?,
                    catalog: catalog.clone(),
                    inventory: self.store.clone(),
                    store: self.store.clone(),
                    shared: &self.shared,
                };
                let mut one = crate::os::k0s::ready::workflows(wiring, stop);
                one.pop().map(FutureExt::boxed)
            }
        }
    }
}

/// `work` once the task it replaces (`prev`) has ended: one task per cluster at a
/// time. A task stopped by a reload then waits for shutdown, because the
/// composition root reads a task that ends early as a crashed server.
fn after(
    prev: Option<CancellationToken>,
    work: BoxFuture<'static, ()>,
    stop: CancellationToken,
    ended: CancellationToken,
    shutdown: CancellationToken,
) -> Task {
    async move {
        if let Some(prev) = prev {
            tokio::select! {
                () = prev.cancelled() => {}
                () = shutdown.cancelled() => {}
            }
        }
        if !stop.is_cancelled() {
            work.await;
        }
        ended.cancel();
        shutdown.cancelled().await;
        Ok(())
    }
    .boxed()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// Counts the workflows running at once; each is slow to stop, like an orchestrator
    /// finishing a step's write.
    #[derive(Clone, Default)]
    struct Gauge {
        now: Arc<AtomicUsize>,
        max: Arc<AtomicUsize>,
        runs: Arc<AtomicUsize>,
    }

    impl Gauge {
        fn work(&self, stop: &CancellationToken) -> BoxFuture<'static, ()> {
            let (g, stop) = (self.clone(), stop.clone());
            async move {
                let n = g.now.fetch_add(1, Ordering::SeqCst) + 1;
                g.max.fetch_max(n, Ordering::SeqCst);
                g.runs.fetch_add(1, Ordering::SeqCst);
                stop.cancelled().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                g.now.fetch_sub(1, Ordering::SeqCst);
            }
            .boxed()
        }
    }

    fn task(
        g: &Gauge,
        prev: Option<&CancellationToken>,
        shutdown: &CancellationToken,
    ) -> (Task, CancellationToken, CancellationToken) {
        let (stop, ended) = (shutdown.child_token(), CancellationToken::new());
        let t = after(
            prev.cloned(),
            g.work(&stop),
            stop.clone(),
            ended.clone(),
            shutdown.clone(),
        );
        (t, stop, ended)
    }

    #[tokio::test]
    async fn a_restarted_cluster_never_runs_two_workflows_and_all_end_at_shutdown() {
        let (g, shutdown) = (Gauge::default(), CancellationToken::new());
        let (t1, stop1, ended1) = task(&g, None, &shutdown);
        let h1 = tokio::spawn(t1);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(g.now.load(Ordering::SeqCst), 1);
        // Two reloads in a row while the first task is still stopping: the second
        // task is replaced before it could run, the third runs once the first ended.
        stop1.cancel();
        let (t2, stop2, ended2) = task(&g, Some(&ended1), &shutdown);
        let h2 = tokio::spawn(t2);
        stop2.cancel();
        let (t3, _stop3, ended3) = task(&g, Some(&ended2), &shutdown);
        let h3 = tokio::spawn(t3);
        ended2.cancelled().await;
        assert!(ended1.is_cancelled(), "the second ended before the first");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            (g.now.load(Ordering::SeqCst), g.runs.load(Ordering::SeqCst)),
            (1, 2)
        );
        assert_eq!(
            g.max.load(Ordering::SeqCst),
            1,
            "two workflows of one cluster at once"
        );
        // The replaced tasks stay in the task set until shutdown (an early end would
        // read as a crashed server); shutdown ends every one.
        assert!(!h1.is_finished() && !h2.is_finished());
        shutdown.cancel();
        for h in [h1, h2, h3] {
            h.await.unwrap().unwrap();
        }
        assert!(ended3.is_cancelled());
        assert_eq!(g.now.load(Ordering::SeqCst), 0);
    }
}
