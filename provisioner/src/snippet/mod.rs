//! External-DHCP snippets that chain clients to this appliance (`provisioner
//! dhcp-snippet`). Each one sends firmware PXE clients the right iPXE binary over
//! TFTP, UEFI HTTP Boot clients an `http://` URL with option 60 `HTTPClient`, and
//! iPXE itself (user class `iPXE`, RFC 3004 option 77, or iPXE's option 175) the
//! HTTP first stage, so iPXE never chain-loads itself (boot-protocols.md §6.2).
//! Architectures are RFC 4578 option 93 values: 0 BIOS, 7/9 x86-64 UEFI, 11 arm64
//! UEFI, 16 x86-64 UEFI HTTP.

mod routers;

use std::net::IpAddr;

/// Which external server to print for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// dnsmasq (`dhcp-boot` lines; no interface or range lines).
    Dnsmasq,
    /// Kea DHCPv4 (`client-classes` JSON to merge into `Dhcp4`).
    Kea,
    /// ISC dhcpd (`dhcpd.conf` statements).
    Isc,
    /// OPNsense (the DHCPv4 "Network booting" fields, or its Dnsmasq service).
    Opnsense,
    /// MikroTik RouterOS 7 (`/ip dhcp-server` commands with option matchers).
    Mikrotik,
}

/// Boot file names and URLs the snippets point at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// Appliance address (TFTP next-server).
    pub server: IpAddr,
    /// Base URL of the HTTP boot path.
    pub base: String,
    /// BIOS iPXE over TFTP.
    pub bios_file: String,
    /// x86-64 UEFI iPXE over TFTP.
    pub efi_file: String,
}

impl Chain {
    /// Defaults for Debian's `ipxe` package.
    pub fn new(server: IpAddr, base: String) -> Self {
        Self {
            server,
            base,
            bios_file: "undionly.kpxe".into(),
            efi_file: "snponly.efi".into(),
        }
    }
}

/// Renders the snippet for `target`.
pub fn render(target: Target, c: &Chain) -> String {
    match target {
        Target::Dnsmasq => dnsmasq(c),
        Target::Kea => kea(c),
        Target::Isc => isc(c),
        Target::Opnsense => routers::opnsense(c, &dnsmasq(c)),
        Target::Mikrotik => routers::mikrotik(c),
    }
}

fn dnsmasq(c: &Chain) -> String {
    let Chain {
        server,
        base,
        bios_file,
        efi_file,
    } = c;
    // dnsmasq does not take the first matching dhcp-boot line, so every line
    // excludes the others' tags (qemu-lab.md).
    format!(
        "# provisioner: chain network-booting clients to {server}\n\
         dhcp-userclass=set:ipxe,iPXE\n\
         dhcp-match=set:ipxe,175\n\
         dhcp-match=set:efi64,option:client-arch,7\n\
         dhcp-match=set:efi64,option:client-arch,9\n\
         dhcp-vendorclass=set:http,HTTPClient\n\
         dhcp-boot=tag:ipxe,{base}/boot.ipxe\n\
         dhcp-boot=tag:!ipxe,tag:http,{base}/bin/ipxe.efi\n\
         dhcp-option-force=tag:!ipxe,tag:http,60,HTTPClient\n\
         dhcp-boot=tag:!ipxe,tag:!http,tag:efi64,{efi_file},,{server}\n\
         dhcp-boot=tag:!ipxe,tag:!http,tag:!efi64,{bios_file},,{server}\n"
    )
}

fn kea(c: &Chain) -> String {
    let Chain {
        server,
        base,
        bios_file,
        efi_file,
    } = c;
    let classes = serde_json::json!([
        { "name": "provisioner-ipxe",
          "test": "option[77].hex == 'iPXE' or option[175].exists",
          "boot-file-name": format!("{base}/boot.ipxe") },
        { "name": "provisioner-http",
          "test": "not member('provisioner-ipxe') and substring(option[60].hex,0,10) == 'HTTPClient'",
          "boot-file-name": format!("{base}/bin/ipxe.efi"),
          "option-data": [ { "name": "vendor-class-identifier", "data": "HTTPClient" } ] },
        { "name": "provisioner-efi64",
          "test": "not member('provisioner-ipxe') and not member('provisioner-http') and (option[93].hex == 0x0007 or option[93].hex == 0x0009)",
          "next-server": server.to_string(),
          "boot-file-name": efi_file },
        { "name": "provisioner-bios",
          "test": "not member('provisioner-ipxe') and not member('provisioner-http') and option[93].hex == 0x0000",
          "next-server": server.to_string(),
          "boot-file-name": bios_file }
    ]);
    let body =
        serde_json::to_string_pretty(&serde_json::json!({ "client-classes": classes })).unwrap_or_default();
    format!("// provisioner: merge into \"Dhcp4\" to chain network-booting clients to {server}\n{body}\n")
}

fn isc(c: &Chain) -> String {
    let Chain {
        server,
        base,
        bios_file,
        efi_file,
    } = c;
    format!(
        "# provisioner: chain network-booting clients to {server}\n\
         option provisioner-arch code 93 = unsigned integer 16;\n\
         option provisioner-ipxe-encap code 175 = string;\n\
         if (exists user-class and option user-class = \"iPXE\") or exists provisioner-ipxe-encap {{\n\
         \x20 filename \"{base}/boot.ipxe\";\n\
         }} elsif substring (option vendor-class-identifier, 0, 10) = \"HTTPClient\" {{\n\
         \x20 option vendor-class-identifier \"HTTPClient\";\n\
         \x20 filename \"{base}/bin/ipxe.efi\";\n\
         }} elsif option provisioner-arch = 7 or option provisioner-arch = 9 {{\n\
         \x20 next-server {server};\n\
         \x20 filename \"{efi_file}\";\n\
         }} else {{\n\
         \x20 next-server {server};\n\
         \x20 filename \"{bios_file}\";\n\
         }}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain() -> Chain {
        Chain::new("10.77.5.1".parse().unwrap(), "http://10.77.5.1:8080".into())
    }

    #[test]
    fn dnsmasq_golden() {
        let s = render(Target::Dnsmasq, &chain());
        assert!(s.contains("dhcp-boot=tag:ipxe,http://10.77.5.1:8080/boot.ipxe\n"));
        assert!(s.contains("dhcp-boot=tag:!ipxe,tag:!http,tag:efi64,snponly.efi,,10.77.5.1\n"));
        assert!(s.contains("dhcp-boot=tag:!ipxe,tag:!http,tag:!efi64,undionly.kpxe,,10.77.5.1\n"));
        assert!(!s.contains("interface=") && !s.contains("dhcp-range"));
    }

    #[test]
    fn kea_is_json_after_the_comment() {
        let s = render(Target::Kea, &chain());
        let json: serde_json::Value = serde_json::from_str(s.split_once('\n').unwrap().1).unwrap();
        assert_eq!(json["client-classes"].as_array().unwrap().len(), 4);
    }

    #[test]
    fn isc_mentions_each_file() {
        let s = render(Target::Isc, &chain());
        for want in [
            "boot.ipxe",
            "snponly.efi",
            "undionly.kpxe",
            "HTTPClient",
            "next-server 10.77.5.1;",
        ] {
            assert!(s.contains(want), "{want}");
        }
    }
}
