//! iPXE scripts.
//!
//! Facts relied on (boot-protocols.md §6): iPXE expands `${...}` on every line, so only
//! the first stage uses iPXE variables and per-machine values are rendered here;
//! EFI iPXE hands an initrd to the kernel only when the kernel line names it with
//! `initrd=<name>` (§6.6, harmless on BIOS); the first DHCP answer can race a proxy
//! offer, so the first stage retries DHCP (§6.4). Only commands present in Debian's
//! 2019 iPXE build are used. `sleep` is among them (its usage string is in
//! `/usr/lib/ipxe/ipxe.efi`, and the approve-mode lab test sees QEMU's SeaBIOS ROM
//! pace its polls with it); the waiting scripts fall back to `prompt --timeout` for
//! builds without it.

use crate::boot::{BootDecision, InstallPlan};
use crate::catalog::{ConfigKind, DeviceFlow};
use crate::model::MacAddr;

use super::BootUrls;

/// The first stage, served at `/boot.ipxe` and as TFTP `autoexec.ipxe`: get an address
/// if iPXE has none, then chain to this machine's own script. `--replace` hands the
/// machine script's outcome (`exit` for local boot) straight back to the firmware, so
/// only a failed fetch falls through to the retry lines.
pub fn first_stage(base: &str) -> String {
    let chain = format!(
        "chain --replace --autofree {base}/ipxe?mac=${{mac:hexhyp}}&uuid=${{uuid}}&arch=${{buildarch}}&platform=${{platform}}&serial=${{serial:uristring}}"
    );
    format!(
        "#!ipxe\n\
         # provisioner first stage: make sure we have an address, then ask the\n\
         # appliance what this machine boots.\n\
         isset ${{ip}} || dhcp || dhcp || dhcp || goto nonet\n\
         {chain} || goto retry\n\
         :retry\n\
         echo provisioner: no answer from {base}, retrying DHCP\n\
         dhcp || dhcp ||\n\
         {chain} || goto fail\n\
         :nonet\n\
         echo provisioner: no DHCP lease after 3 tries\n\
         :fail\n\
         echo provisioner: cannot reach {base}; leaving to the next boot device\n\
         exit 1\n"
    )
}

/// The per-machine script for a decision. `urls` is needed only for installs.
pub fn machine_script(mac: MacAddr, decision: &BootDecision, urls: &BootUrls) -> String {
    match decision {
        BootDecision::Install(plan) => install(mac, plan, urls),
        BootDecision::LocalBoot { reason } => format!(
            "#!ipxe\n\
             echo provisioner: {mac}: {reason}\n\
             exit\n"
        ),
        BootDecision::Unknown { reason, .. } => format!(
            "#!ipxe\n\
             echo provisioner: {mac} has no profile here: {reason}\n\
             echo provisioner: adopt it (provisioner machines adopt {mac} --node HOST), add a group under profiles/groups, or set unknown_policy\n\
             exit 1\n"
        ),
    }
}

/// Text safe inside an iPXE `echo`: iPXE expands `${…}` on every line, so `$`
/// and anything non-printable is replaced.
fn echo_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c == '$' || !(c.is_ascii_graphic() || c == ' ') {
                '?'
            } else {
                c
            }
        })
        .collect()
}

/// The lines that wait `secs` and start over at the first stage (which asks again
/// with the machine's identity). `sleep` is in Debian's iPXE builds; `prompt
/// --timeout` is the fallback for builds without it, so a refused machine never
/// spins.
fn wait_and_retry(base: &str, secs: u32) -> String {
    format!(
        ":wait\n\
         sleep {secs} || prompt --timeout {ms} provisioner: retrying (any key: now) ||\n\
         chain --replace --autofree {base}/boot.ipxe || goto wait\n",
        ms = u64::from(secs) * 1000
    )
}

/// What a machine gets when its request is refused (peer binding, UUID pin): why,
/// then a retry after `secs`. Never a token.
pub fn refused_script(mac: MacAddr, reason: &str, base: &str, secs: u32) -> String {
    format!(
        "#!ipxe\n\
         echo provisioner: {mac}: install refused: {}\n\
         echo provisioner: asking again in {secs} s\n\
         {}",
        echo_safe(reason),
        wait_and_retry(base, secs)
    )
}

