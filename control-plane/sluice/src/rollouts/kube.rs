//! The verbs against the Kubernetes API (being built).

pub async fn run(args: super::RolloutsArgs) -> anyhow::Result<()> {
    anyhow::bail!(
        "sluice rollouts {:?}: the Kubernetes backend is not built yet",
        args.verb
    )
}
