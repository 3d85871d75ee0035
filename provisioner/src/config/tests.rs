//! Config loading: defaults, file, env overrides.

use super::*;

#[test]
fn empty_file_is_the_defaults() {
    assert_eq!(
        Config::from_yaml(Path::new("c.yaml"), "{}", &Config::default()).unwrap(),
        Config::default()
    );
    let unpriv = Config::unprivileged(None);
    let c = Config::from_yaml(Path::new("c.yaml"), "api_listen: 127.0.0.1:1\n", &unpriv).unwrap();
    assert_eq!(c.http_listen, unpriv.http_listen, "absent fields keep the base");
    assert_eq!(c.api_listen.port(), 1);
}

#[test]
fn unknown_field_rejected_with_file_and_name() {
    let err = Config::from_yaml(
        Path::new("c.yaml"),
        "htp_listen: 0.0.0.0:80\n",
        &Config::default(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("c.yaml") && msg.contains("htp_listen"), "{msg}");
}

#[test]
fn housekeeping_defaults_and_overrides() {
    let p = Path::new("c.yaml");
    let d = Config::default().housekeeping;
    assert_eq!((d.discovered_max, d.callback_token_ttl_hours), (5_000, 24));
    let cfg = Config::from_yaml(
        p,
        "housekeeping: { discovered_max: 50, callback_token_ttl_hours: 2 }\n",
        &Config::default(),
    )
    .unwrap();
    assert_eq!(cfg.housekeeping.discovered_max, 50);
    assert_eq!(cfg.housekeeping.callback_token_ttl().as_secs(), 7200);
    assert_eq!(
        cfg.housekeeping.every_minutes, d.every_minutes,
        "unset fields keep defaults"
    );
    assert!(Config::from_yaml(p, "housekeeping: { nonsense: 1 }\n", &Config::default()).is_err());
}

#[test]
fn config_token_ttl_defaults_parses_and_refuses_zero() {
    let p = Path::new("c.yaml");
    assert_eq!(Config::default().config_token_ttl().as_secs(), 30 * 60);
    let cfg = Config::from_yaml(p, "config_token_ttl_minutes: 5\n", &Config::default()).unwrap();
    assert_eq!(cfg.config_token_ttl().as_secs(), 300);
    let err = Config::from_yaml(p, "config_token_ttl_minutes: 0\n", &Config::default()).unwrap_err();
    assert!(err.to_string().contains("nonzero"), "{err}");
    let mut cfg = cfg;
    let env = [(
        "PROVISIONER_CONFIG_TOKEN_TTL_MINUTES".to_string(),
        "0".to_string(),
    )]
    .into();
    assert!(cfg.apply_env(&env).is_err(), "0 refused from the environment too");
    let env = [(
        "PROVISIONER_CONFIG_TOKEN_TTL_MINUTES".to_string(),
        "90".to_string(),
    )]
    .into();
    cfg.apply_env(&env).unwrap();
    assert_eq!(cfg.config_token_ttl().as_secs(), 90 * 60);
}

#[test]
fn file_values_and_env_overrides() {
    let cfg = Config::from_yaml(
        Path::new("c.yaml"),
        "http_listen: 0.0.0.0:8081\nunknown_policy: profile:lab\ntftp:\n  window_size_limit: 8\n",
        &Config::default(),
    )
    .unwrap();
    assert_eq!(cfg.http_listen.port(), 8081);
    assert_eq!(cfg.unknown_policy, UnknownPolicy::Profile("lab".into()));
    assert_eq!(cfg.tftp.window_size_limit, 8);
    assert_eq!(cfg.tftp.block_size_limit, 1468, "nested defaults kept");
    let mut cfg = cfg;
    let env: BTreeMap<_, _> = [
        (
            "PROVISIONER_HTTP_LISTEN".to_string(),
            "127.0.0.1:9999".to_string(),
        ),
        ("PROVISIONER_SERVER_IP".to_string(), "10.1.2.3".to_string()),
        ("UNRELATED".to_string(), "x".to_string()),
    ]
    .into();
    cfg.apply_env(&env).unwrap();
    assert_eq!(cfg.http_listen.to_string(), "127.0.0.1:9999");
    assert_eq!(cfg.server_ip.unwrap().to_string(), "10.1.2.3");
    let bad: BTreeMap<_, _> = [("PROVISIONER_TFTP_LISTEN".to_string(), "nope".to_string())].into();
    assert!(
        cfg.apply_env(&bad)
            .unwrap_err()
            .to_string()
            .contains("PROVISIONER_TFTP_LISTEN")
    );
}

#[test]
fn dhcp_section_and_mode_override() {
    let cfg = Config::from_yaml(
        Path::new("c.yaml"),
        "dhcp:\n  mode: full\n  subnet: 10.9.0.0/24\n  reservations:\n    - { mac: 52-54-00-00-00-01, ip: 10.9.0.5 }\n",
        &Config::default(),
    )
    .unwrap();
    assert_eq!(cfg.dhcp.mode, provisioner_core::dhcp::Personality::Full);
    assert_eq!(cfg.dhcp.port, 67, "nested defaults kept");
    assert_eq!(cfg.dhcp.full_config().unwrap().unwrap().reservations.len(), 1);
    let err =
        Config::from_yaml(Path::new("c.yaml"), "dhcp:\n  mdoe: full\n", &Config::default()).unwrap_err();
    assert!(err.to_string().contains("mdoe"), "{err}");
    let mut cfg = cfg;
    let env: BTreeMap<_, _> = [("PROVISIONER_DHCP_MODE".to_string(), "proxy".to_string())].into();
    cfg.apply_env(&env).unwrap();
    assert_eq!(cfg.dhcp.mode, provisioner_core::dhcp::Personality::Proxy);
    let bad: BTreeMap<_, _> = [("PROVISIONER_DHCP_MODE".to_string(), "on".to_string())].into();
    assert!(
        cfg.apply_env(&bad)
            .unwrap_err()
            .to_string()
            .contains("off, proxy or full")
    );
}

#[test]
fn unprivileged_uses_high_ports() {
    let c = Config::unprivileged(Some(Path::new("/home/u")));
    assert!(c.http_listen.port() > 1024 && c.tftp_listen.port() > 1024);
    assert_eq!(c.state_dir, PathBuf::from("/home/u/.local/state/provisioner"));
}

#[test]
fn release_settings_default_on_and_parse() {
    use provisioner_core::release::admission::Admission;
    let d = Config::default();
    assert!(
        d.peer_binding.enabled && d.peer_binding.arp_probe,
        "binding is on by default"
    );
    assert_eq!(d.admission, Admission::Auto);
    assert_eq!(d.approval_window_minutes.get(), 60);
    let p = Path::new("c.yaml");
    let c = Config::from_yaml(
        p,
        "admission: approve\npeer_binding: { enabled: false }\napproval_window_minutes: 15\n",
        &d,
    )
    .unwrap();
    assert_eq!(c.admission, Admission::Approve);
    assert!(
        !c.peer_binding.enabled && c.peer_binding.arp_probe,
        "unset fields keep defaults"
    );
    assert_eq!(c.approval_window_minutes.get(), 15);
    let err = Config::from_yaml(p, "admission: maybe\n", &d)
        .unwrap_err()
        .to_string();
    assert!(err.contains("c.yaml") && err.contains("admission"), "{err}");
    let err = Config::from_yaml(p, "peer_binding: { enable: false }\n", &d)
        .unwrap_err()
        .to_string();
    assert!(err.contains("enable"), "{err}");
    let mut c = d.clone();
    c.apply_env(&[("PROVISIONER_ADMISSION".to_string(), "approve".to_string())].into())
        .unwrap();
    assert_eq!(c.admission, Admission::Approve);
    assert!(
        c.apply_env(&[("PROVISIONER_ADMISSION".to_string(), "x".to_string())].into())
            .is_err()
    );
}
