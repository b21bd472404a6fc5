//! Host values that pass a naive host pattern yet name no host (issue #15): the CRD
//! refuses them, `verify` refuses them offline, and a spec that bypassed the CRD is
//! InvalidSpec, never a connection. Shared by the property, hostile-input and
//! agreement tests.

pub const MALFORMED_HOSTS: &[&str] = &[
    "[.]",
    ":.",
    "[:]",
    "::1::",
    "1:2:3:4:5:6:7:8:9",
    "1.2.3.4.5",
    "999.999.999.999",
    "0",
];
