//! External-DHCP snippets for routers (`provisioner dhcp-snippet --for opnsense|
//! mikrotik`), next to the dnsmasq/Kea/ISC ones in the parent module. Same chain:
//! iPXE (user class `iPXE`) gets `/boot.ipxe`, UEFI HTTP Boot gets an `http://`
//! URL with option 60 `HTTPClient`, firmware PXE gets an iPXE binary by option 93.

use super::Chain;

/// OPNsense: the ISC DHCPv4 service's "Network booting" fields (Services → ISC
/// DHCPv4 → [interface]), which map to the same classes; or, for the Dnsmasq
/// DNS & DHCP service, the dnsmasq lines in a `dnsmasq.conf.d` file.
pub fn opnsense(c: &Chain, dnsmasq: &str) -> String {
    let Chain {
        server,
        base,
        bios_file,
        efi_file,
    } = c;
    let dnsmasq: String = dnsmasq.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "# provisioner: chain network-booting clients to {server}\n\
         #\n\
         # ISC DHCPv4: Services > ISC DHCPv4 > <interface> > Network booting > Advanced\n\
         #   Enable network booting:           checked\n\
         #   Set next-server IP:               {server}\n\
         #   Set default bios filename:        {bios_file}\n\
         #   Set x64 UEFI (64-bit) filename:   {efi_file}\n\
         #   Set iPXE boot filename:           {base}/boot.ipxe\n\
         #   (UEFI HTTP Boot needs option 60 = HTTPClient, which this page cannot set:\n\
         #    use PXE, or the Dnsmasq service below.)\n\
         #\n\
         # Dnsmasq DNS & DHCP: save as /usr/local/etc/dnsmasq.conf.d/provisioner.conf\n\
         # and restart the service:\n\
         {dnsmasq}"
    )
}

/// MikroTik RouterOS ≥ 7.4: options, option sets and `matcher` entries (option 77
/// `iPXE`, option 60 `HTTPClient`, option 93 arch 7/9), with the BIOS file as the
/// network's default. Paste into a terminal; `[find]` applies to every DHCP network.
pub fn mikrotik(c: &Chain) -> String {
    let Chain {
        server,
        base,
        bios_file,
        efi_file,
    } = c;
    format!(
        "# provisioner: chain network-booting clients to {server} (RouterOS >= 7.4)\n\
         /ip dhcp-server option\n\
         add name=prov-ipxe-file code=67 value=\"s'{base}/boot.ipxe'\"\n\
         add name=prov-http-file code=67 value=\"s'{base}/bin/ipxe.efi'\"\n\
         add name=prov-http-class code=60 value=\"s'HTTPClient'\"\n\
         add name=prov-efi-file code=67 value=\"s'{efi_file}'\"\n\
         /ip dhcp-server option sets\n\
         add name=prov-ipxe options=prov-ipxe-file\n\
         add name=prov-http options=prov-http-file,prov-http-class\n\
         add name=prov-efi options=prov-efi-file\n\
         /ip dhcp-server matcher\n\
         add name=prov-ipxe server=all code=77 value=\"iPXE\" option-set=prov-ipxe\n\
         add name=prov-http server=all code=60 matching-type=substring value=\"HTTPClient\" option-set=prov-http\n\
         add name=prov-efi7 server=all code=93 value=\"0x0007\" option-set=prov-efi\n\
         add name=prov-efi9 server=all code=93 value=\"0x0009\" option-set=prov-efi\n\
         /ip dhcp-server network\n\
         set [find] next-server={server} boot-file-name={bios_file}\n"
    )
}

#[cfg(test)]
mod tests {
    use crate::snippet::{Chain, Target, render};

    fn chain() -> Chain {
        Chain::new("10.77.5.1".parse().unwrap(), "http://10.77.5.1:8080".into())
    }

    #[test]
    fn opnsense_names_every_file_and_embeds_dnsmasq() {
        let s = render(Target::Opnsense, &chain());
        for want in [
            "Set next-server IP:               10.77.5.1",
            "Set default bios filename:        undionly.kpxe",
            "Set x64 UEFI (64-bit) filename:   snponly.efi",
            "Set iPXE boot filename:           http://10.77.5.1:8080/boot.ipxe",
            "    dhcp-boot=tag:ipxe,http://10.77.5.1:8080/boot.ipxe",
        ] {
            assert!(s.contains(want), "missing {want:?} in\n{s}");
        }
    }

    #[test]
    fn mikrotik_matches_ipxe_http_and_efi() {
        let s = render(Target::Mikrotik, &chain());
        for want in [
            "code=77 value=\"iPXE\" option-set=prov-ipxe",
            "code=60 matching-type=substring value=\"HTTPClient\"",
            "code=93 value=\"0x0007\"",
            "value=\"s'http://10.77.5.1:8080/boot.ipxe'\"",
            "set [find] next-server=10.77.5.1 boot-file-name=undionly.kpxe",
        ] {
            assert!(s.contains(want), "missing {want:?} in\n{s}");
        }
        assert_eq!(s.lines().filter(|l| l.starts_with('/')).count(), 4, "four menus");
    }
}
