//! `sluice rollouts lint` (being built).

pub fn run(files: &[std::path::PathBuf]) -> anyhow::Result<()> {
    anyhow::bail!("sluice rollouts lint {files:?}: not built yet")
}
