//! QEMU virtual machines in a lab, one per firmware class.
//!
//! Each VM gets its own tap on the lab bridge, its serial console in a file,
//! `-no-reboot` (so the payload's `poweroff -f` or a kernel panic ends QEMU),
//! and for OVMF a private copy of the VARS flash. The number of VMs running
//! at once across all test processes is capped by slot locks in
//! `/run/provisioner-lab` (`$PROVISIONER_LAB_VM_SLOTS`, default: CPU count):
//! under TCG each VM eats a core, and overcommitting makes every boot time
//! out together. [`Lab::boot`] waits for a slot, so timeouts measured from
//! its return are not eaten by queueing.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::lab::{Lab, LabProcess};
use crate::{markers, tail, tail_file};

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// Firmware classes, as in `shared/reference/qemu-lab.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS with QEMU's iPXE NIC ROM (e1000): the first DHCP already
    /// carries user class `iPXE`, arch 0.
    SeabiosIpxe,
    /// OVMF (q35) with the iPXE EFI ROM (e1000): iPXE, arch 7.
    OvmfIpxe,
    /// OVMF driving virtio-net itself (ROM removed): EDK2's PXE, vendor class
    /// `PXEClient:Arch:00007`, needs a TFTP boot file (e.g. `snponly.efi`).
    OvmfPxe,
    /// Same machine as [`Firmware::OvmfPxe`]; meant for a DHCP setup that
    /// gives the MAC no PXE file, so EDK2 falls through to HTTP Boot after
    /// PXEv4/v6 time out (about 2 minutes).
    OvmfHttpBoot,
}

impl Firmware {
    /// Whether this class runs OVMF (UEFI) rather than SeaBIOS.
    pub fn is_uefi(self) -> bool {
        !matches!(self, Firmware::SeabiosIpxe)
    }

    /// A generous bound for one boot to reach the payload's markers under
    /// TCG on two cores (measured times are in tests/README.md).
    pub fn boot_timeout(self) -> Duration {
        Duration::from_secs(match self {
            Firmware::SeabiosIpxe | Firmware::OvmfIpxe => 150,
            Firmware::OvmfPxe => 240,
            Firmware::OvmfHttpBoot => 420,
        })
    }
}

/// What to boot.
#[derive(Debug, Clone)]
pub struct Machine {
    pub firmware: Firmware,
    /// MAC of the single NIC, `52:54:00:…`.
    pub mac: String,
    /// Label for logs and QEMU's `-name`.
    pub name: String,
}

impl Machine {
    /// The SMBIOS system UUID the VM reports (QEMU `-uuid`), derived from its MAC so
    /// a machine keeps its identity across boots, as real hardware does.
    pub fn smbios_uuid(&self) -> String {
        let hex: String = self.mac.chars().filter(char::is_ascii_hexdigit).collect();
        format!("5ab1ab00-0000-4000-8000-{:0>12}", hex.to_ascii_lowercase())
    }
}

/// A running VM; SIGKILLed on drop.
#[derive(Debug)]
pub struct QemuVm {
    machine: Machine,
    process: LabProcess,
    serial: PathBuf,
    tap: String,
    netns: String,
    started: Instant,
    _slot: Option<File>,
}

impl Lab {
    /// Boots `machine` on a new tap on the lab bridge (waits for a VM slot).
    pub fn boot(&self, machine: Machine) -> Result<QemuVm> {
        let slot = acquire_vm_slot()?;
        self.boot_in_slot(machine, Some(slot))
    }

    /// Boots machines that only make sense together (a cluster) at once, holding a
    /// single VM slot for the group: waiting for one slot per member could deadlock
    /// with fewer slots than members. They share the cores they get; the caller's
    /// timeouts must allow for that.
    pub fn boot_group(&self, machines: Vec<Machine>) -> Result<Vec<QemuVm>> {
        let mut slot = Some(acquire_vm_slot()?);
        machines
            .into_iter()
            .map(|m| self.boot_in_slot(m, slot.take()))
            .collect()
    }

