//! The verbs against a standalone control plane's admin API (being built).

pub async fn run(args: super::RolloutsArgs) -> anyhow::Result<()> {
    anyhow::bail!(
        "sluice rollouts {:?}: the standalone backend is not built yet",
        args.verb
    )
}
