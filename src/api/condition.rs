//! A condition with the shape of `metav1.Condition`, so that kstatus, `kubectl wait`,
//! Argo CD and Flux read it without special knowledge.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// True, False or Unknown.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// One aspect of the object's current state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Type of condition in CamelCase, e.g. Ready, Connected, Authenticated.
    #[serde(rename = "type")]
    pub type_: String,
    /// Status of the condition: True, False or Unknown.
    pub status: ConditionStatus,
    /// When the status last changed (RFC 3339). Unchanged when only the message changes.
    pub last_transition_time: String,
    /// Machine-readable CamelCase reason for the status, stable across releases.
    pub reason: String,
    /// Human-readable details; for SMTP failures, the server's reply code and text.
    #[serde(default)]
    pub message: String,
    /// The .metadata.generation this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