    fn boot_in_slot(&self, machine: Machine, slot: Option<File>) -> Result<QemuVm> {
        let tap = self.next_tap_name();
        self.add_tap(&tap)?;
        let dir = self.dir();
        let serial = dir.join(format!("{}.serial.log", machine.name));
        let _ = fs::remove_file(&serial);
        let qemu_log = dir.join(format!("{}.qemu.log", machine.name));

        let mut args: Vec<String> = [
            "qemu-system-x86_64",
            "-name",
            &machine.name,
            "-accel",
            &std::env::var("PROVISIONER_LAB_ACCEL").unwrap_or_else(|_| "tcg".into()),
            "-smp",
            "1",
            "-nographic",
            "-monitor",
            "none",
            "-no-reboot",
            "-boot",
            "n",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push("-serial".into());
        args.push(format!("file:{}", serial.display()));
        args.push("-uuid".into());
        args.push(machine.smbios_uuid());
        args.push("-netdev".into());
        args.push(format!("tap,id=n0,ifname={tap},script=no,downscript=no"));
        let mac = &machine.mac;
        match machine.firmware {
            Firmware::SeabiosIpxe => {
                args.extend(["-m".into(), "512".into()]);
                args.extend(["-device".into(), format!("e1000,netdev=n0,mac={mac}")]);
            }
            fw => {
                let vars = dir.join(format!("{}.OVMF_VARS.fd", machine.name));
                fs::copy(OVMF_VARS, &vars).with_context(|| format!("copying {OVMF_VARS}"))?;
                args.extend(["-machine".into(), "q35".into(), "-m".into(), "768".into()]);
                args.push("-drive".into());
                args.push(format!(
                    "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
                ));
                args.push("-drive".into());
                args.push(format!("if=pflash,format=raw,unit=1,file={}", vars.display()));
                let nic = if fw == Firmware::OvmfIpxe {
                    format!("e1000,netdev=n0,mac={mac}")
                } else {
                    // Empty romfile: no iPXE ROM, OVMF's own virtio-net driver.
                    format!("virtio-net-pci,netdev=n0,mac={mac},romfile=")
                };
                args.extend(["-device".into(), nic]);
            }
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        fs::write(&qemu_log, format!("# {}\n", argv.join(" ")))?;
        let process = self.spawn(&argv, &qemu_log)?;
        Ok(QemuVm {
            machine,
            process,
            serial,
            tap,
            netns: self.netns().to_owned(),
            started: Instant::now(),
            _slot: slot,
        })
    }
}

impl QemuVm {
    /// The machine this VM was booted as.
    pub fn machine(&self) -> &Machine {
        &self.machine
    }

    /// Time since QEMU was started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The serial console captured so far.
    pub fn serial(&self) -> String {
        fs::read(&self.serial)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Path of the serial console log.
    pub fn serial_path(&self) -> &Path {
        &self.serial
    }

    /// Waits until the serial console shows `needle`. Fails early, with the
    /// console's tail, if the payload prints `LAB-FAILED` or QEMU exits
    /// first, and on timeout.
    pub fn wait_for_serial(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        let why = loop {
            let text = self.serial();
            if text.contains(needle) {
                return Ok(());
            }
            if let Some(line) = text.lines().find(|l| l.contains(markers::FAILED)) {
                break format!("payload reported failure: {}", line.trim());
            }
            if let Some(st) = self.process.try_exit() {
                if self.serial().contains(needle) {
                    return Ok(());
                }
                break format!("QEMU exited ({st})");
            }
            if start.elapsed() >= timeout {
                break format!("timed out after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(250));
        };
        bail!(
            "VM {} ({:?}, {}) never printed {needle:?}: {why} at {:.1?} after start\n\
             --- serial tail ({}) ---\n{}\n--- qemu log tail ---\n{}",
            self.machine.name,
            self.machine.firmware,
            self.machine.mac,
            self.started.elapsed(),
            self.serial.display(),
            tail(&self.serial(), 40),
            tail_file(self.process.log_path(), 10)
        )
    }

    /// Waits for QEMU to exit by itself (payload powered off, or a panic
    /// with `-no-reboot`).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        self.process
            .wait_exit(timeout)
            .map_err(|e| anyhow::anyhow!("{e:#}\n--- serial tail ---\n{}", tail(&self.serial(), 30)))
    }

    /// Kills QEMU now.
    pub fn kill(&mut self) {
        self.process.kill_9();
    }
}

impl Drop for QemuVm {
    fn drop(&mut self) {
        self.process.kill_9();
        let _ = std::process::Command::new("ip")
            .args(["-n", &self.netns, "link", "del", &self.tap])
            .output();
    }
}

/// Blocks until one of the machine-wide VM slots is free (30 min at most).
fn acquire_vm_slot() -> Result<File> {
    let slots: usize = std::env::var("PROVISIONER_LAB_VM_SLOTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    fs::create_dir_all("/run/provisioner-lab")?;
    let start = Instant::now();
    loop {
        for i in 0..slots {
            let f = File::create(format!("/run/provisioner-lab/vm-slot-{i}.lock"))?;
            if f.try_lock().is_ok() {
                return Ok(f);
            }
        }
        if start.elapsed() > Duration::from_secs(1800) {
            bail!("no free VM slot for 30 minutes (PROVISIONER_LAB_VM_SLOTS={slots})");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
