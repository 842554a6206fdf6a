//! The contract crate stays free of I/O: no socket2, no tokio networking.

#[test]
fn manifest_has_no_networking_dependencies() {
    let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    let deps = manifest.split("[dependencies]").nth(1).unwrap().split("\n[").next().unwrap();
    assert!(!deps.contains("socket2"), "conflux-tcp must not depend on socket2");
    assert!(!deps.contains("smoltcp"), "conflux-tcp must not depend on a stack");
    let tokio = deps.lines().find(|l| l.starts_with("tokio")).unwrap();
    for feature in ["\"net\"", "\"full\"", "\"process\"", "\"fs\""] {
        assert!(!tokio.contains(feature), "conflux-tcp must not use tokio's {feature}");
    }
}
