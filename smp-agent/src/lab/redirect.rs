//! Transparent redirection as Istio's init rules do it, with nftables `redirect` in each pod's
//! namespace. The rules live only inside the lab's namespaces: deleting a namespace deletes
//! them, and the host's ruleset is never touched.

use std::net::IpAddr;

/// nft table name used in both namespaces.
pub const TABLE: &str = "smp_lab";

/// The nft family (and address match) of a lab's pod network.
fn family(ipv6: bool) -> (&'static str, &'static str) {
    if ipv6 {
        ("ip6", "ip6 daddr")
    } else {
        ("ip", "ip daddr")
    }
}

/// Client pod: locally generated TCP to `server:app_port` goes to the outbound sidecar on
/// `outbound_port`, except traffic of the sidecar itself (`meta skuid sidecar_uid`, Istio's
/// 1337 rule) and, with `mark`, of sockets carrying that mark (a node proxy's, which runs
/// outside the pod). The baseline port is not matched, so the baseline path bypasses the
/// sidecar.
pub fn client_rules(
    server: IpAddr,
    app_port: u16,
    outbound_port: u16,
    sidecar_uid: u32,
    mark: Option<u32>,
) -> String {
    let (fam, daddr) = family(server.is_ipv6());
    let mark = mark.map_or(String::new(), |m| format!("\t\tmeta mark {m:#x} return\n"));
    format!(
        "table {fam} {TABLE} {{\n\
         \tchain output {{\n\
         \t\ttype nat hook output priority -100; policy accept;\n\
         \t\tmeta skuid {sidecar_uid} return\n\
         {mark}\
         \t\t{daddr} {server} tcp dport {app_port} redirect to :{outbound_port}\n\
         \t}}\n\
         }}\n"
    )
}

/// Server pod: TCP arriving on the pod interface for `app_port` goes to the inbound sidecar on
/// `inbound_port`. The inbound sidecar reaches the app over loopback, which the rule does not
/// match; the baseline port is not matched either.
pub fn server_rules(ifname: &str, app_port: u16, inbound_port: u16, ipv6: bool) -> String {
    let (fam, _) = family(ipv6);
    format!(
        "table {fam} {TABLE} {{\n\
         \tchain prerouting {{\n\
         \t\ttype nat hook prerouting priority -100; policy accept;\n\
         \t\tiifname \"{ifname}\" tcp dport {app_port} redirect to :{inbound_port}\n\
         \t}}\n\
         }}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_mention_only_the_meshed_port() {
        let c = client_rules("10.77.0.2".parse().unwrap(), 8080, 15001, 1337, None);
        assert!(c.starts_with("table ip smp_lab {"));
        assert!(c.contains("meta skuid 1337 return"));
        assert!(!c.contains("meta mark"));
        let m = client_rules("10.77.0.2".parse().unwrap(), 8080, 15001, 1337, Some(0x539));
        assert!(m.contains("\t\tmeta mark 0x539 return\n\t\tip daddr"));
        assert!(c.contains("ip daddr 10.77.0.2 tcp dport 8080 redirect to :15001"));
        let s = server_rules("lab-s", 8080, 15006, false);
        assert!(s.starts_with("table ip smp_lab {"));
        assert!(s.contains("iifname \"lab-s\" tcp dport 8080 redirect to :15006"));
        assert!(!s.contains("8081"));
    }

    #[test]
    fn an_ipv6_lab_gets_ip6_tables() {
        let c = client_rules("fd77::2".parse().unwrap(), 8080, 15001, 1337, None);
        assert!(c.starts_with("table ip6 smp_lab {"));
        assert!(c.contains("ip6 daddr fd77::2 tcp dport 8080 redirect to :15001"));
        let s = server_rules("lab-s", 8080, 15006, true);
        assert!(s.starts_with("table ip6 smp_lab {"));
        assert!(s.contains("iifname \"lab-s\" tcp dport 8080 redirect to :15006"));
    }
}
