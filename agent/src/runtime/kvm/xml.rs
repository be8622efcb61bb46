//! libvirt XML for the network, the storage pool, volumes and domains the KVM
//! runtime manages. Pure: values in, XML out.

use std::net::Ipv4Addr;

/// XML namespace of Metrom's domain metadata.
pub const METADATA_NS: &str = "https://metrom.dev/xmlns/environment/1";

/// Escapes text for XML content and attribute values.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// A NAT network with DHCP, for environments' VMs.
pub fn network(name: &str, bridge: &str, gateway: Ipv4Addr, prefix: u8) -> String {
    let net = u32::from(gateway) & (!0u32 << (32 - prefix));
    let size = 1u32 << (32 - prefix);
    let first = Ipv4Addr::from(net + 10);
    let last = Ipv4Addr::from(net + size - 2);
    format!(
        "<network>\n  <name>{}</name>\n  <forward mode='nat'/>\n  <bridge name='{}' stp='on' delay='0'/>\n  \
         <ip address='{gateway}' prefix='{prefix}'>\n    <dhcp>\n      <range start='{first}' end='{last}'/>\n    </dhcp>\n  \
         </ip>\n</network>\n",
        esc(name),
        esc(bridge)
    )
}

/// A directory storage pool.
pub fn pool(name: &str, path: &str) -> String {
    format!(
        "<pool type='dir'>\n  <name>{}</name>\n  <target>\n    <path>{}</path>\n  </target>\n</pool>\n",
        esc(name),
        esc(path)
    )
}

/// A thin qcow2 volume, optionally a copy-on-write overlay on `backing`.
pub fn volume(name: &str, capacity_bytes: u64, backing: Option<(&str, &str)>) -> String {
    let backing = match backing {
        Some((path, format)) => format!(
            "  <backingStore>\n    <path>{}</path>\n    <format type='{}'/>\n  </backingStore>\n",
            esc(path),
            esc(format)
        ),
        None => String::new(),
    };
    format!(
        "<volume>\n  <name>{}</name>\n  <capacity unit='bytes'>{capacity_bytes}</capacity>\n  <target>\n    \
         <format type='qcow2'/>\n  </target>\n{backing}</volume>\n",
        esc(name)
    )
}

/// Everything a domain is made of.
#[derive(Debug, Clone)]
pub struct DomainSpec {
    pub name: String,
    pub title: String,
    pub env_id: String,
    pub build: u64,
    pub image_digest: String,
    /// "kvm" or "qemu" (TCG).
    pub domain_type: &'static str,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub root_disk: String,
    pub data_disk: String,
    pub seed_iso: String,
    pub network: String,
    pub mac: String,
    pub console_log: String,
}

/// The domain XML. Disks: vda root overlay, vdb data, vdc the NoCloud seed.
pub fn domain(d: &DomainSpec) -> String {
    let cpu = if d.domain_type == "kvm" {
        "  <cpu mode='host-passthrough'/>\n"
    } else {
        ""
    };
    format!(
        r#"<domain type='{ty}'>
  <name>{name}</name>
  <title>{title}</title>
  <metadata>
    <metrom:environment xmlns:metrom="{ns}">
      <metrom:id>{id}</metrom:id>
      <metrom:build>{build}</metrom:build>
      <metrom:image>{image}</metrom:image>
    </metrom:environment>
  </metadata>
  <memory unit='MiB'>{mem}</memory>
  <vcpu>{vcpus}</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <boot dev='hd'/>
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
{cpu}  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' discard='unmap'/>
      <source file='{root}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' discard='unmap'/>
      <source file='{data}'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{seed}'/>
      <target dev='vdc' bus='virtio'/>
      <readonly/>
    </disk>
    <interface type='network'>
      <source network='{net}'/>
      <mac address='{mac}'/>
      <model type='virtio'/>
    </interface>
    <channel type='unix'>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <serial type='file'>
      <source path='{console}'/>
      <target port='0'/>
    </serial>
    <rng model='virtio'>
      <backend model='random'>/dev/urandom</backend>
    </rng>
    <memballoon model='virtio'/>
  </devices>
</domain>
"#,
        ty = d.domain_type,
        name = esc(&d.name),
        title = esc(&d.title),
        ns = METADATA_NS,
        id = esc(&d.env_id),
        build = d.build,
        image = esc(&d.image_digest),
        mem = d.memory_mib,
        vcpus = d.vcpus,
        root = esc(&d.root_disk),
        data = esc(&d.data_disk),
        seed = esc(&d.seed_iso),
        net = esc(&d.network),
        mac = esc(&d.mac),
        console = esc(&d.console_log),
    )
}

/// Metrom's metadata read back from a domain.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Metadata {
    pub env_id: String,
    pub build: u64,
    pub image_digest: String,
}

/// Parses the metadata element (as libvirt returns it) or a whole domain XML.
pub fn parse_metadata(xml: &str) -> Option<Metadata> {
    let tag = |name: &str| -> Option<String> {
        let open = xml
            .find(&format!(":{name}>"))
            .or_else(|| xml.find(&format!("<{name}>")))?;
        let start = xml[open..].find('>')? + open + 1;
        let end = xml[start..].find('<')? + start;
        Some(xml[start..end].trim().to_string())
    };
    Some(Metadata {
        env_id: tag("id")?,
        build: tag("build")?.parse().ok()?,
        image_digest: tag("image").unwrap_or_default(),
    })
}

/// A stable, locally administered MAC for an environment (same on every rebuild).
pub fn mac_for(env_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(env_id.as_bytes());
    format!("52:54:00:{:02x}:{:02x}:{:02x}", h[0], h[1], h[2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_xml_carries_metadata_and_escapes() {
        let d = DomainSpec {
            name: "metrom-dev".into(),
            title: "Metrom <dev> & co".into(),
            env_id: "e-abc".into(),
            build: 3,
            image_digest: "sha256:00".into(),
            domain_type: "qemu",
            vcpus: 2,
            memory_mib: 512,
            root_disk: "/p/e-abc-root.qcow2".into(),
            data_disk: "/p/e-abc-data.qcow2".into(),
            seed_iso: "/p/e-abc-seed.iso".into(),
            network: "metrom".into(),
            mac: mac_for("e-abc"),
            console_log: "/k/console.log".into(),
        };
        let xml = domain(&d);
        assert!(xml.contains("Metrom &lt;dev&gt; &amp; co"));
        assert!(
            !xml.contains("host-passthrough"),
            "TCG gets the default CPU"
        );
        assert_eq!(
            parse_metadata(&xml),
            Some(Metadata {
                env_id: "e-abc".into(),
                build: 3,
                image_digest: "sha256:00".into()
            })
        );
        let libvirt_form = "<metrom:environment xmlns:metrom=\"x\">\n  <metrom:id>e-q</metrom:id>\n  <metrom:build>7</metrom:build>\n</metrom:environment>";
        assert_eq!(parse_metadata(libvirt_form).unwrap().build, 7);
    }

    #[test]
    fn network_dhcp_range_sits_inside_the_subnet() {
        let xml = network("metrom", "metrom0", "192.168.213.1".parse().unwrap(), 24);
        assert!(
            xml.contains("start='192.168.213.10'") && xml.contains("end='192.168.213.254'"),
            "{xml}"
        );
    }

    #[test]
    fn macs_are_stable_and_local() {
        assert_eq!(mac_for("e-1"), mac_for("e-1"));
        assert_ne!(mac_for("e-1"), mac_for("e-2"));
        assert!(mac_for("e-1").starts_with("52:54:00:"));
    }
}
