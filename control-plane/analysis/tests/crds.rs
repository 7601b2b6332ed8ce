//! The checked-in analysis CRDs (`deploy/crd/analysis.sluice.dev.yaml`) are the ones the types
//! generate. `SLUICE_UPDATE_CRDS=1` rewrites the file.

#[test]
fn the_checked_in_analysis_crds_are_current() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/crd/analysis.sluice.dev.yaml"
    );
    let generated = sluice_analysis::crds_yaml().expect("CRDs as YAML");
    if std::env::var_os("SLUICE_UPDATE_CRDS").is_some() {
        std::fs::write(path, &generated).expect("writing the CRDs");
    }
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "{path} is stale: run SLUICE_UPDATE_CRDS=1 cargo test -p sluice-analysis --test crds"
    );
    for kind in ["AnalysisTemplate", "ClusterAnalysisTemplate", "AnalysisRun"] {
        assert!(generated.contains(&format!("kind: {kind}\n")), "{kind}");
    }
}
