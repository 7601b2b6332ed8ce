//! The checked-in Experiment CRD (`deploy/crd/experiments.sluice.dev.yaml`) is the one the types
//! generate. `SLUICE_UPDATE_CRDS=1` rewrites the file.

#[test]
fn the_checked_in_experiment_crd_is_current() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/crd/experiments.sluice.dev.yaml"
    );
    let generated = sluice_api::experiment_object::experiment_crd_yaml().expect("CRD as YAML");
    if std::env::var_os("SLUICE_UPDATE_CRDS").is_some() {
        std::fs::write(path, &generated).expect("writing the CRD");
    }
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "{path} is stale: run SLUICE_UPDATE_CRDS=1 cargo test -p sluice-api --test experiment_crd"
    );
    assert!(generated.contains("kind: Experiment\n"));
}
