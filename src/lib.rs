//! smtp-relay-operator: declare SMTP relays and sender identities as Kubernetes
//! resources, verify them for real, and report the truth in status.

pub mod api;
pub mod confirm;
pub mod controller;
pub mod deliverability;
pub mod duration;
pub mod http;
pub mod k8s;
pub mod leader;
pub mod mailbox;
pub mod manifest;
pub mod metrics;
pub mod plugin;
pub mod relay;
pub mod report;
pub mod runtime;
pub mod schema;
pub mod smtp;
pub mod table;
pub mod verify;