/// What a machine waiting for an operator's approval gets: its user code and
/// identity on the console, then a poll after `secs`.
pub fn waiting_script(
    mac: MacAddr,
    pending: &crate::release::admission::PendingApproval,
    base: &str,
    secs: u32,
) -> String {
    let code = echo_safe(&pending.code);
    let uuid = pending.uuid.as_deref().map_or_else(|| "(none)".into(), echo_safe);
    let denied = if pending.denied_by.is_some() {
        "echo provisioner: an operator DENIED this install; waiting for an approval\n"
    } else {
        ""
    };
    // One fact per line: iPXE collapses runs of spaces in `echo` and consoles wrap
    // at 80 columns.
    format!(
        "#!ipxe\n\
         echo provisioner: {mac} waits for an operator's approval\n\
         echo provisioner: code {code}\n\
         echo provisioner: mac {mac}\n\
         echo provisioner: uuid {uuid}\n\
         echo provisioner: ip {}\n\
         echo provisioner: provisioner machines approve {mac} --code {code}\n\
         {denied}{}",
        pending.peer,
        wait_and_retry(base, secs)
    )
}

/// Kernel argument that makes Flatcar run Ignition (first boot).
pub const FLATCAR_FIRST_BOOT: &str = "flatcar.first_boot=1";

/// The kernel command line an install gets (also printed by `provisioner render`).
pub fn kernel_args(plan: &InstallPlan, urls: &BootUrls) -> Vec<String> {
    let mut args: Vec<String> = plan
        .image
        .initrds
        .iter()
        .map(|i| format!("initrd={}", i.file))
        .collect();
    args.extend(plan.image.args.iter().cloned());
    args.extend(plan.profile.args.iter().cloned());
    // Flatcar runs Ignition only on a first boot (flatcar-docs booting-with-pxe.md):
    // the config kind brings the flag, so any image (the lab payload too) booted
    // with `config: flatcar` gets the same kernel line.
    if plan.profile.config == ConfigKind::Flatcar && !args.iter().any(|a| a == FLATCAR_FIRST_BOOT) {
        args.push(FLATCAR_FIRST_BOOT.into());
    }
    if let Some(key) = plan.profile.config.kernel_arg() {
        args.push(format!("{key}={}", urls.config));
    }
    if let Some(flow) = plan
        .profile
        .device_flow
        .as_ref()
        .filter(|_| plan.profile.config == ConfigKind::Talos)
    {
        args.extend(oauth_args(flow, &urls.base));
    }
    if plan.profile.config != ConfigKind::None {
        args.push(format!("provisioner.callback={}", urls.callback));
    }
    args
}

/// Where the appliance serves the RFC 8628 endpoints: Talos' own defaults (the
/// `talos.config` URL with its path replaced by `/device/code` and `/token`,
/// siderolabs/talos `…/platform/metal/oauth2/oauth2.go` `NewConfig`), rendered
/// explicitly anyway.
pub const DEVICE_AUTH_PATH: &str = "/device/code";
/// See [`DEVICE_AUTH_PATH`].
pub const TOKEN_PATH: &str = "/token";

/// Talos' `talos.config.oauth.*` kernel parameters (talos.dev
/// `v1.11/advanced/machine-config-oauth`): repeated parameters for each scope and
/// extra variable. `uuid` and `mac` are sent with the device authorization so the
/// appliance can tie the device code to the machine.
pub fn oauth_args(flow: &DeviceFlow, base: &str) -> Vec<String> {
    let mut args = vec![format!("talos.config.oauth.client_id={}", flow.client_id)];
    args.extend(
        flow.scopes
            .iter()
            .map(|s| format!("talos.config.oauth.scope={s}")),
    );
    args.push(format!(
        "talos.config.oauth.device_auth_url={base}{DEVICE_AUTH_PATH}"
    ));
    args.push(format!("talos.config.oauth.token_url={base}{TOKEN_PATH}"));
    args.push("talos.config.oauth.extra_variable=uuid".into());
    args.push("talos.config.oauth.extra_variable=mac".into());
    args
}

fn install(mac: MacAddr, plan: &InstallPlan, urls: &BootUrls) -> String {
    let base = &urls.base;
    let image = &plan.image;
    let mut s = format!(
        "#!ipxe\n\
         echo provisioner: {mac}: installing profile {} (image {})\n\
         kernel {base}/assets/{}/{} {} || goto fail\n",
        plan.profile.id,
        image.id,
        image.id,
        image.kernel.file,
        kernel_args(plan, urls).join(" "),
    );
    for initrd in &image.initrds {
        s.push_str(&format!(
            "initrd {base}/assets/{}/{} || goto fail\n",
            image.id, initrd.file
        ));
    }
    s.push_str(
        "boot || goto fail\n\
         :fail\n\
         echo provisioner: boot failed; leaving to the next boot device\n\
         exit 1\n",
    );
    s
}
