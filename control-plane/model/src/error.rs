//! The model's one error type, and the field paths it names.

use std::fmt;

/// One step of a [`FieldPath`]: a field name, a list index or a map key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    Field(&'static str),
    Index(usize),
    Key(String),
}

/// Where in a [`crate::RolloutState`] a problem is, in the model's camelCase field names, e.g.
/// `headerRoutes[0].matches[1].regex` or `versions["abc"].endpoints[2]`.
///
/// Structured (not a string) so that source adapters can map it onto the path of the document the
/// state was derived from (sluice-api maps it to `spec.strategy.canary.steps[..]...`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldPath(pub Vec<Segment>);

impl FieldPath {
    pub fn field(name: &'static str) -> Self {
        FieldPath(vec![Segment::Field(name)])
    }

    /// This path followed by a field name.
    pub fn then(&self, name: &'static str) -> Self {
        self.with(Segment::Field(name))
    }

    /// This path followed by a list index.
    pub fn at(&self, index: usize) -> Self {
        self.with(Segment::Index(index))
    }

    /// This path followed by a map key.
    pub fn key(&self, key: &str) -> Self {
        self.with(Segment::Key(key.to_owned()))
    }

    fn with(&self, segment: Segment) -> Self {
        let mut segments = self.0.clone();
        segments.push(segment);
        FieldPath(segments)
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Field(name) if i == 0 => write!(f, "{name}")?,
                Segment::Field(name) => write!(f, ".{name}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
                Segment::Key(key) => write!(f, "[{key:?}]")?,
            }
        }
        Ok(())
    }
}

/// Why a traffic state or an operation on it is invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// One field of one rollout breaks a rule.
    #[error("rollout {rollout:?}: {field}: {problem}")]
    InvalidField {
        rollout: String,
        field: FieldPath,
        problem: String,
    },
    /// A host may belong to one rollout only: the filter looks rollouts up by host.
    #[error("host {host:?} is claimed by rollout {first:?} and by rollout {second:?}")]
    HostInTwoRollouts {
        host: String,
        first: String,
        second: String,
    },
    /// The map key a rollout is stored under differs from its name.
    #[error("rollout {name:?} is stored under the key {key:?}; the key must be the rollout's name")]
    KeyMismatch { key: String, name: String },
    /// An admin override that makes no sense for the rollout's current state.
    #[error("rollout {rollout:?}: cannot {operation}: {problem}")]
    Override {
        rollout: String,
        operation: String,
        problem: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_display_like_the_documents_they_come_from() {
        let path = FieldPath::field("headerRoutes")
            .at(0)
            .then("matches")
            .at(1)
            .then("regex");
        assert_eq!(path.to_string(), "headerRoutes[0].matches[1].regex");
        let path = FieldPath::field("versions")
            .key("abc")
            .then("endpoints")
            .at(2);
        assert_eq!(path.to_string(), r#"versions["abc"].endpoints[2]"#);
    }
}
